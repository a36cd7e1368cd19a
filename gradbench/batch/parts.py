"""Finished chunks on disk: what makes a sweep resumable, shardable across jobs and hosts, and mergeable.

A part is the per-layer table of one chunk, written atomically (temporary file, then rename) as parquet
with the sweep's sha256 in its metadata. Its name is a hash of the chunk's config_ids, so a part means
the same thing whichever process, job or device layout wrote it. A part that cannot be read, belongs to
another sweep or lacks rows is treated as missing and computed again.

A parts directory is gradbench's when it holds the marker `sweep.json`; gradbench writes parts only
into such a directory (or an empty or new one) and removes nothing there but its own parts, marker and
temporary files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradbench.errors import SpecError

SHARD_FILE = "shard.json"  # a shard's facts, beside its parts, for merge
SPEC_KEY = b"gradbench_spec_sha256"
MARKER = "sweep.json"
PART_NAME = re.compile(r".+-[0-9a-f]{16}\.parquet")  # chunk_key + ".parquet"
TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.\d+\.tmp")  # _atomic_write_bytes's, by process id


def check_directory(directory: Path, where: str | None = None) -> None:
    """Refuses, before any computation, a directory that exists, holds files and is not gradbench's.

    Args:
        directory: a parts directory (`<out>.parts/`, or the `--out` of `run --shard`).
        where: how the message names it (default: the path).
    """
    directory = Path(directory)
    if not directory.exists():
        return
    where = where or str(directory)
    if not directory.is_dir():
        raise SpecError(
            where, "<an existing file>", "a directory path (a file of that name exists)"
        )
    # Another process of a multi-host run may be writing the marker right now (a temporary file).
    entries = sorted(e.name for e in directory.iterdir() if not _is_temporary(e.name))
    if entries and _marked_sha256(directory) is None:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise SpecError(
            where,
            f"<a directory holding {shown}, without gradbench's {MARKER}: not written by gradbench>",
            "an absent or empty directory, or one gradbench wrote chunks into: choose another --out, "
            "or move those files away",
        )


def _marked_sha256(directory: Path) -> str | None:
    """The sweep sha256 that `directory`'s marker names, or None where it has no readable marker."""
    try:
        found = json.loads((directory / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return found.get("spec_sha256") if isinstance(found, dict) else None


def chunk_key(group_label: str, config_ids) -> str:
    digest = hashlib.sha256("\n".join(sorted(config_ids)).encode()).hexdigest()[:16]
    return f"{group_label}-{digest}"


class PartStore:
    """A directory of parts of one sweep (identified by the sha256 of its sweep file text)."""

    def __init__(
        self, directory: Path, spec_sha256: str, *, fresh: bool = False, create: bool = True
    ):
        self.directory = Path(directory)
        self.spec_sha256 = spec_sha256
        check_directory(self.directory)
        marker = self.directory / MARKER
        if marker.is_file():
            found = _marked_sha256(self.directory)
            if found != spec_sha256 and not fresh:
                raise SpecError(
                    str(self.directory),
                    f"<parts of another sweep, sha256 {str(found)[:12]}...>",
                    f"parts of this sweep (sha256 {spec_sha256[:12]}...): the sweep file changed since "
                    "these chunks were computed; pass --fresh to discard them, or restore the sweep file",
                )
            if fresh:
                _unlink(self.part_files())
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write_bytes(marker, json.dumps({"spec_sha256": spec_sha256}).encode())

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.parquet"

    def load(self, key: str, expected_rows: int) -> pd.DataFrame | None:
        """The stored part, or None when it is missing, unreadable, foreign or incomplete."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException):
            return None
        meta = table.schema.metadata or {}
        if meta.get(SPEC_KEY, b"").decode() != self.spec_sha256 or table.num_rows != expected_rows:
            return None
        return table.to_pandas()

    def save(self, key: str, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[SPEC_KEY] = self.spec_sha256.encode()
        sink = pa.BufferOutputStream()
        pq.write_table(table.replace_schema_metadata(meta), sink)
        _atomic_write_bytes(self.path(key), sink.getvalue().to_pybytes())

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.part_files())

    def part_files(self) -> list[Path]:
        """The parts in the directory: files named as gradbench names them, whichever sweep's."""
        return sorted(p for p in self.directory.glob("*.parquet") if PART_NAME.fullmatch(p.name))

    def remove(self) -> None:
        """Removes the parts, the marker and leftover temporary files, then the directory if that
        leaves it empty: whatever else is in it was not written by gradbench and stays."""
        ours = {MARKER, *(p.name for p in self.part_files())}
        temporaries = [p for p in self.directory.glob(".*.tmp") if _is_temporary(p.name)]
        _unlink([*(self.directory / name for name in ours), *temporaries])
        with contextlib.suppress(OSError):  # not empty: someone else's files stay with it
            self.directory.rmdir()


def _is_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of `_atomic_write_bytes` (of a part or the marker)."""
    found = TEMPORARY_NAME.fullmatch(name)
    return bool(found) and (found["name"] == MARKER or bool(PART_NAME.fullmatch(found["name"])))


def _unlink(paths) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:  # an interrupt included: leave no half-written file behind
        temporary.unlink(missing_ok=True)
        raise


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run; its finished chunks are saved for the same command to reuse.

    Attributes:
        directory: where the chunks are (the parts directory, or the shard's `--out`).
        saved: how many of the run's `total` chunks are there.
    """

    def __init__(self, directory: Path, saved: int, total: int):
        super().__init__(f"{saved} of {total} chunks are saved in {directory}")
        self.directory, self.saved, self.total = directory, saved, total


@contextlib.contextmanager
def interruptible(store: PartStore, keys: list[str]):
    """Turns a KeyboardInterrupt into `Interrupted`, counting the parts of `keys` that are saved."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:
        saved = sum(store.path(key).is_file() for key in keys)
        raise Interrupted(store.directory.resolve(), saved, len(keys)) from exc


def wait_for_parts(
    store: PartStore, keys: list[str], rows: list[int], wait_seconds: float
) -> list[pd.DataFrame]:
    """Every part of `keys` (with `rows` rows each), waiting up to `wait_seconds` for the other
    processes of a multi-process run to write theirs."""
    deadline = time.monotonic() + wait_seconds
    tables: list[pd.DataFrame | None] = [None] * len(keys)
    while True:
        for i, (key, n_rows) in enumerate(zip(keys, rows, strict=True)):
            if tables[i] is None:
                tables[i] = store.load(key, n_rows)
        missing = sum(t is None for t in tables)
        if not missing:
            return tables
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{missing} chunks never appeared in {store.directory} (a process died?)"
            )
        time.sleep(0.5)
