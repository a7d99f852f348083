"""One reconcile of one LifelongRun: observe → plan (steps.py) → act → write status (status.py).

Everything here is I/O around the two pure modules. Each pass reads the run, its datasets, its
Jobs (and the pods of a running Job), and the commit markers of the steps still open, so a pass
after an operator restart sees exactly what a pass before it would have seen.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Protocol
from collections.abc import Callable

from pydantic import ValidationError

from adaptinf import layout
from adaptinf.spec import LifelongRunSpec, error_line
from adaptinf.store import Store, StoreError, open_store

from . import ownership
from . import status as st
from .config import OperatorConfig
from .jobs import DATASET_LABEL, JOB_FINALIZER, RUN_LABEL, STAGE_LABEL, STEP_LABEL, build_job
from .kube import Kube, KubeError
from .steps import (ACTIVE, FAILED, SUCCEEDED, ClearRetry, CreateJob, DatasetState, DatasetView, DeleteJob, JobView,
                    Observation, Plan, ReportJob, StopJob, plan, schedule)

log = logging.getLogger(__name__)

RETRY_ANNOTATION = "adaptinf.dev/retry-step"
REPORTED_ANNOTATION = "adaptinf.dev/reported"
# Why a failed Job's last pod failed, kept on the Job once reported: its pods need not be read again.
FAILURE_ANNOTATION = "adaptinf.dev/failure"
# Statuses of a create the API server refused for a reason a user must fix (422 Invalid, 403
# Forbidden: webhook, policy, quota, 400 BadRequest); others are transient and raised.
REFUSED = (400, 403, 422)
# On an InstructionDataset from its step's first Job until the step is over: deleting the dataset
# mid-step must not let the next dataset's step start beside the running one (two GPU Jobs, a
# lineage that depends on which finishes first). A deleted dataset's step runs to its end.
DATASET_FINALIZER = "adaptinf.dev/step"
# What an exit code usually means for a stage (docs/contracts.md §1, docs/failure-modes.md).
EXIT_HINTS = {2: "bad input, not retried", 137: "SIGKILL: out of memory, or the node was lost",
              143: "SIGTERM: deleted, preempted or past activeDeadlineSeconds"}


class Events(Protocol):
    """Kubernetes Events about an object (kopf.info / kopf.warn in the operator)."""

    def info(self, obj: dict[str, Any], reason: str, message: str) -> None: ...
    def warn(self, obj: dict[str, Any], reason: str, message: str) -> None: ...


def retry_hint(run: str, step: int | None) -> str:
    return f"kubectl annotate llr {run} {RETRY_ANNOTATION}={step if step is not None else '<step>'} --overwrite"


def _seconds_since(ts: str | None, now: float) -> float | None:
    if not ts:
        return None
    return now - dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def pod_failure(pods: list[dict[str, Any]]) -> str:
    """'exit code N (hint): last log line' of the most recently failed stage container, or ''."""
    ended = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode"):
                ended.append((term.get("finishedAt") or "", term))
    if not ended:
        return ""
    term = max(ended, key=lambda e: e[0])[1]
    code = term["exitCode"]
    hint = EXIT_HINTS.get(code) or term.get("reason") or ""
    lines = [line.strip() for line in (term.get("message") or "").splitlines() if line.strip()]
    last = f": {lines[-1][:300]}" if lines else ""
    return f"exit code {code}" + (f" ({hint})" if hint else "") + last


def job_view(job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> JobView:
    meta, status = job["metadata"], job.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    conds = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        state, cond = SUCCEEDED, conds["Complete"]
    elif "Failed" in conds:
        state, cond = FAILED, conds["Failed"]
    else:
        state, cond = ACTIVE, {}
    pending = [_seconds_since(p["metadata"].get("creationTimestamp"), now) for p in pods
               if (p.get("status") or {}).get("phase", "Pending") == "Pending"]
    pending = [p for p in pending if p is not None]
    detail = annotations.get(FAILURE_ANNOTATION) or (pod_failure(pods) if state == FAILED else "")
    message = cond.get("message", "") + (f"; last attempt: {detail}" if detail else "")
    return JobView(name=meta["name"], step=int(labels[STEP_LABEL]), stage=labels[STAGE_LABEL],
                   dataset=labels[DATASET_LABEL], state=state, reason=cond.get("reason", ""),
                   message=message, pending_for=max(pending) if pending else None,
                   reported=REPORTED_ANNOTATION in annotations, detail=detail,
                   suspended=bool((job.get("spec") or {}).get("suspend")) and state == ACTIVE,
                   ran_for=_ran_for(status, cond) if state != ACTIVE else None)


def _ran_for(status: dict[str, Any], ended: dict[str, Any]) -> float | None:
    """An ended Job's startTime to its completionTime (or its end condition's time)."""
    start, end = status.get("startTime"), status.get("completionTime") or ended.get("lastTransitionTime")
    if not start or not end:
        return None
    return _seconds_since(start, dt.datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp())


def recorded_failure(record: dict[str, Any]) -> JobView:
    """The run's recorded failure as the view of its failed Job, for when that Job is gone."""
    return JobView(name=record.get("job", ""), step=int(record["step"]), stage=record["stage"],
                   dataset=record["dataset"], state=FAILED, reason=record.get("reason", ""),
                   message=record.get("message", ""), reported=True)


def dataset_view(ds: dict[str, Any], run: str, run_uid: str | None = None, age: float | None = None) -> DatasetView:
    """Its status counts only if written for this very run object (a re-created run starts over)."""
    status = ds.get("status") or {}
    mine = (status.get("run") == run and status.get("step") is not None
            and status.get("runUid") in (None, run_uid))
    outcome = None
    if mine and status.get("phase") == "Succeeded":
        outcome = "Succeeded"
    elif mine and status.get("phase") == "Failed":
        reason = next((c.get("reason") for c in status.get("conditions") or [] if c["type"] == "StepSucceeded"), None)
        outcome = "NoUsableRecords" if reason == "NoUsableRecords" else None
    return DatasetView(name=ds["metadata"]["name"], created=ds["metadata"].get("creationTimestamp", ""),
                       order=(ds.get("spec") or {}).get("order"), step=status.get("step") if mine else None,
                       outcome=outcome, age=age)


def _retry_step(run: dict[str, Any]) -> int | None:
    raw = (run["metadata"].get("annotations") or {}).get(RETRY_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return -1  # not a step: cleared with a warning


class Reconciler:
    def __init__(self, kube: Kube, cfg: OperatorConfig, events: Events,
                 store_opener: Callable[[str], Store] = open_store, clock: Callable[[], float] = time.time):
        self.kube, self.cfg, self.events = kube, cfg, events
        self.open_store, self.clock = store_opener, clock
        self._owned: set[tuple[str, str | None]] = set()  # (store URI, run uid) claims already checked
        # Whether the API server selects datasets by spec.run (the CRD's selectableFields, Kubernetes
        # >= 1.31); found out on the first refusal, once per process (the passes run in threads).
        self._select_by_run = True
        self._select_lock = threading.Lock()
        # (namespace, run) → {dataset uid: when this process first saw it}. creationTimestamp has
        # one-second resolution and another clock; the arrival window needs neither to be exact.
        self._seen: dict[tuple[str, str], dict[str, float]] = {}

    def reconcile(self, namespace: str, name: str) -> Plan | None:
        run = self.kube.get("lifelongruns", namespace, name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            return None
        try:
            spec = LifelongRunSpec.model_validate(run.get("spec") or {})
        except ValidationError as err:
            self._invalid(run, err)
            return None
        # A dataset being deleted counts only if its step started (our finalizer holds it until the
        # step ends); a queued one simply goes (no finalizer may be added to it any more).
        datasets = [d for d in self.run_datasets(namespace, name)
                    if not d["metadata"].get("deletionTimestamp") or DATASET_FINALIZER in d["metadata"].get("finalizers", [])]
        jobs = self.kube.list("jobs", namespace, labels=f"{RUN_LABEL}={name}")
        uri = spec.storage.uri or self.cfg.store
        store = self.open_store(uri)
        if (uri, run["metadata"].get("uid")) not in self._owned:
            if (why := ownership.refusal(store, run, uri)) is not None:
                self._refuse(run, "StoreInUse", why)
                return None
            self._owned.add((uri, run["metadata"].get("uid")))
        obs = self._observe(run, spec, datasets, jobs, store)
        result = plan(obs)
        self._act(run, result, {d["metadata"]["name"]: d for d in datasets}, {j["metadata"]["name"]: j for j in jobs})
        self._write_status(run, spec, result, datasets, store)
        self._release_jobs(namespace, jobs)
        self._release_datasets(datasets, result)
        return result

    # -- observe ------------------------------------------------------------------------------
    def run_datasets(self, namespace: str, run: str) -> list[dict[str, Any]]:
        """The InstructionDatasets naming `run`, selected by the API server where it can (Kubernetes
        >= 1.31); an older one answers 400 for the unknown field label, and from then on this
        process lists the namespace's datasets and keeps the run's here."""
        found = None
        if self._select_by_run:
            try:
                found = self.kube.list("instructiondatasets", namespace, fields=f"spec.run={run}")
            except KubeError as err:
                if err.status != 400:
                    raise
                with self._select_lock:
                    if self._select_by_run:
                        self._select_by_run = False
                        log.warning("the API server cannot select InstructionDatasets by spec.run (%s): each pass "
                                    "lists every dataset of the namespace instead (Kubernetes >= 1.31 with the "
                                    "CRD's selectableFields avoids it)", err.message)
        if found is None:
            found = self.kube.list("instructiondatasets", namespace)
        # Kept in both cases: what the server sent is checked, not trusted.
        return [d for d in found if (d.get("spec") or {}).get("run") == run]

    def _observe(self, run: dict[str, Any], spec: LifelongRunSpec, datasets: list[dict[str, Any]],
                 jobs: list[dict[str, Any]], store: Store) -> Observation:
        name, now = run["metadata"]["name"], self.clock()
        views = []
        for job in jobs:
            done = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
            # Pods of a running Job (Pending too long?) and of a failed one not yet reported (why?).
            unexplained = "Failed" in done and FAILURE_ANNOTATION not in (job["metadata"].get("annotations") or {})
            pods = self.kube.list("pods", job["metadata"]["namespace"], labels=f"job-name={job['metadata']['name']}") \
                if not done & {"Complete", "Failed"} or unexplained else []
            view = job_view(job, pods, now)
            if view.state == ACTIVE and not pods and not view.suspended:  # refused at admission (quota, ...)?
                view = replace(view, refused=self._refused_pods(job))
            views.append(view)
        recorded = (run.get("status") or {}).get("failure")
        if recorded and not any((v.step, v.stage) == (recorded.get("step"), recorded.get("stage")) for v in views):
            views.append(recorded_failure(recorded))  # its Job was deleted (TTL): still failed
        ages = self._arrival_ages(run["metadata"].get("namespace", ""), name, datasets, now)
        dsv = tuple(dataset_view(d, name, run["metadata"].get("uid"), ages[d["metadata"]["name"]]) for d in datasets)
        next_step = int((run.get("status") or {}).get("nextStep") or 0)
        obs = Observation(run=name, datasets=dsv, jobs=tuple(views), suspended=spec.suspend,
                          retry_step=_retry_step(run), pending_timeout=self.cfg.pending_timeout, next_step=next_step,
                          arrival_window=self.cfg.arrival_window)
        # Markers only for open steps: finished steps are recorded in their dataset's status.
        committed, unusable = set(), set()
        for step, ds in schedule(obs):
            if ds.outcome is not None:
                continue
            for stage in layout.STAGES:
                if self._committed(store, name, step, stage, spec.extract.shards):
                    committed.add((step, stage))
            ingest = self._ingest(store, name, step)
            if ingest is not None and not ingest.get("accepted"):
                unusable.add(step)
            if not any(s == step for s, _ in committed) and not any(j.step == step for j in views):
                break  # the first step with no trace at all: nothing later can have any
        return replace(obs, committed=frozenset(committed), unusable_steps=frozenset(unusable))

    def _arrival_ages(self, namespace: str, run: str, datasets: list[dict[str, Any]], now: float) -> dict[str, float]:
        """Each dataset's age: the younger of its creationTimestamp's and this process's first sight
        of it (after a restart every dataset is new once: at most one window's wait)."""
        before = self._seen.get((namespace, run), {})
        seen, ages = {}, {}
        for d in datasets:
            meta = d["metadata"]
            key = meta.get("uid") or meta["name"]  # a dataset deleted and re-created is a new arrival
            seen[key] = first = before.get(key, now)
            created = _seconds_since(meta.get("creationTimestamp"), now)
            ages[meta["name"]] = now - first if created is None else min(created, now - first)
        self._seen[(namespace, run)] = seen  # only the datasets still there
        return ages

    def _refused_pods(self, job: dict[str, Any]) -> str:
        """The latest FailedCreate Warning the Job controller posted on this Job, or ''."""
        meta = job["metadata"]
        found = [e for e in self.kube.list("events", meta["namespace"],
                                           fields=f"involvedObject.kind=Job,involvedObject.name={meta['name']}")
                 if e.get("reason") == "FailedCreate" and (e.get("involvedObject") or {}).get("uid") in (None, meta.get("uid"))]
        if not found:
            return ""
        latest = max(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return (latest.get("message") or "FailedCreate")[:600]

    @staticmethod
    def _committed(store: Store, run: str, step: int, stage: str, shards: int) -> bool:
        if stage == "extract":
            return all(store.is_committed(layout.shard_prefix(run, step, i, shards)) for i in range(shards))
        return store.is_committed(layout.stage_prefix(run, step, stage))

    @staticmethod
    def _ingest(store: Store, run: str, step: int) -> dict[str, Any] | None:
        prefix = layout.stage_prefix(run, step, "ingest")
        try:
            return store.read_marker(prefix).get("summary") if store.is_committed(prefix) else None
        except StoreError:
            return None

    # -- act ----------------------------------------------------------------------------------
    def _act(self, run: dict[str, Any], result: Plan, datasets: dict[str, dict[str, Any]],
             jobs: dict[str, dict[str, Any]]) -> None:
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        for action in result.actions:
            if isinstance(action, CreateJob):
                fresh = self.kube.get("lifelongruns", ns, name)
                if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                    return  # deleted meanwhile: create nothing it would orphan
                self._hold_dataset(datasets[action.dataset])
                job = build_job(run, action.step, action.stage, datasets[action.dataset], self.cfg)
                result.active_job = job["metadata"]["name"]  # the status names it at once
                try:
                    created = self.kube.create("jobs", ns, job)
                except KubeError as err:
                    if err.status not in REFUSED:
                        raise  # 5xx, timeouts: the next pass tries again
                    self._refused_job(result, action, job["metadata"]["name"], err)
                    continue
                if created:
                    log.info("%s/%s: created Job %s", ns, name, job["metadata"]["name"])
                    self.events.info(run, "StageStarted", f"step {action.step} ({action.dataset}): {action.stage} "
                                                          f"started as Job {job['metadata']['name']}")
            elif isinstance(action, ReportJob):
                j = action.job
                where = f"step {j.step} ({j.dataset}): {j.stage}"
                if j.state == SUCCEEDED:
                    self.events.info(run, "StageSucceeded", f"{where} succeeded (Job {j.name})")
                else:
                    self.events.warn(run, "StageFailed", f"{where} failed (Job {j.name}): {j.reason}: {j.message}")
                notes = {REPORTED_ANNOTATION: j.state, **({FAILURE_ANNOTATION: j.detail} if j.detail else {})}
                self.kube.patch("jobs", ns, j.name, {"metadata": {"annotations": notes}})
            elif isinstance(action, StopJob):
                j = action.job
                if self._delete_job(ns, jobs.get(j.name)):
                    self.events.info(run, "StageStopped", f"step {j.step} ({j.dataset}): spec.suspend is true; deleted "
                                                          f"the running Job {j.name} to free its resources; {j.stage} "
                                                          "runs again from the start on resume")
            elif isinstance(action, DeleteJob):
                self._delete_job(ns, jobs.get(action.job.name))
                self.events.info(run, "RetryStarted", f"step {action.job.step}: deleted failed Job {action.job.name}; "
                                                      f"{action.job.stage} will run again")
            elif isinstance(action, ClearRetry):
                if not action.used:
                    self.events.warn(run, "RetryIgnored", f"{RETRY_ANNOTATION} names no failed step; removed")
                self.kube.patch("lifelongruns", ns, name, {"metadata": {"annotations": {RETRY_ANNOTATION: None}}})

    @staticmethod
    def _refused_job(result: Plan, action: CreateJob, job: str, err: KubeError) -> None:
        """The API server refused the Job itself (validation, webhook, policy, quota): Stuck with the
        server's words and the fields it names; the status is still written and the next pass retries."""
        fields = f" (field{'s' if len(err.fields) > 1 else ''}: {', '.join(err.fields)})" if err.fields else ""
        result.stuck_reason = "JobRefused"
        result.stuck = (f"the API server refused Job {job} ({action.stage}, step {action.step}){fields}: "
                        f"{err.status} {err.reason}: {err.message}")
        result.active_job = None

    def _hold_dataset(self, ds: dict[str, Any]) -> None:
        meta = ds["metadata"]
        held = meta.get("finalizers") or []
        if DATASET_FINALIZER not in held:
            self.kube.patch("instructiondatasets", meta["namespace"], meta["name"],
                            {"metadata": {"finalizers": [*held, DATASET_FINALIZER]}})
            meta["finalizers"] = [*held, DATASET_FINALIZER]

    def _drop_finalizer(self, kind: str, obj: dict[str, Any], finalizer: str) -> None:
        """Remove our finalizer from `obj`; an object already gone needs nothing."""
        meta = obj["metadata"]
        held = meta.get("finalizers") or []
        if finalizer in held:
            try:
                self.kube.patch(kind, meta["namespace"], meta["name"],
                                {"metadata": {"finalizers": [f for f in held if f != finalizer]}})
            except KubeError as err:
                if err.status != 404:
                    raise

    def _release_dataset(self, ds: dict[str, Any]) -> None:
        self._drop_finalizer("instructiondatasets", ds, DATASET_FINALIZER)

    def _release_datasets(self, datasets: list[dict[str, Any]], result: Plan) -> None:
        """A step that is over lets its dataset go; a deleted dataset whose step is not running
        (queued, or failed and now abandoned) goes at once."""
        for ds in datasets:
            state = result.datasets.get(ds["metadata"]["name"])
            over = state is not None and (state.phase == "Succeeded" or state.reason == "NoUsableRecords")
            abandoned = ds["metadata"].get("deletionTimestamp") and (state is None or state.phase in ("Queued", "Failed"))
            if over or abandoned:
                self._release_dataset(ds)

    def _delete_job(self, ns: str, job: dict[str, Any] | None) -> bool:
        if job is None:
            return False  # already gone (TTL): its failure was in the run's status
        self._release(job)
        return self.kube.delete("jobs", ns, job["metadata"]["name"])

    def _release(self, job: dict[str, Any]) -> None:
        self._drop_finalizer("jobs", job, JOB_FINALIZER)

    def _release_jobs(self, ns: str, jobs: list[dict[str, Any]]) -> None:
        """Called after the status write: an ended Job's outcome is durable now (a failure in the
        run's status, a success in the store's markers), so it may go; so may an active Job a user
        deletes (the stage starts again)."""
        for job in jobs:
            conds = {c["type"] for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
            if conds & {"Complete", "Failed"} or job["metadata"].get("deletionTimestamp"):
                self._release(job)

    # -- status -------------------------------------------------------------------------------
    def _write_status(self, run: dict[str, Any], spec: LifelongRunSpec, result: Plan, datasets: list[dict[str, Any]],
                      store: Store) -> None:
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        old = run.get("status") or {}
        measured = self._metrics(store, name, result.step)
        new = st.run_status(result, old, measured, run["metadata"].get("generation"), spec.suspend,
                            retry_hint(name, result.failure.step if result.failure else None))
        self._announce_run(run, old.get("conditions") or [], new["conditions"])
        if (patch := st.merge_patch(old, new)) is not None:
            self.kube.patch("lifelongruns", ns, name, {"status": patch}, status=True)
        for ds in datasets:
            dname, dold = ds["metadata"]["name"], ds.get("status") or {}
            state = result.datasets.get(dname)
            ingest = self._ingest(store, name, state.step) if state and state.step is not None else None
            dnew = st.dataset_status(state, name, dold, ingest, ds["metadata"].get("generation"),
                                     run_uid=run["metadata"].get("uid"))
            if st.flipped(dold.get("conditions") or [], dnew["conditions"]).get("StepSucceeded") == "True":
                self.events.info(ds, "StepSucceeded", f"step {dnew.get('step')} of run {name} finished")
            if state and state.phase == "Failed" and dold.get("phase") != "Failed":
                self.events.warn(ds, state.reason, state.message)
            if (patch := st.merge_patch(dold, dnew)) is not None:
                self.kube.patch("instructiondatasets", ns, dname, {"status": patch}, status=True)

    def _metrics(self, store: Store, run: str, step: int | None) -> dict[str, Any]:
        def read(key: str) -> dict[str, Any] | None:
            try:
                return store.read_json(key) if store.exists(key) else None
            except (StoreError, ValueError):
                return None

        markers = {}
        if step is not None:
            for stage in ("cluster-select", "eval", "prune"):
                prefix = layout.stage_prefix(run, step, stage)
                if store.is_committed(prefix):
                    markers[stage] = store.read_marker(prefix).get("summary") or {}
        return st.metrics(read(layout.summary_key(run)), markers, read(layout.tracking_key(run)))

    def _announce_run(self, run: dict[str, Any], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
        changed = st.flipped(old, new)
        by_type = {c["type"]: c for c in new}
        was = next((c.get("reason") for c in old if c["type"] == "Stuck"), None)
        if changed.get("Stuck") == "True" or (by_type["Stuck"]["status"] == "True" and by_type["Stuck"]["reason"] != was):
            # The condition's reason (Unschedulable, PodsRefused, JobRefused) says what kind of stuck.
            self.events.warn(run, by_type["Stuck"]["reason"], by_type["Stuck"]["message"])
        if changed.get("Suspended") == "True":
            self.events.info(run, "Suspended", by_type["Suspended"]["message"])
        if changed.get("UpToDate") == "True":
            self.events.info(run, "UpToDate", by_type["UpToDate"]["message"])
        if changed.get("Failed") == "True":
            self.events.warn(run, "RunFailed", by_type["Failed"]["message"])

    def _invalid(self, run: dict[str, Any], err: ValidationError) -> None:
        message = "; ".join(error_line(e) for e in err.errors())
        self._refuse(run, "InvalidSpec", message)

    def _refuse(self, run: dict[str, Any], reason: str, message: str) -> None:
        """Failed=True with `reason` (and a Warning once): the run starts nothing until fixed."""
        ns, name = run["metadata"]["namespace"], run["metadata"]["name"]
        old = run.get("status") or {}
        conds = st.set_condition(list(old.get("conditions") or []), "Failed", True, reason, message,
                                 st.now_iso(), run["metadata"].get("generation"))
        new = {**old, "phase": "Failed", "conditions": conds, "observedGeneration": run["metadata"].get("generation")}
        if (patch := st.merge_patch(old, new)) is not None:
            self.events.warn(run, reason, message)
            self.kube.patch("lifelongruns", ns, name, {"status": patch}, status=True)

    # -- deletion -----------------------------------------------------------------------------
    def cleanup(self, namespace: str, name: str) -> int:
        """Delete the run's Jobs (ownerReferences make the cluster do it too; the test emulator has
        no garbage collector) and mark its datasets as orphaned. Returns the number deleted."""
        self._seen.pop((namespace, name), None)
        deleted = 0
        for job in self.kube.list("jobs", namespace, labels=f"{RUN_LABEL}={name}"):
            deleted += self._delete_job(namespace, job)
        for ds in self.run_datasets(namespace, name):
            if not ds["metadata"].get("deletionTimestamp"):
                self.mark_orphan(ds)
            self._release_dataset(ds)  # no run, no step to finish
        return deleted

    def mark_orphan(self, ds: dict[str, Any]) -> None:
        """An InstructionDataset whose run does not exist: condition RunFound=False (+ a Warning once)."""
        old = ds.get("status") or {}
        run = (ds.get("spec") or {}).get("run", "")
        keep = {k: old[k] for k in ("step", "accepted", "rejected") if k in old}
        state = None
        if old.get("phase") in ("Succeeded", "Failed"):  # a finished step stays finished
            cond = next((c for c in old.get("conditions") or [] if c["type"] == "StepSucceeded"), {})
            state = DatasetState(old["phase"], old.get("step"), old.get("stage"), cond.get("reason", ""),
                                 cond.get("message", ""))
        new = st.dataset_status(state, run, old, keep, ds["metadata"].get("generation"), run_found=False,
                                run_uid=old.get("runUid"))
        if st.flipped(old.get("conditions") or [], new["conditions"]).get("RunFound") == "False":
            self.events.warn(ds, "RunNotFound", f"LifelongRun {run!r} does not exist in namespace "
                                                f"{ds['metadata']['namespace']}; the dataset waits for it")
        if (patch := st.merge_patch(old, new)) is not None:
            self.kube.patch("instructiondatasets", ds["metadata"]["namespace"], ds["metadata"]["name"],
                            {"status": patch}, status=True)
