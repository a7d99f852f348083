"""The local backend: the five stages of every step, in-process, against a local directory.

The same stage code as the Kubernetes Jobs, the same YAML as `kubectl apply`; only the
launcher differs (as in Kubeflow's SDK backends). Re-running with the same workdir resumes:
finished stages are not run again.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from collections.abc import Callable

from adaptinf import layout
from pydantic import ValidationError

from adaptinf.spec import LifelongRunSpec, Resource, SpecError, error_line
from adaptinf.store import LocalStore

from .lock import workdir_lock
from .preflight import check_inputs
from .resume import ResumeRefused, refusal, step_differences
from .resume import restart_from as restart_from_step

log = logging.getLogger(__name__)


def default_tracking(workdir: Path, spec_uri: str | None) -> str:
    """MLFLOW_TRACKING_URI, else the spec's, else a sqlite file in the workdir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or f"sqlite:///{workdir / 'mlflow.db'}"


def ensure_experiment(uri: str, name: str, workdir: Path) -> str:
    """The experiment's id; a new one on a sqlite store keeps its artifacts in the workdir
    (MLflow would use ./mlruns). A tracking server that cannot be reached or refuses the
    request is a SpecError naming it (credentials redacted), found before any compute: before,
    a traceback at step 0 that quoted the URI's password."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from adaptinf.tracking import redact_uri
    _check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        local = uri.startswith("sqlite:")
        return client.create_experiment(name, artifact_location=(workdir / "mlartifacts").as_uri() if local else None)
    except MlflowException as err:
        raise SpecError(f"MLflow tracking at {redact_uri(uri)} refused experiment {name!r}: "
                        f"{redact_uri(str(err.message).splitlines()[0])[:300]}; {_TRACKING_FIX}") from None


_TRACKING_FIX = "fix MLFLOW_TRACKING_URI (or mlflow.trackingUri), or run with --no-mlflow"


def _check_reachable(uri: str) -> None:
    """An http(s) tracking server answers a TCP connection within seconds: MLflow's own client
    retries a refused connection for minutes before failing."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    from adaptinf.tracking import redact_uri
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
        return  # reached through a proxy: a direct connection says nothing
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=10).close()
    except OSError as err:
        raise SpecError(f"MLflow tracking server {redact_uri(uri)} cannot be reached ({err}); "
                        f"start it, or {_TRACKING_FIX}") from None


def _joins_only(ctx: Any, step: int, steps: int) -> bool:
    """A joint run's step that only ingests: not the last one, not the initial tuning (step 0 of a
    base that is instruction-tuned first, which compare shares between strategies), not a step
    that already finished (compare's copied step 0)."""
    if step == steps - 1:
        return False
    if step == 0 and ctx.spec.model.initial_tuning != "none":
        return False
    return not ctx.store.is_committed(layout.stage_prefix(ctx.run, step, "prune"))


def run_local(run: Resource, datasets: list[Resource], workdir: str | Path, *, strategy: str | None = None,
              seed: int | None = None, name: str | None = None, tracking: str | None | bool = True,
              progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None,
              continue_anyway: bool = False, restart_from: int | None = None,
              on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run every dataset as a step; return the run's summary (also at W/<run>/summary.json).

    `strategy`/`seed`/`name` override the spec (the compare command runs variants this way);
    `tracking=False` turns MLflow off, a string is a tracking URI. A workdir that already holds
    the run is resumed only if its recorded specs match the request (else ResumeRefused), unless
    `continue_anyway` (keep the recorded specs of started steps) or `restart_from` (delete that
    step onwards and run it again). `on_step` gets each step's summary row, skipped steps too.
    A joint strategy (multitask) trains once, at the last step, on the union of all datasets:
    the steps before only ingest (`_joins_only`).
    """
    workdir = Path(workdir).resolve()
    store = LocalStore(workdir)
    spec = _overridden(run, workdir, strategy, seed)
    run_name = name or run.name
    uri = None if tracking is False else tracking if isinstance(tracking, str) else \
        default_tracking(workdir, spec.mlflow.tracking_uri)
    requested = [(ds.name, ds.resolved_spec().to_dict()) for ds in datasets]
    with workdir_lock(workdir):
        diffs = step_differences(store, run_name, spec.to_dict(), requested)
        if restart_from is not None:
            diffs = {s: d for s, d in diffs.items() if s < restart_from}
        if diffs and not continue_anyway:
            raise ResumeRefused(refusal(str(workdir), run_name, diffs))
        check_inputs(run, spec)  # a typo in the model path or an eval file: before any compute
        if uri:
            ensure_experiment(uri, spec.mlflow.experiment, workdir)
        if restart_from is not None:
            _restart(store, run_name, restart_from, uri, spec)
        if on_start is not None:
            on_start()
        return _steps(store, run_name, spec, datasets, uri, progress, on_step)


def _overridden(run: Resource, workdir: Path, strategy: str | None, seed: int | None) -> LifelongRunSpec:
    """The run's spec with the command line's overrides, validated like the YAML (an unknown
    `--strategy` is a one-line error naming the known ones, not a traceback mid-run).
    strategyOptions belong to the spec's strategy: another `strategy` runs with its defaults
    (compare runs several strategies from one spec)."""
    spec = run.resolved_spec().to_dict()
    spec["storage"]["uri"] = str(workdir)
    if strategy is not None and strategy != spec["strategy"]:
        if spec.get("strategyOptions"):
            log.info("spec.strategyOptions are %s's: strategy %s runs with its defaults", spec["strategy"], strategy)
        spec["strategy"], spec["strategyOptions"] = strategy, {}
    if seed is not None:
        spec["seed"] = seed
    try:
        return LifelongRunSpec.model_validate(spec)
    except ValidationError as err:
        raise SpecError("; ".join(f"--{e['loc'][0]}: {e['msg'].removeprefix('Value error, ')}"
                                  if e["loc"] and e["loc"][0] in ("strategy", "seed") else
                                  error_line(e) for e in err.errors())) from None


def _restart(store: LocalStore, run: str, step: int, uri: str | None, spec: Any) -> None:
    from adaptinf.tracking import Tracker
    gone = restart_from_step(store, run, step)
    if uri and gone:
        tracker = Tracker(uri, spec.mlflow.experiment, run, store)
        for s in gone:
            tracker.retire_step(s)


def _steps(store: LocalStore, run_name: str, spec: Any, datasets: list[Resource], uri: str | None,
           progress: bool, on_step: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    from adaptinf import progress as progress_label   # not `progress`: that is the flag
    from adaptinf.history import build_summary
    from adaptinf.selection import get_strategy
    from adaptinf.stages.ingest import join_pool
    from adaptinf.stages.registry import STAGES, StageError, build_context, stage_function
    from adaptinf.tracking import Tracker

    joint = get_strategy(spec.strategy).joint
    tracker = Tracker(uri, spec.mlflow.experiment, run_name, store) if uri else None
    summary: dict[str, Any] | None = None
    try:
        for step, ds in enumerate(datasets):
            ctx = build_context(run_name, step, store, spec.to_dict(), ds.name, ds.resolved_spec().to_dict(),
                                progress=progress, tracking=uri or None)
            ctx.tracker.fail_open_runs()  # a run interrupted before: its open child is over
            log.info("step %d: %s (%s)", step, ds.name, ctx.spec.strategy)
            try:
                if joint and _joins_only(ctx, step, len(datasets)):
                    log.info("step %d: %s joins the pool (%d samples); %s trains once, at the last step",
                             step, ds.name, join_pool(ctx), ctx.spec.strategy)
                    if on_step is not None:
                        on_step({"step": step, "dataset": ds.name, "skipped": True,
                                 "reason": "joined the pool (joint training at the last step)"})
                    continue
                for stage in STAGES:
                    with progress_label.labelled(step, stage):
                        stage_function(stage)(ctx)
            except StageError as err:
                # Bad dataset: its report is in the store; the run goes on with the next one.
                log.error("step %d (%s) skipped: %s", step, ds.name, err)
                ctx.tracker.finish(ctx.tracker.step_id(step, ds.name), "FAILED")
            except BaseException:
                if ctx.tracker.enabled:
                    ctx.tracker.finish(ctx.tracker.step_id(step, ds.name), "FAILED")
                raise
            # Rebuilt after every step, a skipped one too: the table and summary.json always agree
            # with the store, and a run whose first step was skipped still has a summary.
            summary = build_summary(store, run_name, ctx.spec.strategy)
            store.write_json(layout.summary_key(run_name), summary)
            if on_step is not None:
                on_step(_row(summary, step))
    except BaseException as err:
        if tracker is not None and store.exists(layout.tracking_key(run_name)):
            # The run stopped on an error (or Ctrl-C): MLflow must not show it RUNNING forever.
            tracker.finish(tracker.parent_id(), "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    if summary is None:  # no dataset at all
        summary = build_summary(store, run_name, spec.strategy)
        store.write_json(layout.summary_key(run_name), summary)
    if tracker is not None:
        tracker.finish(tracker.parent_id())
    return summary


def _row(summary: dict[str, Any], step: int) -> dict[str, Any]:
    """This step's row of summary.json; a skipped step gets a row saying why."""
    for row in summary["steps"]:
        if row["step"] == step:
            return row
    for failed in summary.get("failed_steps", []):
        if failed["step"] == step:
            return {**failed, "skipped": True}
    return {"step": step, "skipped": True, "reason": "not finished"}
