"""Faults injected end to end (emulated API server, `kopf run` of the operator, the kubelet running
tests/k8s/fake_stage.py as the stage command, real kubectl): invalid specs, stage processes
SIGKILLed mid-write or failing past their Job's backoffLimit, and the operator SIGKILLed at
several points of a two-step run."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from adaptinf.layout import STAGES, pool_key, stage_prefix
from adaptinf.operator.jobs import job_name
from adaptinf.store import LocalStore
from harness import (FAKE_STAGE, Cluster, calls, condition, dataset_manifest, events, has_job, hold, job_done,
                     job_names, run_manifest, status, wait_for, write_records)

pytestmark = pytest.mark.slow


def crash(store: Path, stage: str, step: int, times: int) -> None:
    """The next `times` attempts of the stage die by SIGKILL halfway through writing."""
    path = store / "_crash" / f"{stage}-{step}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(times))


def pods_of(kubelet, job: str) -> int:
    return sum(1 for j, _, _ in kubelet.started_pods if j == job)


def test_invalid_specs_say_what_to_fix(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                       tmp_path: Path) -> None:
    ns = namespace
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    data = write_records(tmp_path / "d.jsonl", 4)

    # What the CRD schema can express is refused by the API server itself (kubectl shows why).
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False,
                              input=yaml.safe_dump(run_manifest("zero", tmp_path / "zero", trainBudget=0)))
    assert refused.returncode != 0 and "spec.trainBudget" in refused.stderr
    assert cluster.api.find("lifelongruns", ns, "zero") is None

    # A strategy name is an enum of the registry's names in the CRD: refused the same way.
    typo = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False,
                           input=yaml.safe_dump(run_manifest("typo", tmp_path / "typo", strategy="adapt-infinity")))
    assert typo.returncode != 0 and "spec.strategy" in typo.stderr and "'adapt-infinity'" in typo.stderr
    assert "lite-adapt-inf" in typo.stderr   # the message lists the valid names
    assert cluster.api.find("lifelongruns", ns, "typo") is None

    # What it cannot (T > D is a CEL rule, which the emulator does not run): the operator sets
    # Failed=True (InvalidSpec) and posts a Warning saying what to fix.
    cluster.apply(run_manifest("budget", tmp_path / "budget", trainBudget=50, poolBudget=10),
                  dataset_manifest("t0", "budget", data), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Failed", "llr/budget", "-n", ns, "--timeout=60s")
    budget = condition(cluster, ns, "lifelongruns", "budget", "Failed")
    assert budget["reason"] == "InvalidSpec"
    assert "trainBudget (T=50) must not exceed poolBudget (D=10)" in budget["message"]
    warnings = {(e["involvedObject"]["name"], e["reason"]) for e in events(cluster, ns) if e["type"] == "Warning"}
    assert ("budget", "InvalidSpec") in warnings
    assert cluster.api.list("jobs", ns) == []  # nothing started on an invalid spec
    rows = {r.split()[0]: r.split() for r in cluster.kubectl("get", "llr", "-n", ns, "--no-headers").stdout.splitlines()}
    assert "Failed" in rows["budget"]

    # Fixing the spec is all it takes: the run starts and finishes.
    cluster.kubectl("patch", "llr", "budget", "-n", ns, "--type=merge", "-p", '{"spec": {"poolBudget": 60}}')
    cluster.kubectl("wait", "--for=condition=UpToDate", "llr/budget", "-n", ns, "--timeout=50s")
    assert condition(cluster, ns, "lifelongruns", "budget", "Failed")["status"] == "False"


def test_stage_crashes_are_retried_then_fail_visibly_and_recover(cluster: Cluster, namespace: str, start_operator,
                                                                 start_kubelet, tmp_path: Path) -> None:
    ns, store, run = namespace, tmp_path / "store", "crashy"
    store.mkdir()
    crash(store, "train", 0, 2)  # two OOM-like kills mid-write, then it works (backoffLimit 2)
    crash(store, "eval", 1, 9)   # killed every time: past the backoffLimit
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    start_operator()
    cluster.apply(run_manifest(run, store),
                  dataset_manifest("d0", run, write_records(tmp_path / "d0.jsonl", 6), order=0),
                  dataset_manifest("d1", run, write_records(tmp_path / "d1.jsonl", 5), order=1), namespace=ns)

    cluster.kubectl("wait", "--for=condition=Failed", f"llr/{run}", "-n", ns, "--timeout=120s")
    # Step 0's train: killed twice by the "kernel", retried by its Job, the third attempt finished.
    train = cluster.api.get("jobs", ns, job_name(run, 0, "train"))
    assert (train["status"]["failed"], train["status"]["succeeded"]) == (2, 1)
    assert pods_of(kubelet, job_name(run, 0, "train")) == 3
    # What the killed attempts half-wrote is gone; the commit marker lists only the finished output.
    local = LocalStore(store)
    marker = local.read_marker(stage_prefix(run, 0, "train"))
    assert list(marker["files"]) == ["out.json"] and local.read_json(f"{stage_prefix(run, 0, 'train')}/out.json")
    assert status(cluster, ns, "instructiondatasets", "d0")["phase"] == "Succeeded"

    # Step 1's eval: 1 + backoffLimit attempts, then the run is Failed naming stage, reason and exit code.
    assert pods_of(kubelet, job_name(run, 1, "eval")) == 3
    failed = condition(cluster, ns, "lifelongruns", run, "Failed")
    for words in ("stage eval of step 1 (dataset d1)", "BackoffLimitExceeded", "exit code 137",
                  "out of memory", "adaptinf.dev/retry-step=1"):
        assert words in failed["message"], (words, failed["message"])
    assert "injected SIGKILL of eval step 1 mid-write" in failed["message"]  # the pod's last log line
    row = cluster.kubectl("get", "llr", run, "-n", ns, "--no-headers").stdout.split()
    assert row[1:4] == ["1", "eval", "Failed"]
    described = cluster.kubectl("describe", "llr", run, "-n", ns).stdout
    assert "exit code 137" in described and "StageFailed" in described
    ds = status(cluster, ns, "instructiondatasets", "d1")
    assert (ds["phase"], ds["stage"]) == ("Failed", "eval")
    assert any(e["reason"] == "StageFailed" and "exit code 137" in e["message"] for e in events(cluster, ns))
    assert not local.is_committed(stage_prefix(run, 1, "eval"))

    # A plain crash (exit 1) after a retry: its last log line is in the condition too.
    (store / "_crash" / "eval-1").unlink()
    (store / "_fail").mkdir()
    (store / "_fail" / "eval-1").write_text("1")
    cluster.kubectl("annotate", "llr", run, "-n", ns, "adaptinf.dev/retry-step=1")
    wait_for(lambda: "injected failure of eval step 1: exit 1" in condition(
        cluster, ns, "lifelongruns", run, "Failed").get("message", ""), 60, "the exit-1 failure")
    assert "exit code 1" in condition(cluster, ns, "lifelongruns", run, "Failed")["message"]

    # Fixed: retrying the step finishes the run; one Job per stage and step, however often retried.
    (store / "_fail" / "eval-1").unlink()
    cluster.kubectl("annotate", "llr", run, "-n", ns, "adaptinf.dev/retry-step=1", "--overwrite")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{run}", "-n", ns, "--timeout=60s")
    assert job_names(cluster, ns) == sorted(job_name(run, t, s) for t in (0, 1) for s in STAGES)
    assert local.read_json(pool_key(run, 1))["size"] == 11
    assert [(c["stage"], c["step"]) for c in calls(store)].count(("prune", 1)) == 1


def normalised_pool(store: Path, run: str, step: int, datasets: list[str]) -> list[str]:
    """Pool members with each dataset name replaced by its position, to compare two runs."""
    members = LocalStore(store).read_json(pool_key(run, step))["members"]
    return [f"{datasets.index(m.split('/')[0])}/{m.split('/', 1)[1]}" for m in members]


def mlflow_children(uri: str, run: str) -> dict[str, list[str]]:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("adapt-inf")
    found = client.search_runs([exp.experiment_id], filter_string=f"tags.`adaptinf.run` = '{run}'")
    out: dict[str, list[str]] = {}
    for r in found:
        out.setdefault(r.data.tags["adaptinf.step"], []).append(r.info.status)
    return out


def test_operator_killed_anywhere_gives_the_same_run(cluster: Cluster, namespace: str, start_operator,
                                                     start_kubelet, tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kubelet = start_kubelet(command_map={"adaptinf": FAKE_STAGE}, extra_env={"MLFLOW_TRACKING_URI": mlflow_uri})
    op = start_operator()
    sources = [write_records(tmp_path / "a.jsonl", 12, bad=1), write_records(tmp_path / "b.jsonl", 25)]

    # The reference: the same two datasets, nobody interferes (D=30 prunes at step 1).
    cluster.apply(run_manifest("calm", store), dataset_manifest("calm-a", "calm", sources[0], order=0),
                  dataset_manifest("calm-b", "calm", sources[1], order=1), namespace=ns)
    cluster.kubectl("wait", "--for=condition=UpToDate", "llr/calm", "-n", ns, "--timeout=120s")

    # The same run with the operator SIGKILLed (and restarted) at five different points.
    held = hold(store, "prune", 0)
    cluster.apply(run_manifest("chaos", store), dataset_manifest("chaos-a", "chaos", sources[0], order=0),
                  dataset_manifest("chaos-b", "chaos", sources[1], order=1), namespace=ns)
    points = [
        ("just after the step-0 extract Job is created", lambda: has_job(cluster, ns, job_name("chaos", 0, "extract"))),
        ("just after step 0's cluster-select completed", lambda: job_done(cluster, ns, job_name("chaos", 0, "cluster-select"))),
        ("mid-stage: prune of step 0 running, its MLflow run open", lambda: has_job(cluster, ns, job_name("chaos", 0, "prune"))),
        ("between the steps", lambda: status(cluster, ns, "instructiondatasets", "chaos-a").get("phase") == "Succeeded"),
        ("just after step 1's train completed", lambda: job_done(cluster, ns, job_name("chaos", 1, "train"))),
    ]
    for what, reached in points:
        wait_for(reached, 90, what, interval=0.05)
        op.kill()
        if held.exists():
            held.unlink()
        op.start()
    cluster.kubectl("wait", "--for=condition=UpToDate", "llr/chaos", "-n", ns, "--timeout=120s")
    assert op.starts == 6

    # Exactly one Job per stage and step, each stage executed exactly once, the same final pool.
    chaos_jobs = [j for j in job_names(cluster, ns) if j.startswith("chaos-")]
    assert chaos_jobs == sorted(job_name("chaos", t, s) for t in (0, 1) for s in STAGES)
    executed = Counter((c["stage"], c["step"]) for c in calls(store) if c["dataset"].startswith("chaos-"))
    assert set(executed.values()) == {1} and len(executed) == 10, executed
    assert len(kubelet.started_pods) == 20
    for step in (0, 1):
        assert normalised_pool(store, "chaos", step, ["chaos-a", "chaos-b"]) == \
               normalised_pool(store, "calm", step, ["calm-a", "calm-b"])
    assert LocalStore(store).read_json(pool_key("chaos", 1))["size"] == 30  # 12 + 25 > D = 30
    for run in ("calm", "chaos"):
        s = status(cluster, ns, "lifelongruns", run)
        assert (s["phase"], s["stepsCompleted"], s["poolSize"]) == ("Succeeded", 2, 30)
        # MLflow: one parent and one child per step, every child closed.
        assert mlflow_children(mlflow_uri, run) == {"parent": ["RUNNING"], "0": ["FINISHED"], "1": ["FINISHED"]}
    assert re.search(r"operator start #6", op.logs())
