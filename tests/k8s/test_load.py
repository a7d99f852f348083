"""Load: one operator, many LifelongRuns with queued InstructionDatasets each.

`make test` runs 8 runs × 5 datasets (200 stage Jobs); the figures in docs/operator.md are from
the full size, 20 × 10 (1000 Jobs):

    ADAPTINF_LOAD_RUNS=20 ADAPTINF_LOAD_DATASETS=10 nice -n 19 python -m pytest -q -s tests/k8s/test_load.py

The stage command is `true` (a stage that finishes at once), so what is measured is the operator
(and the emulated API server it talks to): every dataset must become exactly its own step, every
stage Job must exist exactly once and run exactly once. Printed (and recorded in docs/operator.md,
"Load"): the operator's resident memory, its API requests per minute, and the time from a Job's completion (the kubelet marking
it Complete) to the creation of the run's next Job.
"""
from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from adaptinf.layout import STAGES
from adaptinf.operator.jobs import job_name
from harness import dataset_manifest, run_manifest, status, wait_for

pytestmark = pytest.mark.slow

RUNS = int(os.environ.get("ADAPTINF_LOAD_RUNS", "8"))
DATASETS = int(os.environ.get("ADAPTINF_LOAD_DATASETS", "5"))


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_many_runs_with_queued_datasets(cluster, namespace, start_operator, start_kubelet, tmp_path: Path) -> None:
    ns = namespace
    kubelet = start_kubelet(command_map={"adaptinf": ["true"]})
    # The production reconcile interval: progress is driven by Job events, not by polling.
    op = start_operator(ADAPTINF_RECONCILE_INTERVAL="30")
    runs = [f"r{i:02d}" for i in range(RUNS)]
    objects = []
    for run in runs:
        objects.append(run_manifest(run, tmp_path / "store", poolBudget=None))
        objects += [dataset_manifest(f"{run}-d{t}", run, tmp_path / "none.jsonl", order=t) for t in range(DATASETS)]
    start = time.monotonic()
    cluster.apply(*objects, namespace=ns)

    def finished() -> bool:
        return all(status(cluster, ns, "lifelongruns", r).get("stepsCompleted") == DATASETS for r in runs)
    wait_for(finished, 60 + RUNS * DATASETS * 1.5, "every run to finish every step", interval=1.0)
    elapsed = time.monotonic() - start
    rss, peak = rss_mib(op.proc.pid)

    # No missed and no duplicated step: each dataset is its own step, in spec.order.
    jobs = cluster.api.list("jobs", ns)
    names = Counter(j["metadata"]["name"] for j in jobs)
    expected = {job_name(r, t, s) for r in runs for t in range(DATASETS) for s in STAGES}
    assert set(names) == expected and set(names.values()) == {1}
    for job in jobs:
        labels = job["metadata"]["labels"]
        assert labels["adaptinf.dev/dataset"] == f"{labels['adaptinf.dev/run']}-d{labels['adaptinf.dev/step']}"
    started = Counter(job for job, _, _ in kubelet.started_pods)
    assert set(started) == expected and set(started.values()) == {1}  # every stage ran exactly once
    for ds in cluster.api.list("instructiondatasets", ns):
        s, name = ds["status"], ds["metadata"]["name"]
        assert (s["phase"], s["step"]) == ("Succeeded", int(name.rsplit("-d", 1)[1])), (name, s)
    assert {status(cluster, ns, "lifelongruns", r)["phase"] for r in runs} == {"Succeeded"}

    # Job completion → the run's next Job created (the operator's reaction time).
    created = {e["name"]: e["ts"] for e in cluster.audit_entries()
               if e["verb"] == "create" and e["resource"] == "jobs" and e["namespace"] == ns}
    order = [(t, s) for t in range(DATASETS) for s in STAGES]
    latencies = []
    for run in runs:
        for (t0, s0), (t1, s1) in zip(order, order[1:]):
            done = kubelet.completed_at[(ns, job_name(run, t0, s0))]
            latencies.append(created[job_name(run, t1, s1)] - done)
    latencies.sort()
    # The operator's API requests (its two clients: Kopf's and the reconciler's), per minute.
    ours = [e for e in cluster.audit_entries() if e["userAgent"].split("/")[0] in ("kopf", "adaptinf-operator")
            and e["namespace"] == ns]
    per_minute = len(ours) / (elapsed / 60)
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
    print(f"\nload: {RUNS} runs x {DATASETS} datasets = {len(expected)} Jobs in {elapsed:.1f}s; "
          f"operator RSS {rss:.0f} MiB (peak {peak:.0f} MiB); completion -> next Job: "
          f"median {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms; "
          f"operator API requests {len(ours)} ({per_minute:.0f}/min, {len(ours) / len(expected):.1f} per Job)")
    assert min(latencies) > 0  # the next Job never appears before its predecessor completed
