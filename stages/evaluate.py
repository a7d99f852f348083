"""Stage 4, eval: per-skill scores of the model after this step, and the run's metrics so far.

Writes `eval/metrics.json` (skills, tasks with a few example answers, avg accuracy, forgetting
rate over the steps evaluated so far: the paper's, and over taught pairs only) and logs per-skill scores with `step=t` to the step's
MLflow child run and the parent run, plus a PNG of per-skill score over time.
"""
from __future__ import annotations

import logging
from typing import Any

from adaptinf import layout
from adaptinf.evaluation.plots import close, skill_curves
from adaptinf.evaluation.suite import evaluate_suite
from adaptinf.history import skill_history
from adaptinf.metrics import average_accuracy, forgetting_rate, forgetting_rate_taught
from adaptinf.model.encoding import Encoder
from adaptinf.training.regimes import regime_for_run

from .context import StageContext
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    if not ctx.spec.eval.suite:
        ctx.store.write_json(f"{prefix}/metrics.json", {"skills": {}, "note": "no eval suite in the run spec"})
        return {"skills": {}, "avg_acc": None, "forgetting_rate": None}
    model = regime_for_run(ctx.spec).eval_model(ctx)   # expansion: every adapter, routed per sample
    result = evaluate_suite(model.bundle, Encoder(model.bundle, ctx.spec.training.max_length), ctx.spec.eval,
                            progress=ctx.progress, answer=model.answer)
    if not result.skills:
        ctx.store.write_json(f"{prefix}/metrics.json", {"skills": {}, "skipped": result.skipped})
        return {"skills": {}, "avg_acc": None, "forgetting_rate": None, "skipped": result.skipped}
    history = [s for t, s in skill_history(ctx.store, ctx.run, ctx.step - 1)] + [result.skills]
    avg = average_accuracy(result.skills)
    forgetting = {"forgetting_rate": forgetting_rate(history), "forgetting_rate_taught": forgetting_rate_taught(history)}
    ctx.store.write_json(f"{prefix}/metrics.json", {"skills": result.skills, "tasks": result.tasks,
                                                    "skipped": result.skipped, "avg_acc": avg, **forgetting,
                                                    **({"routing": model.routing} if model.routing else {})})
    _log(ctx, result.skills, avg, forgetting, result.tasks)
    return {"skills": result.skills, "avg_acc": avg, **forgetting}


def _log(ctx: StageContext, skills: dict[str, float], avg: float, forgetting: dict[str, float], tasks: dict) -> None:
    if not ctx.tracker.enabled:
        return
    metrics = {f"acc.{s}": v for s, v in skills.items()} | {"avg_acc": avg, **forgetting}
    child, parent = ctx.tracker.step_id(ctx.step, ctx.dataset), ctx.tracker.parent_id()
    for run_id in (child, parent):
        ctx.tracker.log_metrics(run_id, metrics, ctx.step)
    ctx.tracker.log_dict(child, tasks, "eval_tasks.json")
    done = skill_history(ctx.store, ctx.run, ctx.step - 1)
    steps = [t for t, _ in done] + [ctx.step]
    datasets = {t: ctx.store.read_json(layout.inputs_key(ctx.run, t))["dataset"] for t, _ in done} | {ctx.step: ctx.dataset}
    metrics = {task.skill: task.metric for task in ctx.spec.eval.suite}
    fig = skill_curves([s for _, s in done] + [skills], steps, title=f"{ctx.run}: per-skill score",
                       metrics=metrics, datasets=datasets, run=ctx.run)
    try:
        ctx.tracker.log_figure(child, fig, "skill_scores.png")
        ctx.tracker.log_figure(parent, fig, "skill_scores.png")
    finally:
        close(fig)


def run(ctx: StageContext) -> dict[str, Any]:
    return run_idempotent("eval", ctx, _body)
