"""Stage 1, extract: per-sample vectors and scores for this shard of the candidate pool.

The pool (old + new data) is cut into `shard_count` contiguous shards; each shard (one pod of
an Indexed Job) writes `grads.npy`, `hidden.npy`, `scores/<scorer>.npy` and `uids.json`.
What is computed follows the strategy's needs, plus hidden states and gradients when the pool
will be pruned (Lite). `extract.gradientSource: zero-order` replaces the backward by forward-only
estimates; `extract.proxyModel` computes everything with a (smaller) proxy model instead, and
then only for samples no earlier step has computed with the same proxy and settings: the
others' features are copied from the store (`feature_reuse.py`; `features_reused` and
`features_computed` in the shard's summary, `origin.npy` the step each row was computed at).
With the trained model, `extract.refresh` other than `every-step` reuses old samples' features
the same way, knowingly stale, and recomputes those its policy picks (`refresh.py`;
`features_refreshed` and `refresh` in the summary).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from adaptinf.data.pool import PoolManifest, load_records
from adaptinf.features.extract import ExtractConfig, extract_features
from adaptinf.model.checkpoints import load_for_step, load_proxy
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import decoder_layers, resolve_layers
from adaptinf.selection import get_strategy

from .context import StageContext, StageError
from . import refresh
from .feature_reuse import ORIGIN, Reused, feature_key, find_reusable, gather
from .ingest import candidate_pool, ingest
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
    scorers = tuple(ctx.spec.scorers) if "scores" in needs else ()
    key = feature_key(ctx, "grads" in needs, "hidden" in needs, scorers)
    refreshing = key is not None and not x.proxy_model   # the trained model's, stale on purpose
    plan = refresh.plan(ctx, key, pool.members, uids) if key and refreshing else \
        refresh.RefreshPlan(find_reusable(ctx, key, uids) if key else Reused(), 0)
    reused = plan.reused
    todo = [u for u in uids if u not in reused.rows]
    if x.proxy_model:
        summary["proxy_model"] = x.proxy_model
    if key:
        summary["feature_key"] = key
    if refreshing:
        summary.update(refresh=refresh.policy(ctx), features_refreshed=plan.refreshed)
    if todo:
        arrays, computed = _computed(ctx, pool, todo, needs, scorers)
        summary.update(computed)
    else:  # everything reused: the proxy is not even loaded; its facts come from the source shard
        arrays = {}
        summary.update({k: reused.summary[k] for k in _MODEL_FACTS if k in reused.summary})
    if reused.rows:
        old = [u for u in uids if u in reused.rows]
        arrays = _merge(uids, todo, arrays, old, gather(ctx, reused, old, reused.files))
    origin = np.array([reused.origin.get(u, ctx.step) for u in uids], dtype=np.int32)
    for name, values in arrays.items():
        ctx.store.write_npy(f"{prefix}/{name}", values)
    if key:
        ctx.store.write_npy(f"{prefix}/{ORIGIN}", origin)
    steps, counts = np.unique(origin, return_counts=True)
    summary.update(features_computed=len(todo), features_reused=len(uids) - len(todo),
                   computed_at={str(int(s)): int(c) for s, c in zip(steps, counts)})
    return summary


# What a shard's summary says about the model and its features, copied when nothing is computed.
_MODEL_FACTS = ("gradient_source", "note", "skipped_scorers", "grad_dim", "layers", "projection_dim")


def _computed(ctx: StageContext, pool: PoolManifest, uids: list[str], needs: set[str],
              scorers: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fused pass over `uids`: the feature files and the summary entries about the model."""
    x = ctx.spec.extract
    summary: dict[str, Any] = {}
    # A proxy model, when given, does the whole fused pass (gradients, hidden states, scores):
    # the trained model is not loaded at all, which is where the saving is.
    bundle = load_proxy(ctx) if x.proxy_model else load_for_step(ctx, adapter_before=ctx.step, trainable=False)
    cfg = ExtractConfig(layers=resolve_layers(x.layers, len(decoder_layers(bundle.model))),
                        projection_dim=x.projection_dim, batch_size=x.batch_size, seed=x.seed,
                        grads="grads" in needs, hidden="hidden" in needs, scorers=scorers,
                        gradient_source=x.gradient_source)
    if cfg.grads:
        summary["gradient_source"] = x.gradient_source
    if not bundle.multimodal and "image-grounding" in cfg.scorers:
        cfg.scorers = tuple(s for s in cfg.scorers if s != "image-grounding")
        summary["note"] = "image-grounding skipped: the model has no vision tower"
        summary["skipped_scorers"] = {"image-grounding": "the model has no vision tower"}
    encoder = Encoder(bundle, x.max_length)
    feats = extract_features(bundle, encoder, load_records(ctx.store, pool, uids), cfg, progress=ctx.progress)
    arrays: dict[str, np.ndarray] = {}
    if feats.grads is not None:
        arrays["grads.npy"] = feats.grads
    if feats.hidden is not None:
        arrays["hidden.npy"] = feats.hidden
    for name, values in feats.scores.items():
        arrays[f"scores/{name}.npy"] = values
    summary.update(grad_dim=feats.grad_dim, layers=cfg.layers,
                   projection_dim=int(feats.grads.shape[1]) if feats.grads is not None else 0)
    return arrays, summary


def _merge(uids: list[str], new: list[str], computed: dict[str, np.ndarray], old: list[str],
           reused: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One array per feature file in shard order, from computed rows (`new`) and reused ones (`old`)."""
    position = {u: i for i, u in enumerate(uids)}
    new_rows, old_rows = [position[u] for u in new], [position[u] for u in old]
    out: dict[str, np.ndarray] = {}
    for name in sorted(set(computed) | set(reused)):
        if new and name not in computed or name not in reused:
            raise StageError(f"extract: {name} is in only one of the computed and the reused features")
        like = reused[name]
        merged = np.empty((len(uids), *like.shape[1:]), dtype=like.dtype)
        merged[old_rows] = like
        if new:
            merged[new_rows] = computed[name]
        out[name] = merged
    return out


def run(ctx: StageContext) -> dict[str, Any]:
    ingest(ctx)
    return run_idempotent("extract", ctx, _body)
