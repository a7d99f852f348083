"""A stage process SIGKILLed in the middle of writing its outputs (as an OOM kill or a lost node
does): no reader ever accepts the half-written group, and the retried stage starts over cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from adaptinf import layout
from adaptinf.store import MARKER, LocalStore, StoreError

RUN, STEP = "crashy", 0

# One attempt of a stage in its own process, through the real stages.runtime.run_idempotent.
# `crash` kills the process with SIGKILL while it writes its second file (after the temp file
# holds data, before the atomic rename).
ATTEMPT = textwrap.dedent("""
    import os, signal, sys
    from adaptinf.stages.registry import build_context
    from adaptinf.stages.runtime import run_idempotent
    from adaptinf.store import LocalStore

    root, mode = sys.argv[1], sys.argv[2]
    ctx = build_context("crashy", 0, LocalStore(root), {"model": {"base": "m"}, "trainBudget": 1,
                        "storage": {"uri": root}}, "d", {"run": "crashy", "source": "d.jsonl"})

    def body(ctx, prefix):
        ctx.store.write_bytes(f"{prefix}/first.bin", b"1" * 1000)
        if mode == "crash":
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
            ctx.store.write_bytes(f"{prefix}/second.bin", b"2" * 100_000)
        ctx.store.write_bytes(f"{prefix}/second.bin", b"2" * 10)
        return {"samples": 10}

    print(run_idempotent("cluster-select", ctx, body))
""")


def attempt(root, mode: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", ATTEMPT, str(root), mode], capture_output=True, text=True,
                          timeout=120, env=env)


def test_killed_mid_write_is_never_read_and_the_retry_starts_over(tmp_path):
    store = LocalStore(tmp_path)
    prefix = layout.stage_prefix(RUN, STEP, "cluster-select")

    crashed = attempt(tmp_path, "crash")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    # What the killed attempt left: one finished file and one temp file, but no marker.
    leftovers = sorted(p.name for p in store.local_path(prefix).iterdir())
    assert "first.bin" in leftovers and any(n.startswith(".second.bin.") and n.endswith(".tmp") for n in leftovers)
    assert not store.is_committed(prefix)
    with pytest.raises(StoreError, match="not committed"):
        store.read_marker(prefix)  # the next stage refuses it: it never reads a half-written group
    assert store.list(prefix) == [f"{prefix}/first.bin"]  # temp files are invisible to readers

    retried = attempt(tmp_path, "ok")
    assert retried.returncode == 0, retried.stderr
    marker = store.read_marker(prefix)
    assert marker["files"] == {"first.bin": 1000, "second.bin": 10} and marker["summary"] == {"samples": 10}
    assert sorted(p.name for p in store.local_path(prefix).iterdir()) == [MARKER, "first.bin", "second.bin"]
    assert store.read_bytes(f"{prefix}/second.bin") == b"2" * 10

    # A third attempt (the Job retried once too often) finds the stage done and changes nothing.
    before = store.read_bytes(f"{prefix}/{MARKER}")
    again = attempt(tmp_path, "crash")
    assert again.returncode == 0 and store.read_bytes(f"{prefix}/{MARKER}") == before
