"""A stage stopped by SIGTERM exits 143 even without MLflow: as a container's PID 1 a process with
no SIGTERM handler would ignore the signal and be SIGKILLed (137) after the grace period."""
from __future__ import annotations

import subprocess
import sys

SNIPPET = """
import os, signal, sys, time
from types import SimpleNamespace
from adaptinf.stages.tracking_guard import tracked_attempt
ctx = SimpleNamespace(tracker=SimpleNamespace(enabled=False), run="r", step=0)
with tracked_attempt(ctx, "train"):
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
sys.exit(0)
"""


def test_sigterm_without_tracking_exits_143() -> None:
    proc = subprocess.run([sys.executable, "-c", SNIPPET], check=False, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 143, (proc.returncode, proc.stderr[-2000:])
