"""Status of LifelongRuns and InstructionDatasets, computed from a plan: pure functions.

Status stays small (KubeRay / Kubeflow Trainer style): the current step and stage, the latest
metrics copied from the store (`<run>/summary.json` and the current step's stage markers), the
MLflow parent run id, `observedGeneration`, and conditions whose `lastTransitionTime` changes
only when their status does. The per-step history lives in the store and MLflow.

Run conditions: Progressing, UpToDate, Suspended, Stuck, Failed.
Dataset conditions: RunFound, StepSucceeded (`kubectl wait --for=condition=StepSucceeded ids/x`).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from .steps import DatasetState, Failure, Plan

RUN_CONDITIONS = ("Progressing", "UpToDate", "Suspended", "Stuck", "Failed")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str,
                  now: str, generation: int | None = None) -> list[dict[str, Any]]:
    """A new list with `type_` set; its lastTransitionTime moves only if its status flips."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type_), None)
    cond = {"type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value
            and old.get("lastTransitionTime") else now}
    if generation is not None:
        cond["observedGeneration"] = generation
    if old is None:
        return [*conditions, cond]
    return [cond if c is old else c for c in conditions]


def flipped(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, str]:
    """{type: new status} for the conditions whose status changed (new ones included)."""
    before = {c["type"]: c.get("status") for c in old or []}
    return {c["type"]: c["status"] for c in new if before.get(c["type"]) != c["status"]}


def _round(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metrics(summary: dict[str, Any] | None, markers: dict[str, dict[str, Any]],
            tracking: dict[str, Any] | None) -> dict[str, Any]:
    """poolSize, selected, avgAcc, forgettingRate, mlflowRunId from what the stages wrote.

    `summary` is `<run>/summary.json` (rewritten after each step's prune); `markers` maps a stage
    of the current step to its marker's `summary`, which is newer while that step runs.
    """
    out: dict[str, Any] = {}
    last = ((summary or {}).get("steps") or [{}])[-1]
    final = (summary or {}).get("final") or {}
    out["poolSize"] = last.get("pool_size")
    out["selected"] = last.get("selected")
    out["avgAcc"] = final.get("avg_acc", last.get("avg_acc"))
    out["forgettingRate"] = final.get("forgetting_rate", last.get("forgetting_rate"))
    select, evaluate, prune = (markers.get(s) or {} for s in ("cluster-select", "eval", "prune"))
    for key, value in (("poolSize", select.get("pool_size")), ("selected", select.get("selected")),
                       ("avgAcc", evaluate.get("avg_acc")), ("forgettingRate", evaluate.get("forgetting_rate")),
                       ("poolSize", prune.get("pool_size"))):
        if value is not None:
            out[key] = value
    out = {k: (int(v) if k in ("poolSize", "selected") else _round(v)) for k, v in out.items() if v is not None}
    run_id = (tracking or {}).get("parent_run_id") or select.get("mlflow_run_id")
    if run_id:
        out["mlflowRunId"] = str(run_id)
    return out


def run_status(plan: Plan, old: dict[str, Any] | None, measured: dict[str, Any], generation: int | None,
               suspended: bool, retry_hint: str, now: str | None = None) -> dict[str, Any]:
    """The LifelongRun's whole new status."""
    now = now or now_iso()
    old = old or {}
    conds = list(old.get("conditions") or [])
    where = f"step {plan.step} ({plan.dataset}) {plan.stage}" if plan.step is not None else ""
    if plan.phase == "Running" and plan.stuck and plan.stuck_reason == "JobRefused":
        progressing = (False, "JobRefused", f"{where}: the API server refused its Job (see the Stuck condition)")
    elif plan.phase == "Running" and plan.awaiting_arrivals is not None:
        progressing = (True, "AwaitingArrivals", f"{where}: starts once no further InstructionDataset "
                                                 "arrives for a moment (datasets applied together run in spec.order)")
    elif plan.phase == "Running":
        progressing = (True, "StageRunning", f"{where}: Job {plan.active_job or 'created'}")
    elif plan.phase == "Queued":
        progressing = (False, "AwaitingAdmission", f"{where}: Job {plan.active_job} waits for its queue to admit it "
                                                   "(spec.suspend is true until then)")
    elif plan.phase == "Pending":
        progressing = (False, "NoDatasets", "no InstructionDataset names this run yet")
    else:
        progressing = (False, plan.phase, f"{where}: {plan.phase.lower()}")
    conds = set_condition(conds, "Progressing", *progressing, now, generation)
    uptodate = plan.phase == "Succeeded"
    conds = set_condition(conds, "UpToDate", uptodate, "AllStepsDone" if uptodate else "StepsPending",
                          f"{plan.steps_completed} step(s) done; waiting for the next InstructionDataset"
                          if uptodate else f"{plan.steps_completed} step(s) done; at {where or 'no step'}",
                          now, generation)
    paused = plan.phase == "Suspended"
    conds = set_condition(conds, "Suspended", paused, "SuspendRequested" if paused else "NotSuspended",
                          f"spec.suspend is true: paused at {where}" if paused else
                          ("spec.suspend is true: pausing once the running stage has sealed its outputs"
                           if suspended else ""),
                          now, generation)
    conds = set_condition(conds, "Stuck", plan.stuck is not None, plan.stuck_reason if plan.stuck else "NotStuck",
                          plan.stuck or "", now, generation)
    failure = plan.failure
    conds = set_condition(
        conds, "Failed", failure is not None, "StageFailed" if failure else "NoFailure",
        f"stage {failure.stage} of step {failure.step} (dataset {failure.dataset}) failed: {failure.reason}: "
        f"{failure.message}. Fix the cause, then: {retry_hint}" if failure else "", now, generation)
    status: dict[str, Any] = {"phase": plan.phase, "stepsCompleted": plan.steps_completed, "conditions": conds,
                              "nextStep": plan.next_step}
    if failure is not None:  # durable: the failed Job itself may be deleted (TTL) before a retry
        status["failure"] = failure_record(failure)
    for key, value in (("step", plan.step), ("stage", plan.stage), ("dataset", plan.dataset),
                       ("observedGeneration", generation)):
        if value is not None:
            status[key] = value
    status.update(measured)
    return status


def failure_record(failure: Failure) -> dict[str, Any]:
    return {"step": failure.step, "stage": failure.stage, "dataset": failure.dataset, "job": failure.job,
            "reason": failure.reason, "message": failure.message[:1024]}


def dataset_status(state: DatasetState | None, run: str, old: dict[str, Any] | None, ingest: dict[str, Any] | None,
                   generation: int | None, run_found: bool = True, now: str | None = None,
                   run_uid: str | None = None) -> dict[str, Any]:
    """An InstructionDataset's whole new status."""
    now = now or now_iso()
    old = old or {}
    conds = list(old.get("conditions") or [])
    conds = set_condition(conds, "RunFound", run_found, "RunFound" if run_found else "RunNotFound",
                          f"LifelongRun {run!r} " + ("found" if run_found else "does not exist in this namespace"),
                          now, generation)
    state = state or DatasetState("Queued", reason="Queued", message=f"waits for LifelongRun {run!r}")
    conds = set_condition(conds, "StepSucceeded", state.phase == "Succeeded", state.reason, state.message,
                          now, generation)
    status: dict[str, Any] = {"run": run, "phase": state.phase, "conditions": conds}
    for key, value in (("runUid", run_uid), ("step", state.step), ("stage", state.stage),
                       ("observedGeneration", generation)):
        if value is not None:
            status[key] = value
    for key in ("accepted", "rejected"):
        if (ingest or {}).get(key) is not None:
            status[key] = int(ingest[key])
    return status


def merge_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch turning `old` into `new` (None for keys to drop); None when equal."""
    old = old or {}
    if old == new:
        return None
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
