"""The operator's Prometheus metrics: what its runs are doing, and how its own loop fares.

Served by prometheus_client's HTTP server on ADAPTINF_METRICS_PORT (all interfaces; unset or 0:
off), from a registry of its own so a test can read it without a server. The names are the ones
docs/operator.md "Metrics" lists:

- adaptinf_runs{namespace,phase}: runs this operator handles, by status.phase (every phase is
  reported, 0 when none is in it, so an alert on Failed > 0 has a series to watch);
- adaptinf_run_steps_completed{namespace,run}: status.stepsCompleted of each run;
- adaptinf_stage_duration_seconds{stage,outcome}: a stage Job's start to its end, observed once
  per Job, when the operator reports it (outcome succeeded|failed);
- adaptinf_job_failures_total{namespace,stage}: stage Jobs that failed (after their retries);
- adaptinf_reconcile_errors_total{namespace}: reconcile passes that raised (API or store trouble);
- adaptinf_reconcile_duration_seconds: how long one pass takes;
- process_*: prometheus_client's process collector (CPU, resident memory, open files).

Counters start at zero with the process, as Prometheus expects: a restarted operator does not
count again the Jobs its predecessor reported (the Job's adaptinf.dev/reported annotation).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .config import ConfigError
from .steps import FAILED, SUCCEEDED, Plan, ReportJob

PORT_ENV = "ADAPTINF_METRICS_PORT"
PHASES = ("Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed")
# Stages last from seconds (prune on a toy stream) to a day (train on a large model).
STAGE_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def metrics_port(env: Mapping[str, str] | None = None) -> int:
    """The port to serve metrics on, 0 for none; a bad value is an error naming the variable."""
    raw = (os.environ if env is None else env).get(PORT_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{PORT_ENV}={raw!r} is not a port number (1-65535, or 0/empty for no metrics)")
    return int(raw)


class _RunCollector(Collector):
    """Runs by phase and steps per run, from the last pass of each run (gauges computed at scrape)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], tuple[str, int]] = {}  # (namespace, run) → (phase, steps)

    def set(self, namespace: str, run: str, phase: str, steps: int) -> None:
        with self._lock:
            self._runs[(namespace, run)] = (phase, steps)

    def drop(self, namespace: str, run: str) -> None:
        with self._lock:
            self._runs.pop((namespace, run), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            runs = dict(self._runs)
        by_phase = GaugeMetricFamily("adaptinf_runs", "LifelongRuns this operator handles, by status.phase",
                                     labels=["namespace", "phase"])
        for ns in sorted({ns for ns, _ in runs}):
            for phase in sorted(set(PHASES) | {p for (n, _), (p, _) in runs.items() if n == ns}):
                by_phase.add_metric([ns, phase], sum(1 for (n, _), (p, _) in runs.items() if (n, p) == (ns, phase)))
        yield by_phase
        steps = GaugeMetricFamily("adaptinf_run_steps_completed", "status.stepsCompleted of each LifelongRun",
                                  labels=["namespace", "run"])
        for (ns, run), (_, done) in sorted(runs.items()):
            steps.add_metric([ns, run], done)
        yield steps


class OperatorMetrics:
    """The metrics of one operator process, updated from the reconcile threads and the handlers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_*: the operator's CPU, memory, open files
        self._runs = _RunCollector()
        self.registry.register(self._runs)
        self.stage_duration = Histogram("adaptinf_stage_duration_seconds",
                                        "Stage Job run time, from its start to its end", ["stage", "outcome"],
                                        buckets=STAGE_BUCKETS, registry=self.registry)
        self.job_failures = Counter("adaptinf_job_failures", "Stage Jobs that failed (after their retries)",
                                    ["namespace", "stage"], registry=self.registry)
        self.reconcile_errors = Counter("adaptinf_reconcile_errors", "Reconcile passes that raised",
                                        ["namespace"], registry=self.registry)
        self.reconcile_duration = Histogram("adaptinf_reconcile_duration_seconds", "Duration of one reconcile pass",
                                            registry=self.registry)
        self._server: Any = None

    def passed(self, namespace: str, run: str, plan: Plan, seconds: float) -> None:
        """A pass that planned: the run's phase and steps, and the Jobs it reported (once per Job)."""
        self.reconcile_duration.observe(seconds)
        self._runs.set(namespace, run, plan.phase, plan.steps_completed)
        for action in plan.actions:
            if not isinstance(action, ReportJob):
                continue
            job = action.job
            if job.state == FAILED:
                self.job_failures.labels(namespace, job.stage).inc()
            if job.ran_for is not None:
                outcome = "succeeded" if job.state == SUCCEEDED else "failed"
                self.stage_duration.labels(job.stage, outcome).observe(max(job.ran_for, 0.0))

    def phase_only(self, namespace: str, run: str, phase: str, steps: int) -> None:
        """A pass that refused the run before planning (invalid spec, store in use): its status says."""
        self._runs.set(namespace, run, phase, steps)

    def failed(self, namespace: str) -> None:
        self.reconcile_errors.labels(namespace).inc()

    def gone(self, namespace: str, run: str) -> None:
        self._runs.drop(namespace, run)

    def text(self) -> str:
        """The exposition a scrape gets."""
        return generate_latest(self.registry).decode()

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(port, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
