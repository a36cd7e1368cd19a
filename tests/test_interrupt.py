"""Ctrl-C: exit 130 with what is saved and the command that resumes; the resumed run reuses the saved
chunks, says so, and ends with the tables of an uninterrupted run."""

import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd

from gradbench import cli, results
from gradbench.batch import progress

SWEEP = """
name = "interrupted"
[model]
width = 8
batch = 4
[axes]
activation = ["tanh", "relu"]
sigma_w2 = [0.5, 2.0]
depth = [3]
replicate = { count = 2 }
[run]
chunk_size = 2
"""
N_CHUNKS = 4  # two compile groups (one per activation) of two chunks each


def gradbench(*args):
    """A real `gradbench` process: SIGINT must reach it as Ctrl-C does, whatever the test runner
    ignores, and its second compile group must take real compile time (no persistent cache)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gradbench", *map(str, args)],
        env={**os.environ, "GRADBENCH_CACHE_DIR": "off"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_says_what_is_saved_and_the_same_command_resumes(tmp_path):
    sweep = tmp_path / "interrupted.toml"
    sweep.write_text(SWEEP)
    out, parts = tmp_path / "run", tmp_path / "run.parts"
    process = gradbench("run", sweep, "--out", out, "--no-report")
    deadline = time.monotonic() + 300
    # The first group's chunks land together; the second group then compiles for a while, and the
    # interrupt arrives during that.
    while not list(parts.glob("*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    found = re.search(rf"interrupted: (\d+) of {N_CHUNKS} chunks are saved in (\S+)\n", err)
    assert found, err
    saved = int(found[1])
    assert found[2] == str(parts.resolve()) and 1 <= saved == len(list(parts.glob("*.parquet")))
    assert not out.exists()

    resume = re.search(r"resume with: (.+)\n", err)[1]
    words = shlex.split(resume)
    assert words == ["gradbench", "run", str(sweep), "--out", str(out), "--no-report"]
    resumed = gradbench(*words[1:])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"resuming: {saved} of {N_CHUNKS} chunks already done in {parts.resolve()}" in err
    groups = results.load(out).manifest["groups"]
    assert sum(g["chunks_resumed"] for g in groups) == saved
    assert sum(g["chunks"] for g in groups) == N_CHUNKS
    assert not parts.exists()

    whole = tmp_path / "whole"
    assert cli.main(["run", str(sweep), "--out", str(whole), "--quiet", "--no-report"]) == 0
    after, reference = results.load(out), results.load(whole)
    pd.testing.assert_frame_equal(after.layers, reference.layers)
    pd.testing.assert_frame_equal(after.summary, reference.summary)


def test_progress_rate_and_eta_count_only_computed_configs(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    stream = io.StringIO()
    bar = progress.Progress(1000, stream=stream)
    clock[0] += 0.01
    bar.update(700, "read back", computed=False)  # 700 configs of saved chunks, in 10 ms
    clock[0] += 10.0
    bar.update(20, "computed")  # 20 configs computed in 10 s: 2 configs/s, 280 left
    first, second = stream.getvalue().splitlines()
    assert first == "700/1000 configs  -- configs/s  ETA --:--  read back"
    assert second == "720/1000 configs  2.0 configs/s  ETA 2:20  computed"
