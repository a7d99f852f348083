"""Unit tests of the operator's metrics (operator/metrics.py), liveness report (operator/health.py),
startup peering check (operator/peering.py), and of the daemon's per-pass bookkeeping in handlers.py.
The e2e view is test_operating_e2e.py."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adaptinf.operator import handlers
from adaptinf.operator.config import ConfigError
from adaptinf.operator.health import LoopStalled, LoopWatch
from adaptinf.operator.kube import KubeError
from adaptinf.operator.metrics import PHASES, OperatorMetrics, metrics_port
from adaptinf.operator.peering import missing_peering
from adaptinf.operator.reconcile import job_view
from adaptinf.operator.steps import FAILED, SUCCEEDED, CreateJob, JobView, Plan, ReportJob


def samples(m: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(m.text()) for s in fam.samples}


def report(stage: str, state: str, ran_for: float | None) -> ReportJob:
    return ReportJob(JobView(name=f"r-0-{stage}", step=0, stage=stage, dataset="d0", state=state, ran_for=ran_for))


def test_runs_by_phase_steps_and_reported_jobs():
    m = OperatorMetrics()
    m.passed("ns", "a", Plan(phase="Running", steps_completed=1,
                             actions=[report("train", SUCCEEDED, 42.0), CreateJob(0, "eval", "d0")]), 0.1)
    m.passed("ns", "b", Plan(phase="Failed", actions=[report("eval", FAILED, 3.0)]), 0.1)
    m.passed("ns", "c", Plan(phase="Failed", actions=[report("extract", FAILED, None)]), 0.1)  # no times: not timed
    s = samples(m)
    assert {p: s[("adaptinf_runs", (("namespace", "ns"), ("phase", p)))] for p in PHASES} == \
        {"Pending": 0, "Queued": 0, "Running": 1, "Suspended": 0, "Succeeded": 0, "Failed": 2}
    assert s[("adaptinf_run_steps_completed", (("namespace", "ns"), ("run", "a")))] == 1
    assert s[("adaptinf_job_failures_total", (("namespace", "ns"), ("stage", "eval")))] == 1
    assert s[("adaptinf_job_failures_total", (("namespace", "ns"), ("stage", "extract")))] == 1
    assert s[("adaptinf_stage_duration_seconds_sum", (("outcome", "succeeded"), ("stage", "train")))] == 42.0
    assert s[("adaptinf_stage_duration_seconds_count", (("outcome", "failed"), ("stage", "eval")))] == 1
    assert ("adaptinf_stage_duration_seconds_count", (("outcome", "failed"), ("stage", "extract"))) not in s
    assert s[("adaptinf_reconcile_duration_seconds_count", ())] == 3
    assert s[("process_resident_memory_bytes", ())] > 0

    m.gone("ns", "b")
    m.gone("ns", "c")
    m.phase_only("ns", "a", "Succeeded", 2)
    s = samples(m)
    assert s[("adaptinf_runs", (("namespace", "ns"), ("phase", "Failed")))] == 0
    assert s[("adaptinf_runs", (("namespace", "ns"), ("phase", "Succeeded")))] == 1
    assert ("adaptinf_run_steps_completed", (("namespace", "ns"), ("run", "b"))) not in s


def test_job_view_times_an_ended_job_only():
    def job(conds: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
        return {"metadata": {"name": "r-0-train", "labels": {"adaptinf.dev/step": "0", "adaptinf.dev/stage": "train",
                                                             "adaptinf.dev/dataset": "d0"}},
                "status": {"conditions": conds, **status}}

    done = job([{"type": "Complete", "status": "True"}], startTime="2026-01-01T10:00:00Z",
               completionTime="2026-01-01T10:02:30Z")
    failed = job([{"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T10:00:09Z"}],
                 startTime="2026-01-01T10:00:00Z")
    running = job([], startTime="2026-01-01T10:00:00Z")
    assert job_view(done, [], 0).ran_for == 150
    assert job_view(failed, [], 0).ran_for == 9
    assert job_view(running, [], 0).ran_for is None
    assert job_view(job([{"type": "Complete", "status": "True"}]), [], 0).ran_for is None  # no startTime


@pytest.mark.parametrize("raw, port", [("", 0), ("0", 0), ("9090", 9090)])
def test_metrics_port(raw, port):
    assert metrics_port({"ADAPTINF_METRICS_PORT": raw}) == port


@pytest.mark.parametrize("raw", ["http", "-1", "70000", "90.5"])
def test_a_bad_metrics_port_names_the_variable(raw):
    with pytest.raises(ConfigError, match=f"ADAPTINF_METRICS_PORT={raw!r}"):
        metrics_port({"ADAPTINF_METRICS_PORT": raw})


def test_liveness_reports_passes_and_fails_only_on_a_stuck_pass():
    now = [100.0]
    watch = LoopWatch(stall_after=60, clock=lambda: now[0])
    assert watch.report() == {"passes": 0, "inFlight": 0, "lastPassSecondsAgo": None}
    with watch.pass_of("ns", "a"):
        now[0] += 5
    now[0] += 10
    assert watch.report() == {"passes": 1, "inFlight": 0, "lastPassSecondsAgo": 10.0}
    with watch.pass_of("ns", "slow"):
        now[0] += 59
        assert watch.report()["inFlight"] == 1  # slow, but within the limit
        now[0] += 2
        with pytest.raises(LoopStalled, match="ns/slow has run for 61s"):
            watch.report()
    assert watch.report()["passes"] == 2  # it finished: alive again


class FakeReconciler:
    def __init__(self, outcome: Any, run: dict[str, Any] | None = None):
        self.outcome, self.kube = outcome, SimpleNamespace(get=lambda plural, ns, name: run)

    def reconcile(self, namespace: str, name: str) -> Plan | None:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def memo_with(reconciler: FakeReconciler) -> SimpleNamespace:
    return SimpleNamespace(reconciler=reconciler, metrics=OperatorMetrics(), loop=LoopWatch())


def test_a_pass_that_raises_is_counted_and_reraised():
    memo = memo_with(FakeReconciler(RuntimeError("API down")))
    with pytest.raises(RuntimeError, match="API down"):
        handlers._reconcile_once(memo, "ns", "a")
    assert samples(memo.metrics)[("adaptinf_reconcile_errors_total", (("namespace", "ns"),))] == 1
    assert memo.loop.report()["passes"] == 1 and memo.loop.report()["inFlight"] == 0


def test_a_refused_run_counts_by_its_status_and_a_deleted_one_not_at_all():
    refused = {"metadata": {"name": "a"}, "status": {"phase": "Failed", "stepsCompleted": 3}}
    memo = memo_with(FakeReconciler(None, refused))
    handlers._reconcile_once(memo, "ns", "a")
    s = samples(memo.metrics)
    assert s[("adaptinf_runs", (("namespace", "ns"), ("phase", "Failed")))] == 1
    assert s[("adaptinf_run_steps_completed", (("namespace", "ns"), ("run", "a")))] == 3
    memo.reconciler = FakeReconciler(None, None)
    handlers._reconcile_once(memo, "ns", "a")
    assert not [k for k in samples(memo.metrics) if k[0] == "adaptinf_runs"]


class FakeKube:
    def __init__(self, items: list[dict[str, Any]] | None = None, status: int | None = None):
        self.items, self.status, self.asked = items or [], status, []

    def request(self, method: str, path: str, query: dict[str, str]) -> dict[str, Any]:
        self.asked.append((method, path, query))
        if self.status:
            raise KubeError(self.status, {"reason": "NotFound" if self.status == 404 else "Forbidden"}, path)
        return {"items": self.items}


def test_peering_check_names_the_missing_object_or_crd():
    kube = FakeKube([{"metadata": {"name": "adaptinf"}}])
    assert missing_peering(kube, "adaptinf", "ml") is None
    assert kube.asked == [("GET", "/apis/kopf.dev/v1/namespaces/ml/kopfpeerings",
                           {"fieldSelector": "metadata.name=adaptinf"})]
    why = missing_peering(FakeKube(), "adaptinf", "")
    assert why and "no ClusterKopfPeering 'adaptinf'" in why and "stays paused" in why and "--standalone" in why
    why = missing_peering(FakeKube(status=404), "adaptinf", "ml")
    assert why and "CRD kopfpeerings.kopf.dev missing" in why
    why = missing_peering(FakeKube(status=403), "adaptinf", "")
    assert why and "cannot list clusterkopfpeerings (403 Forbidden)" in why
