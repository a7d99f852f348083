"""Kopf wiring: login, settings, one reconcile daemon per LifelongRun, and the events that wake it.

The daemon reconciles its run level-based (reconcile.py) every ADAPTINF_RECONCILE_INTERVAL
seconds, and at once when one of the run's Jobs or datasets changes or the run itself does
(suspend, retry annotation). Deleting a run runs a cleanup that deletes its Jobs (kept by a
finalizer until done). A dataset naming a run that does not exist gets `RunFound=False` and a
Warning Event.

Run it with `kopf run -m adaptinf.operator.main --peering=adaptinf -A` (or `--namespace NS`;
`--standalone` where no second operator can appear) and `--liveness=http://0.0.0.0:8080/healthz`,
whose probe reports the reconcile loop (health.py). ADAPTINF_METRICS_PORT serves Prometheus
metrics (metrics.py).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import kopf

from .config import OperatorConfig
from .health import LoopWatch
from .jobs import MANAGED_BY, RUN_LABEL
from .kube import GROUP, VERSION, Kube
from .metrics import OperatorMetrics, metrics_port
from .peering import missing_peering
from .reconcile import REPORTED_ANNOTATION, RETRY_ANNOTATION, Reconciler

log = logging.getLogger(__name__)

RUNS = (GROUP, VERSION, "lifelongruns")
DATASETS = (GROUP, VERSION, "instructiondatasets")


class KopfEvents:
    """Kubernetes Events through Kopf's poster (safe to call from the reconcile threads)."""

    def info(self, obj: dict[str, Any], reason: str, message: str) -> None:
        kopf.info(obj, reason=reason, message=message)

    def warn(self, obj: dict[str, Any], reason: str, message: str) -> None:
        kopf.warn(obj, reason=reason, message=message)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """A kubeconfig when one is set (tests, running outside the cluster), else the pod's service account."""
    if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    cfg = OperatorConfig.from_env()
    # Progress in our own annotations, not in `status.kopf` (the CRD status schema has no room for it).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="adaptinf.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="adaptinf.dev")
    settings.persistence.finalizer = "adaptinf.dev/cleanup"
    settings.posting.level = logging.INFO
    # Only the operator's own Jobs, filtered by the API server: not every Job of the cluster.
    settings.watching.label_selectors["batch", "jobs"] = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
    memo.cfg = cfg
    memo.reconciler = Reconciler(Kube.from_environment(), cfg, KopfEvents())
    # (A namespaced operator without ADAPTINF_NAMESPACE does not say where its peering object is.)
    if settings.peering.mandatory and not settings.peering.standalone and (settings.peering.clusterwide
                                                                           or cfg.namespace):
        why = missing_peering(memo.reconciler.kube, settings.peering.name,
                              "" if settings.peering.clusterwide else cfg.namespace)
        if why:
            log.warning("Kopf peering %r: %s", settings.peering.name, why)
    memo.pokes = {}  # (namespace, run) → asyncio.Event that wakes the run's daemon
    memo.loop = LoopWatch()
    memo.metrics = OperatorMetrics()
    if port := metrics_port():
        memo.metrics.serve(port)
    log.info("adaptinf operator: namespace=%s image=%s interval=%ss metrics=%s", cfg.namespace or "(all)",
             cfg.stage_image, cfg.reconcile_interval, f":{port}" if port else "off")


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.metrics.close()


@kopf.on.probe(id="reconcile", errors=kopf.ErrorsMode.PERMANENT)
def reconcile_health(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """The liveness endpoint's body; a stuck pass raises, which makes the endpoint answer 500."""
    return memo.loop.report()


def _reconcile_once(memo: kopf.Memo, namespace: str, name: str) -> float | None:
    """One pass, in a worker thread, recorded in the metrics and the liveness watch; returns the
    seconds after which the run wants another pass (datasets still arriving), if sooner than usual."""
    with memo.loop.pass_of(namespace, name):
        began = time.monotonic()
        try:
            result = memo.reconciler.reconcile(namespace, name)
        except Exception:
            memo.metrics.failed(namespace)
            raise
        if result is not None:
            memo.metrics.passed(namespace, name, result, time.monotonic() - began)
            return result.awaiting_arrivals
        # Refused before planning (invalid spec, store in use), or gone: the run's status says which.
        run = memo.reconciler.kube.get("lifelongruns", namespace, name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            memo.metrics.gone(namespace, name)
        else:
            status = run.get("status") or {}
            memo.metrics.phase_only(namespace, name, status.get("phase") or "Pending",
                                    int(status.get("stepsCompleted") or 0))
        return None


def _poke(memo: kopf.Memo, namespace: str | None, run: str | None) -> bool:
    event = memo.pokes.get((namespace, run)) if run else None
    if event is not None:
        event.set()
    return event is not None


@kopf.daemon(*RUNS, cancellation_timeout=5.0)
async def reconcile_run(name: str, namespace: str, memo: kopf.Memo, stopped: kopf.DaemonStopped,
                        logger: logging.Logger, **_: Any) -> None:
    poke = memo.pokes.setdefault((namespace, name), asyncio.Event())
    try:
        while not stopped:
            poke.clear()
            try:
                sooner = await asyncio.to_thread(_reconcile_once, memo, namespace, name)
                # A little past the window's end, so that the next pass finds it over.
                delay = min(memo.cfg.reconcile_interval, sooner + 0.1) if sooner else memo.cfg.reconcile_interval
            except Exception:  # an API or store hiccup: log, back off a little, try again
                logger.exception("reconcile of %s/%s failed", namespace, name)
                delay = min(memo.cfg.reconcile_interval, 5.0)
            waits = [asyncio.ensure_future(poke.wait()), asyncio.ensure_future(stopped.wait())]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
    finally:
        memo.pokes.pop((namespace, name), None)
        memo.metrics.gone(namespace, name)  # deleted, or handed to another operator (peering)


def _echo(event: dict[str, Any], body: kopf.Body) -> bool:
    """A change that is only the operator's own status write coming back (its spec already
    observed): waking the daemon for it would only start another reconcile with nothing to do,
    and under load those echoes multiply (each dataset status patch → a pass → more patches)."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return (event.get("type") == "MODIFIED" and status.get("observedGeneration") is not None
            and status.get("observedGeneration") == meta.get("generation") and not meta.get("deletionTimestamp"))


@kopf.on.event(*RUNS)
def run_changed(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if _echo(event, body) and RETRY_ANNOTATION not in (body.get("metadata") or {}).get("annotations", {}):
        return
    _poke(memo, namespace, name)


@kopf.on.delete(*RUNS)
def run_deleted(name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    deleted = memo.reconciler.cleanup(namespace, name)
    kopf.info(body, reason="Cleanup", message=f"deleted {deleted} stage Job(s)")


@kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY[0]: MANAGED_BY[1]})
def job_changed(event: dict[str, Any], body: kopf.Body, namespace: str, labels: dict[str, str], memo: kopf.Memo,
                **_: Any) -> None:
    # Only a Job that ended (and is not yet handled) or is being deleted changes what the run does next;
    # its creation and progress are ours or cosmetic (a Pending pod is seen by the periodic pass).
    status, meta = body.get("status") or {}, body.get("metadata") or {}
    ended = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                for c in status.get("conditions") or [])
    deleting = event.get("type") == "DELETED" or meta.get("deletionTimestamp")  # held by our finalizer
    if deleting or (ended and REPORTED_ANNOTATION not in (meta.get("annotations") or {})):
        _poke(memo, namespace, labels.get(RUN_LABEL))


@kopf.on.event(*DATASETS)
def dataset_changed(event: dict[str, Any], body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    run = (body.get("spec") or {}).get("run")
    if _echo(event, body) and (body.get("status") or {}).get("run") == run:
        return
    if _poke(memo, namespace, run) or event.get("type") == "DELETED":
        return
    # No daemon for that run here: it does not exist (or is being deleted).
    if memo.reconciler.kube.get("lifelongruns", namespace, run) is None:
        memo.reconciler.mark_orphan(dict(body))
