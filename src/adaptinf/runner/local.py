"""The local backend: the five stages of every step, in-process, against a local directory.

The same stage code as the Kubernetes Jobs, the same YAML as `kubectl apply`; only the
launcher differs (as in Kubeflow's SDK backends). Re-running with the same workdir resumes:
finished stages are not run again.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from adaptinf import layout
from adaptinf.spec import Resource
from adaptinf.store import LocalStore

log = logging.getLogger(__name__)


def default_tracking(workdir: Path, spec_uri: str | None) -> str:
    """MLFLOW_TRACKING_URI, else the spec's, else a sqlite file in the workdir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or f"sqlite:///{workdir / 'mlflow.db'}"


def ensure_experiment(uri: str, name: str, workdir: Path) -> str:
    """The experiment's id; a new one on a sqlite store keeps its artifacts in the workdir
    (MLflow would use ./mlruns)."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    local = uri.startswith("sqlite:")
    return client.create_experiment(name, artifact_location=(workdir / "mlartifacts").as_uri() if local else None)


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
              progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every dataset as a step; return the run's summary (also at W/<run>/summary.json).

    `strategy`/`seed`/`name` override the spec (the compare command runs variants this way);
    `tracking=False` turns MLflow off, a string is a tracking URI. A joint strategy (multitask)
    trains once, at the last step, on the union of all datasets: the steps before only ingest
    (`_joins_only`).
    """
    from adaptinf.selection import get_strategy
    from adaptinf.stages.ingest import join_pool
    from adaptinf.stages.registry import STAGES, StageError, build_context, stage_function

    workdir = Path(workdir).resolve()
    store = LocalStore(workdir)
    spec = run.resolved_spec()
    spec.storage.uri = str(workdir)
    if strategy is not None:
        spec.strategy = strategy
    if seed is not None:
        spec.seed = seed
    run_name = name or run.name
    uri = None if tracking is False else tracking if isinstance(tracking, str) else \
        default_tracking(workdir, spec.mlflow.tracking_uri)
    if uri and uri.startswith("sqlite:"):
        ensure_experiment(uri, spec.mlflow.experiment, workdir)

    joint = get_strategy(spec.strategy).joint
    for step, ds in enumerate(datasets):
        ctx = build_context(run_name, step, store, spec.to_dict(), ds.name, ds.resolved_spec().to_dict(),
                            progress=progress, tracking=uri or None)
        ctx.tracker.fail_open_runs()  # a run interrupted before: its open child is over
        log.info("step %d: %s (%s)", step, ds.name, ctx.spec.strategy)
        try:
            if joint and _joins_only(ctx, step, len(datasets)):
                log.info("step %d: %s joins the pool (%d samples); %s trains once, at the last step",
                         step, ds.name, join_pool(ctx), ctx.spec.strategy)
                continue
            for stage in STAGES:
                stage_function(stage)(ctx)
        except StageError as err:
            # Bad dataset: its report is in the store; the run goes on with the next one.
            log.error("step %d (%s) skipped: %s", step, ds.name, err)
            ctx.tracker.finish(ctx.tracker.step_id(step, ds.name), "FAILED")
            continue
        except BaseException:
            if ctx.tracker.enabled:
                ctx.tracker.finish(ctx.tracker.step_id(step, ds.name), "FAILED")
            raise
        if on_step is not None:
            on_step(store.read_json(layout.summary_key(run_name))["steps"][-1])
    summary = store.read_json(layout.summary_key(run_name))
    if uri:
        ctx.tracker.finish(ctx.tracker.parent_id())
    return summary
