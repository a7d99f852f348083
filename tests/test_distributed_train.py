"""Train with several processes in one pod (one per GPU on a cluster; gloo on CPU here)."""
from __future__ import annotations

import json
import math
import sys
import time

import pytest

from adaptinf import layout
from adaptinf.cli import main
from adaptinf.store import LocalStore
from adaptinf.training import distributed

pytestmark = pytest.mark.slow


def test_group_reports_the_first_failure_and_stops_the_rest(monkeypatch):
    # Rank 1 exits with 2 (bad input) at once; rank 0 would sleep for a minute.
    script = "import os, sys, time; r = int(os.environ['RANK']); time.sleep(60) if r == 0 else sys.exit(2)"
    monkeypatch.setattr(distributed, "launch_argv", lambda args: [sys.executable, "-c", script])
    start = time.monotonic()
    assert distributed.run_group(2, []) == 2
    assert time.monotonic() - start < 30
    with pytest.raises(ValueError):
        distributed.run_group(1, [])


def test_a_rank_that_ignores_sigterm_is_killed_after_the_grace(monkeypatch):
    # Rank 0 ignores SIGTERM (as one stuck in a collective's teardown would not answer it).
    script = ("import os, signal, sys, time; r = int(os.environ['RANK']); "
              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60) if r == 0 else (time.sleep(1), sys.exit(2))")
    monkeypatch.setattr(distributed, "launch_argv", lambda args: [sys.executable, "-c", script])
    monkeypatch.setattr(distributed, "KILL_AFTER_S", 1.0)
    start = time.monotonic()
    assert distributed.run_group(2, []) == 2
    assert time.monotonic() - start < 30


def test_from_main_gives_every_process_the_main_ones_choice(monkeypatch):
    # Each rank proposes its own rank; both must get rank 0's (exit 3 otherwise).
    script = ("import os, sys; from adaptinf.training import distributed; "
              "got = distributed.from_main({'rank': int(os.environ['RANK'])}); sys.exit(0 if got == {'rank': 0} else 3)")
    monkeypatch.setattr(distributed, "launch_argv", lambda args: [sys.executable, "-c", script])
    assert distributed.run_group(2, []) == 0
    assert distributed.from_main([1, 2]) == [1, 2]   # outside a group: the object itself


def test_the_rendezvous_port_stays_taken_while_the_group_runs(monkeypatch):
    # The parent holds the store's port: no other program can take it before the ranks connect.
    script = ("import os, socket, sys; s = socket.socket(); "
              "sys.exit(3 if s.connect_ex(('127.0.0.1', int(os.environ['MASTER_PORT']))) else 0)")
    monkeypatch.setattr(distributed, "launch_argv", lambda args: [sys.executable, "-c", script])
    assert distributed.run_group(2, []) == 0


def test_two_process_train_stage_writes_once_and_eval_reads_it(demo_quick, tmp_path):
    files = ["-f", str(demo_quick / "lifelongrun.yaml"), "-f", str(sorted((demo_quick / "datasets").glob("00-*.yaml"))[0])]
    store_dir = tmp_path / "store"
    common = ["--run", "demo", "--step", "0", "--store", str(store_dir), *files]
    for stage in ("extract", "cluster-select"):
        assert main(["stage", stage, *common]) == 0
    # Step 0 with initialTuning=full: both processes tune the base, the main one stores it,
    # the other waits at the barrier, then both train the adapter on their share of batches.
    assert main(["stage", "train", *common, "--processes", "2"]) == 0
    store = LocalStore(store_dir)
    marker = store.read_marker(layout.stage_prefix("demo", 0, "train"))
    summary = marker["summary"]
    selected = len(store.read_json(f"{layout.stage_prefix('demo', 0, 'cluster-select')}/selection.json")["selected"])
    assert summary["samples"] == selected
    assert all(math.isfinite(v) for v in summary["loss"]) and summary["loss"][-1] < summary["loss"][0]
    assert store.is_committed("demo/base")
    adapter = [k for k in store.list(layout.stage_prefix("demo", 0, "train")) if "/adapter/" in k]
    assert any(k.endswith("adapter_model.safetensors") for k in adapter)
    # A second launch finds the committed stage and does nothing.
    assert main(["stage", "train", *common, "--processes", "2"]) == 0
    assert store.read_marker(layout.stage_prefix("demo", 0, "train")) == marker
    assert main(["stage", "eval", *common]) == 0
    metrics = store.read_json(f"{layout.stage_prefix('demo', 0, 'eval')}/metrics.json")
    assert json.dumps(metrics)  # eval loaded the base and adapter the two processes wrote
