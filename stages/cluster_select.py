"""Stage 2, cluster-select: merge the extract shards and choose this step's training subset.

At step 0 of a run whose base is instruction-tuned first (`model.initialTuning`), the whole
first dataset is the training set (it plays LLaVA-665K's role in the paper); the strategy
still runs for its clusters and report. Otherwise the strategy picks at most T samples (T − R
with the repair pass on: `training.repair`, adaptinf.training.repair).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from adaptinf.selection import SelectionContext, get_strategy
from adaptinf.spec import selection_budget

from .context import StageContext
from .features_io import feature_provenance, load_features, skipped_scorers
from .ingest import candidate_pool, previous_pool
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def initial_tuning_step(ctx: StageContext) -> bool:
    """The run's first step that has data (a step whose dataset was unusable does not count)."""
    return ctx.spec.model.initial_tuning != "none" and previous_pool(ctx).step < 0


def selection_context(ctx: StageContext, scorers: tuple[str, ...]) -> SelectionContext:
    """The SelectionContext of this step from the spec's clustering and selection sections."""
    c, sel = ctx.spec.clustering, ctx.spec.selection
    return SelectionContext(
        budget=selection_budget(ctx.spec), seed=ctx.spec.seed + c.seed + ctx.step, k_min=c.k_min, k_max=c.k_max,
        niter=c.niter, scorers=scorers, nredo=c.nredo, k_rule=c.k_rule, min_gain=c.min_gain, k_sweep=c.sweep,
        stability_seeds=c.stability_seeds, cluster_features=c.features, ccs_bin_rule=sel.ccs_bin_rule,
        ccs_bins=sel.ccs_bins, budget_split=sel.budget_split, diffuse=sel.diffuse,
        diffuse_ratio=sel.diffuse_ratio, mastered=sel.mastered, mastered_loss=sel.mastered_loss,
        mastered_budget=sel.mastered_budget,
        mastered_rehearsal=sel.mastered_rehearsal, options=dict(ctx.spec.strategy_options))


def run_params(ctx: StageContext) -> dict[str, Any]:
    """The parent MLflow run's params: the spec, with the strategy's options in effect (its
    defaults too, as for every other field) rather than only the ones the spec sets."""
    return {**ctx.spec.to_dict(), "strategyOptions": ctx.spec.effective_strategy_options()}


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    pool = candidate_pool(ctx)
    feats = load_features(ctx, pool)
    strategy = get_strategy(ctx.spec.strategy)
    sel_ctx = selection_context(ctx, tuple(s for s in ctx.spec.scorers if s in feats.scores))
    result = strategy.select(feats, sel_ctx)
    indices = result.indices
    if initial_tuning_step(ctx):
        indices = np.flatnonzero(feats.is_new)
        result.report["note"] = "step 0: initial instruction tuning on the whole first dataset"
    selected = [feats.uids[i] for i in indices]
    if result.labels is not None:
        ctx.store.write_npy(f"{prefix}/labels.npy", result.labels.astype(np.int64))
    report = {**result.report, "pool_size": len(feats), "selected": len(selected),
              "selected_new": int(feats.is_new[indices].sum()) if len(indices) else 0}
    report["features"] = feature_provenance(ctx, selected)
    skipped = {s: why for s, why in skipped_scorers(ctx).items() if s in ctx.spec.scorers}
    if skipped:  # e.g. image-grounding on a language-only model: a note, not an error
        report["skipped_scorers"] = skipped
    ctx.store.write_json(f"{prefix}/selection.json", {"selected": selected, "report": report})
    child = ctx.tracker.step_id(ctx.step, ctx.dataset)
    ctx.tracker.log_params(child, {"dataset": ctx.dataset, "strategy": strategy.name, "step": ctx.step})
    ctx.tracker.log_dict(child, report, "selection_report.json")
    # The pool selection saw (before this step's pruning); prune logs pool_after_prune.
    ctx.tracker.log_metrics(child, {"candidate_pool_size": len(feats), "selected": len(selected),
                                    "k": report.get("k") or 0}, ctx.step)
    return {"pool_size": len(feats), "selected": len(selected), "k": report.get("k"), "mlflow_run_id": child}


def run(ctx: StageContext) -> dict[str, Any]:
    if ctx.tracker.enabled:
        ctx.tracker.parent_id(params=run_params(ctx))
    return run_idempotent("cluster-select", ctx, _body)
