"""MLflow stays truthful through crashes: a stage that raises marks its step's child run FAILED,
one stopped by SIGTERM marks it KILLED, a retry resumes the same child (one per step), and a
child left RUNNING by a SIGKILLed stage is marked FAILED by the next step's first stage.

Each attempt is a real `adaptinf stage …` process (the CLI with its guard) whose stage body is
replaced by a stub that opens the step's child run and then fails in the chosen way."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

RUN = "tracked"

ATTEMPT = textwrap.dedent("""
    import os, signal, sys
    import adaptinf.stages.registry
    from adaptinf.cli import main

    stage, step, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    def body(ctx):
        child = ctx.tracker.step_id(ctx.step, ctx.dataset)
        ctx.tracker.log_metrics(child, {"attempt_" + stage: 1.0}, ctx.step)
        if mode == "raise":
            raise RuntimeError("injected crash")
        if mode in ("term", "kill"):
            os.kill(os.getpid(), signal.SIGTERM if mode == "term" else signal.SIGKILL)
        if mode == "finish":
            ctx.tracker.finish(child)
        return {}

    adaptinf.stages.registry.stage_function = lambda name: body
    sys.exit(main(["stage", stage, "--run", "tracked", "--step", step, "--no-progress"]))
""")


@pytest.fixture
def attempt(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "ADAPTINF_STORE": str(tmp_path / "store"), "ADAPTINF_DATASET": "d",
           "ADAPTINF_RUN_SPEC": json.dumps({"model": {"base": "m"}, "trainBudget": 1,
                                            "storage": {"uri": str(tmp_path / "store")}}),
           "ADAPTINF_DATASET_SPEC": json.dumps({"run": RUN, "source": "d.jsonl"})}

    def run(stage: str, step: int, mode: str) -> int:
        proc = subprocess.run([sys.executable, "-c", ATTEMPT, stage, str(step), mode], env=env, capture_output=True,
                              text=True, timeout=300)
        if mode == "ok" and proc.returncode != 0:
            raise AssertionError(proc.stderr[-3000:])
        return proc.returncode
    return run


def children(tmp_path) -> dict[str, list[str]]:
    """{step: [status of each child run]} of the run."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("adapt-inf")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`adaptinf.run` = '{RUN}'")
    out: dict[str, list[str]] = {}
    for r in runs:
        if r.data.tags["adaptinf.step"] != "parent":
            out.setdefault(r.data.tags["adaptinf.step"], []).append(r.info.status)
    return out


def test_crashed_stages_mark_their_mlflow_run_and_retries_resume_it(attempt, tmp_path):
    assert attempt("cluster-select", 0, "raise") == 1
    assert children(tmp_path) == {"0": ["FAILED"]}

    assert attempt("cluster-select", 0, "term") == 128 + signal.SIGTERM  # the retry, stopped by Kubernetes
    assert children(tmp_path) == {"0": ["KILLED"]}

    assert attempt("cluster-select", 0, "ok") == 0  # the next retry resumes the same run
    assert children(tmp_path) == {"0": ["RUNNING"]}
    assert attempt("train", 0, "kill") == -signal.SIGKILL  # OOM-like: nothing can be marked
    assert children(tmp_path) == {"0": ["RUNNING"]}
    assert attempt("train", 0, "ok") == 0 and attempt("prune", 0, "finish") == 0
    assert children(tmp_path) == {"0": ["FINISHED"]}  # one child for step 0 through five attempts

    # A step whose stage was SIGKILLed and never retried (its dataset was deleted, say): the next
    # step's first tracked stage marks the stale run FAILED.
    assert attempt("cluster-select", 1, "kill") == -signal.SIGKILL
    assert children(tmp_path) == {"0": ["FINISHED"], "1": ["RUNNING"]}
    assert attempt("cluster-select", 2, "ok") == 0
    assert children(tmp_path) == {"0": ["FINISHED"], "1": ["FAILED"], "2": ["RUNNING"]}
