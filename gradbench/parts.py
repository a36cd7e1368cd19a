"""Finished chunks on disk: what makes a sweep resumable, shardable across jobs and hosts, and mergeable.

A part is the per-layer table of one chunk, written atomically (temporary file, then rename) as parquet
with the sweep's sha256 in its metadata. Its name is a hash of the chunk's config_ids, so a part means
the same thing whichever process, job or device layout wrote it. A part that cannot be read, belongs to
another sweep or lacks rows is treated as missing and computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradbench.errors import SpecError

SPEC_KEY = b"gradbench_spec_sha256"
MARKER = "sweep.json"


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
        marker = self.directory / MARKER
        if marker.is_file():
            found = json.loads(marker.read_text()).get("spec_sha256")
            if found != spec_sha256 and not fresh:
                raise SpecError(
                    str(self.directory),
                    f"<parts of another sweep, sha256 {str(found)[:12]}...>",
                    f"parts of this sweep (sha256 {spec_sha256[:12]}...): the sweep file changed since "
                    "these chunks were computed; pass --fresh to discard them, or restore the sweep file",
                )
            if fresh:
                for stale in self.directory.glob("*.parquet"):
                    stale.unlink()
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
        return sorted(p.stem for p in self.directory.glob("*.parquet"))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
