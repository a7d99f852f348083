"""Operating the operator, end to end: two operators on the same objects (Kopf peering), and the
metrics and liveness endpoints during a run.

Peering: each operator runs with `--peering=adaptinf` (as the chart does) and writes its
keep-alive into the KopfPeering `adaptinf` of the namespace; one that sees a live peer of higher
priority pauses, equal priorities pause both (docs/operator.md "One operator at a time").
"""
from __future__ import annotations

import json
import re
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from adaptinf.layout import STAGES
from adaptinf.operator.jobs import job_name
from harness import (FAKE_STAGE, Cluster, Operator, calls, dataset_manifest, has_job, hold, job_done, jobs_created,
                     run_manifest, status, wait_for, write_records)

pytestmark = pytest.mark.slow

RUN = "demo"
PEERING = "adaptinf"


def peers(cluster: Cluster, ns: str) -> dict[str, dict]:
    """Live keep-alive records in the namespace's KopfPeering: identity → {priority, lifetime, lastseen}."""
    obj = json.loads(cluster.kubectl("get", "kopfpeering", PEERING, "-n", ns, "-o", "json").stdout)
    return {k: v for k, v in (obj.get("status") or {}).items() if v}


def created_by(op: Operator) -> list[str]:
    """The Jobs this operator process created, from its own log (reconcile.py logs each create)."""
    return re.findall(r"created Job (\S+)", op.logs())


def start_peered(start_operator, priority: int, log_name: str) -> Operator:
    return start_operator(peering=(f"--peering={PEERING}", f"--priority={priority}"), log_name=log_name)


def every_job_created_once(cluster: Cluster, ns: str, expected: list[str]) -> None:
    creates = Counter(name for name, _ in jobs_created(cluster, ns))
    assert sorted(creates) == sorted(expected) and set(creates.values()) == {1}, creates


def test_a_standby_operator_stays_frozen_then_takes_over(cluster: Cluster, namespace: str, start_operator,
                                                         start_kubelet, tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    cluster.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, namespace=ns)
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    held = [hold(store, "train", 0), hold(store, "extract", 1)]
    active = start_peered(start_operator, 10, "active.log")
    cluster.apply(run_manifest(RUN, store),
                  dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 10), order=0),
                  dataset_manifest("d1", RUN, write_records(tmp_path / "d1.jsonl", 10), order=1), namespace=ns)
    wait_for(lambda: has_job(cluster, ns, job_name(RUN, 0, "train")), 60, "step 0's train Job")

    # A second operator, lower priority: it registers and stays paused while the first works on.
    standby = start_peered(start_operator, 0, "standby.log")
    wait_for(lambda: len(peers(cluster, ns)) == 2, 30, "both operators' keep-alives")
    held[0].unlink()
    wait_for(lambda: has_job(cluster, ns, job_name(RUN, 1, "extract")), 60, "step 1's extract Job")
    time.sleep(2)  # passes of the standby, were it reconciling (interval 1 s)
    assert created_by(standby) == [], standby.logs()[-3000:]
    assert "Kopf peering" not in active.logs() + standby.logs()  # the startup check found the object
    assert created_by(active) == [job_name(RUN, 0, s) for s in STAGES] + [job_name(RUN, 1, "extract")]
    # A paused operator reports no run: only the active one's gauges count it.
    assert active.metrics()[("adaptinf_runs", (("namespace", ns), ("phase", "Running")))] == 1
    assert not [k for k in standby.metrics() if k[0] == "adaptinf_runs"]

    # The active one stops (its keep-alive is withdrawn on exit): the standby resumes and finishes.
    active.stop()
    wait_for(lambda: "Resuming operations" in standby.logs(), 30, "the standby to resume")
    held[1].unlink()
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=90s")
    expected = [job_name(RUN, t, s) for t in (0, 1) for s in STAGES]
    assert created_by(standby) == [job_name(RUN, 1, s) for s in STAGES[1:]]
    every_job_created_once(cluster, ns, expected)
    executed = Counter((c["stage"], c["step"], c["shard"]) for c in calls(store))
    assert set(executed.values()) == {1} and len(executed) == 10, executed
    assert status(cluster, ns, "lifelongruns", RUN)["stepsCompleted"] == 2
    assert [p["priority"] for p in peers(cluster, ns).values()] == [0]  # the stopped one withdrew


def test_operators_of_equal_priority_both_freeze(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                                 tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    cluster.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, namespace=ns)
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    held = hold(store, "train", 0)
    first = start_peered(start_operator, 0, "first.log")
    cluster.apply(run_manifest(RUN, store), dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 10)),
                  namespace=ns)
    train = job_name(RUN, 0, "train")
    wait_for(lambda: has_job(cluster, ns, train), 60, "the train Job")

    # Same priority: neither can tell which should work, so both pause (Kopf's rule) — and nothing
    # moves on, not even when the running stage ends.
    second = start_peered(start_operator, 0, "second.log")
    wait_for(lambda: "Pausing all operators" in first.logs(), 30, "the first operator to pause")
    held.unlink()
    wait_for(lambda: job_done(cluster, ns, train), 30, "train to finish")
    time.sleep(3)
    assert not has_job(cluster, ns, job_name(RUN, 0, "eval"))
    assert status(cluster, ns, "lifelongruns", RUN)["stage"] == "train"
    assert created_by(second) == []

    # One of them goes: the other resumes and finishes the run.
    second.stop()
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    every_job_created_once(cluster, ns, [job_name(RUN, 0, s) for s in STAGES])
    assert created_by(first) == [job_name(RUN, 0, s) for s in STAGES]


def test_metrics_and_liveness_reflect_the_run(cluster: Cluster, namespace: str, start_operator, start_kubelet,
                                              tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    (store / "_fail").mkdir(parents=True)
    (store / "_fail" / "eval-1").write_text("2")  # bad input: the Job fails at once (no retries)
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    op = start_operator()
    cluster.apply(run_manifest(RUN, store),
                  dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 10), order=0),
                  dataset_manifest("d1", RUN, write_records(tmp_path / "d1.jsonl", 10), order=1), namespace=ns)
    cluster.kubectl("wait", "--for=condition=Failed", f"llr/{RUN}", "-n", ns, "--timeout=90s")

    def sample(m: dict, name: str, **labels: str) -> float | None:
        return m.get((name, tuple(sorted(labels.items()))))

    def finished(m: dict, outcome: str) -> dict[str, float]:
        return {stage: sample(m, "adaptinf_stage_duration_seconds_count", stage=stage, outcome=outcome) or 0
                for stage in STAGES}

    m = wait_for(lambda: (m := op.metrics()) and sample(m, "adaptinf_runs", namespace=ns, phase="Failed") and m,
                 10, "the Failed run in the metrics")
    assert sample(m, "adaptinf_job_failures_total", namespace=ns, stage="eval") == 1
    assert sample(m, "adaptinf_run_steps_completed", namespace=ns, run=RUN) == 1
    assert finished(m, "succeeded") == {"extract": 2, "cluster-select": 2, "train": 2, "eval": 1, "prune": 1}
    assert finished(m, "failed") == {"extract": 0, "cluster-select": 0, "train": 0, "eval": 1, "prune": 0}
    assert {p: sample(m, "adaptinf_runs", namespace=ns, phase=p) for p in ("Running", "Succeeded")} == \
        {"Running": 0, "Succeeded": 0}

    (store / "_fail" / "eval-1").unlink()
    cluster.kubectl("annotate", "llr", RUN, "-n", ns, "adaptinf.dev/retry-step=1")
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    m = wait_for(lambda: (m := op.metrics()) and sample(m, "adaptinf_runs", namespace=ns, phase="Succeeded") and m,
                 10, "the Succeeded run in the metrics")
    assert sample(m, "adaptinf_runs", namespace=ns, phase="Failed") == 0
    assert sample(m, "adaptinf_run_steps_completed", namespace=ns, run=RUN) == 2
    assert sample(m, "adaptinf_job_failures_total", namespace=ns, stage="eval") == 1  # counted once
    assert finished(m, "succeeded") == {s: 2 for s in STAGES}
    # Every stage Job ran for a measurable time (the emulator's timestamps have 1-second steps).
    assert sample(m, "adaptinf_stage_duration_seconds_bucket", stage="train", outcome="succeeded", le="+Inf") == 2
    assert not any(k[0] == "adaptinf_reconcile_errors_total" and v for k, v in m.items())
    assert sample(m, "adaptinf_reconcile_duration_seconds_count") > 10

    # The liveness endpoint: Kopf's, with the reconcile loop's report in its body (Kopf caches
    # the probe results for 10 s: the one of the harness's first health check may still be served).
    def report() -> dict | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.liveness_port}/healthz", timeout=5) as resp:
            assert resp.status == 200
            body = json.loads(resp.read())["reconcile"]
        return body if body["passes"] > 10 else None

    body = wait_for(report, 15, "the liveness report to count the passes", interval=1)
    assert body["inFlight"] in (0, 1) and 0 <= body["lastPassSecondsAgo"] < 30, body


def test_without_its_peering_object_the_operator_refuses_to_work_and_says_why(cluster: Cluster, namespace: str,
                                                                             start_operator, start_kubelet,
                                                                             tmp_path: Path) -> None:
    ns, store = namespace, tmp_path / "store"
    store.mkdir()
    start_kubelet(command_map={"adaptinf": FAKE_STAGE})
    op = start_peered(start_operator, 0, "operator.log")
    assert f"no KopfPeering '{PEERING}' in namespace {ns}: the operator stays paused" in op.logs()
    cluster.apply(run_manifest(RUN, store), dataset_manifest("d0", RUN, write_records(tmp_path / "d0.jsonl", 10)),
                  namespace=ns)
    time.sleep(3)
    assert cluster.api.list("jobs", ns) == [] and not status(cluster, ns, "lifelongruns", RUN)

    # The object appears (helm upgrade with peering.enabled, or by hand): the operator starts working.
    cluster.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}}, namespace=ns)
    cluster.kubectl("wait", "--for=condition=UpToDate", f"llr/{RUN}", "-n", ns, "--timeout=60s")
    every_job_created_once(cluster, ns, [job_name(RUN, 0, s) for s in STAGES])
