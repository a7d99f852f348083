"""Stage 1, extract: per-sample vectors and scores for this shard of the candidate pool.

The pool (old + new data) is cut into `shard_count` contiguous shards; each shard (one pod of
an Indexed Job) writes `grads.npy`, `hidden.npy`, `scores/<scorer>.npy` and `uids.json`.
What is computed follows the strategy's needs, plus hidden states and gradients when the pool
will be pruned (Lite). `extract.gradientSource: zero-order` replaces the backward by forward-only
estimates; `extract.proxyModel` computes everything with a (smaller) proxy model instead.
"""
from __future__ import annotations

import logging
from typing import Any

from adaptinf.data.pool import load_records
from adaptinf.features.extract import ExtractConfig, extract_features
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import decoder_layers, resolve_layers
from adaptinf.selection import get_strategy

from .context import StageContext
from .ingest import candidate_pool, ingest
from .models import load_for_step, load_proxy
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def shard_range(n: int, index: int, count: int) -> tuple[int, int]:
    """Contiguous, balanced [lo, hi) of shard `index` out of `count`."""
    base, extra = divmod(n, count)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def needed_features(ctx: StageContext) -> set[str]:
    strategy = get_strategy(ctx.spec.strategy)
    needs = set(strategy.needs)
    if strategy.prunes_pool and ctx.spec.pool_budget is not None:
        needs |= {"hidden", "grads"}
    if "grads" in needs and ctx.spec.clustering.features == "hidden":
        needs.add("hidden")  # the Table-3 ablation clusters hidden states
    sel = ctx.spec.selection
    if "grads" in needs and sel.mastered == "group" and sel.mastered_rehearsal == "stratified":
        needs.add("hidden")  # the mastered group's rehearsal is stratified by hidden states
    return needs


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    pool = candidate_pool(ctx)
    lo, hi = shard_range(len(pool.members), ctx.shard_index, ctx.shard_count)
    uids = pool.members[lo:hi]
    ctx.store.write_json(f"{prefix}/uids.json", uids)
    needs = needed_features(ctx)
    summary: dict[str, Any] = {"pool_size": len(pool.members), "shard": [ctx.shard_index, ctx.shard_count],
                               "samples": len(uids), "features": sorted(needs)}
    if not needs or not uids:
        return summary
    x = ctx.spec.extract
    # A proxy model, when given, does the whole fused pass (gradients, hidden states, scores):
    # the trained model is not loaded at all, which is where the saving is.
    bundle = load_proxy(ctx) if x.proxy_model else load_for_step(ctx, adapter_before=ctx.step, trainable=False)
    cfg = ExtractConfig(layers=resolve_layers(x.layers, len(decoder_layers(bundle.model))),
                        projection_dim=x.projection_dim, batch_size=x.batch_size, seed=x.seed,
                        grads="grads" in needs, hidden="hidden" in needs,
                        scorers=tuple(ctx.spec.scorers) if "scores" in needs else (),
                        gradient_source=x.gradient_source)
    if cfg.grads:
        summary["gradient_source"] = x.gradient_source
    if x.proxy_model:
        summary["proxy_model"] = x.proxy_model
    if not bundle.multimodal and "image-grounding" in cfg.scorers:
        cfg.scorers = tuple(s for s in cfg.scorers if s != "image-grounding")
        summary["note"] = "image-grounding skipped: the model has no vision tower"
        summary["skipped_scorers"] = {"image-grounding": "the model has no vision tower"}
    encoder = Encoder(bundle, x.max_length)
    feats = extract_features(bundle, encoder, load_records(ctx.store, pool, uids), cfg, progress=ctx.progress)
    if feats.grads is not None:
        ctx.store.write_npy(f"{prefix}/grads.npy", feats.grads)
    if feats.hidden is not None:
        ctx.store.write_npy(f"{prefix}/hidden.npy", feats.hidden)
    for name, values in feats.scores.items():
        ctx.store.write_npy(f"{prefix}/scores/{name}.npy", values)
    summary.update(grad_dim=feats.grad_dim, layers=cfg.layers,
                   projection_dim=int(feats.grads.shape[1]) if feats.grads is not None else 0)
    return summary


def run(ctx: StageContext) -> dict[str, Any]:
    ingest(ctx)
    return run_idempotent("extract", ctx, _body)
