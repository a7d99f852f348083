"""Stage 5, prune: fix the pool after the step, and close the step.

Lite strategies (`prunes_pool`) cut the candidate pool to D by removing the most redundant
samples (hidden-state cosine) inside clusters, largest clusters first (`adaptinf.prune`), with
the spec's `prune` safeguards (a cap per cluster, only same-answer samples redundant) and, as
the paper does, hidden states recomputed with the model after this step's training.
The clusters are the step's pseudo-task clusters from cluster-select. Every strategy then
saves the pool manifest of the step (kept forever, so any step's pool can be rebuilt and
pruned samples listed or restored), `summary.json` is rewritten, and the MLflow child run is
marked FINISHED.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from adaptinf import layout
from adaptinf.data.pool import PoolManifest, PrunedSample, load_records, save_pool
from adaptinf.history import build_summary
from adaptinf.prune import prune_pool
from adaptinf.selection import get_strategy

from .context import StageContext
from .features_io import load_features
from .ingest import candidate_pool
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def _hidden_after_training(ctx: StageContext, pool: PoolManifest) -> np.ndarray:
    """Hidden states of the pool from the model as this step left it (the paper prunes with the
    updated model; extract's hidden states predate this step's training)."""
    from adaptinf.features.extract import ExtractConfig, extract_features
    from adaptinf.model.checkpoints import load_for_step
    from adaptinf.model.encoding import Encoder
    from adaptinf.model.loading import decoder_layers, resolve_layers

    x = ctx.spec.extract
    bundle = load_for_step(ctx, adapter_before=ctx.step + 1, trainable=False)
    cfg = ExtractConfig(layers=resolve_layers(x.layers, len(decoder_layers(bundle.model))),
                        batch_size=x.batch_size, seed=x.seed, grads=False, hidden=True, scorers=())
    feats = extract_features(bundle, Encoder(bundle, x.max_length), load_records(ctx.store, pool),
                             cfg, progress=ctx.progress)
    return feats.hidden


def _answers(ctx: StageContext, pool: PoolManifest) -> list[str]:
    """Each sample's answer text (its gpt turns joined), in pool order."""
    return ["\n".join(v for role, v in r.conversations if role == "gpt") for r in load_records(ctx.store, pool)]


def _pruned_pool(ctx: StageContext, pool: PoolManifest) -> tuple[PoolManifest, dict[str, Any]]:
    budget = ctx.spec.pool_budget
    opts = ctx.spec.prune
    # A proxy model is never trained: its hidden states after the step are extract's.
    if opts.hidden_states == "after-train" and not ctx.spec.extract.proxy_model:
        hidden = _hidden_after_training(ctx, pool)
    else:
        hidden = load_features(ctx, pool).require("hidden", "prune")
    labels_key = f"{ctx.prefix('cluster-select')}/labels.npy"
    labels = ctx.store.read_npy(labels_key) if ctx.store.exists(labels_key) else np.zeros(len(pool.members), int)
    answers = _answers(ctx, pool) if opts.redundancy == "hidden-answer" else None
    result = prune_pool(hidden, labels, budget, max_cluster_fraction=opts.max_cluster_fraction, answers=answers)
    kept = [pool.members[i] for i in result.keep]
    reason = "redundant (hidden-state cosine" + (", same answer)" if answers is not None else ")")
    pruned = [PrunedSample(uid=pool.members[i], step=ctx.step, reason=reason,
                           cluster=int(c), max_sim=None if s is None else round(float(s), 6),
                           nearest=None if j is None else pool.members[j])
              for i, c, s, j in result.removed]
    out = PoolManifest(run=pool.run, step=ctx.step, members=kept, sources=pool.sources,
                       pruned=pool.pruned + pruned, restored=pool.restored)
    return out, {"per_cluster_removed": {str(k): v for k, v in result.per_cluster_removed.items()},
                 "shortfall": result.shortfall, "hidden_states": opts.hidden_states,
                 "redundancy": opts.redundancy, "max_cluster_fraction": opts.max_cluster_fraction}


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    pool = candidate_pool(ctx)
    strategy = get_strategy(ctx.spec.strategy)
    budget = ctx.spec.pool_budget
    detail: dict[str, Any] = {}
    if strategy.prunes_pool and budget is not None and len(pool.members) > budget:
        pool, detail = _pruned_pool(ctx, pool)
    removed = [p for p in pool.pruned if p.step == ctx.step]
    ctx.store.write_json(f"{prefix}/pruned.json", {"budget": budget, "removed": [p.uid for p in removed], **detail})
    save_pool(ctx.store, pool)
    child = ctx.tracker.step_id(ctx.step, ctx.dataset)
    ctx.tracker.log_metrics(child, {"pool_after_prune": len(pool.members), "pruned": len(removed)}, ctx.step)
    return {"pool_size": len(pool.members), "pruned": len(removed)}


def run(ctx: StageContext) -> dict[str, Any]:
    summary = run_idempotent("prune", ctx, _body)
    # Rewritten on every call (also a no-op re-run) so it always reflects the store.
    doc = build_summary(ctx.store, ctx.run, ctx.spec.strategy)
    ctx.store.write_json(layout.summary_key(ctx.run), doc)
    if ctx.tracker.enabled:
        parent = ctx.tracker.parent_id()
        ctx.tracker.log_dict(parent, doc, "summary.json")
        ctx.tracker.finish(ctx.tracker.step_id(ctx.step, ctx.dataset))
    return summary
