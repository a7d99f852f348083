"""Refresh policies for the trained model's features (`extract.refresh`): which old samples a
step recomputes, and which it takes from the step that last computed them.

The trained model changes at every step, so a reused feature is stale: it was computed with an
older adapter. `every-step` (the paper, the default) recomputes the whole pool and never gets
here. The other policies always compute the new dataset and:

- `every-n-steps` (`refreshEvery: N`): recompute an old sample once its features are N steps
  old (computed at step s, recomputed at step s + N), so no feature is older than N − 1 steps.
  Each sample ages on its own, so the datasets of different steps are refreshed at different
  steps and the cost is spread out rather than a whole-pool pass every N steps.
- `fraction` (`refreshFraction: f`): recompute round(f · n) of the n old samples, spread over
  the previous step's clusters in proportion to their sizes (largest remainders), the stalest
  first inside a cluster, ties in a seeded random order (`spec.seed` and the step). Samples the
  previous step did not cluster (restored after pruning) form one more stratum.

Every decision depends only on what earlier steps committed (markers, `uids.json`,
`origin.npy`, `labels.npy`), never on this step's partial outputs: every extract shard takes
the same decisions, and a step retried after a crash takes them again identically.

Features computed at the run's initial-tuning step (`model.initialTuning`, the first step with
data) predate that tuning, which replaces the base (full) or trains the adapter on the whole
first dataset (lora): they are never reused, so the first step after it recomputes everything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adaptinf import layout

from .context import StageContext
from .feature_reuse import Reused, find_reusable

# Mixed into the fraction policy's seed so that its draw is not the one of another seeded use.
_SALT = 0x5EF5


@dataclass
class RefreshPlan:
    """Which rows of a shard are reused, and how many old samples the policy recomputed."""
    reused: Reused
    refreshed: int       # old samples with reusable features that the policy recomputes anyway

    @staticmethod
    def none() -> RefreshPlan:
        return RefreshPlan(Reused(), 0)


def policy(ctx: StageContext) -> dict[str, object]:
    """The policy in effect as recorded in summaries and reports."""
    x = ctx.spec.extract
    out: dict[str, object] = {"policy": x.refresh}
    if x.refresh_every is not None:
        out["every"] = x.refresh_every
    if x.refresh_fraction is not None:
        out["fraction"] = x.refresh_fraction
    return out


def plan(ctx: StageContext, key: str, members: list[str], uids: list[str]) -> RefreshPlan:
    """The reuse plan of a shard holding `uids` of the pool `members` under the spec's policy."""
    x = ctx.spec.extract
    if x.refresh == "every-n-steps":
        assert x.refresh_every is not None   # ExtractSpec._refresh_parameters
        found = _after_initial_tuning(ctx, find_reusable(ctx, key, uids))
        stale = {u for u, s in found.origin.items() if ctx.step - s >= x.refresh_every}
        return RefreshPlan(_without(found, stale), len(stale))
    if x.refresh == "fraction":
        assert x.refresh_fraction is not None
        # The draw is over the whole old pool (not this shard's part): every shard computes the
        # same draw and keeps its own samples of it.
        found = _after_initial_tuning(ctx, find_reusable(ctx, key, members))
        old = [u for u in members if u in found.rows]
        strata = previous_clusters(ctx, old)
        origin = np.array([found.origin[u] for u in old], dtype=np.int64)
        chosen = stratified_draw(strata, origin, x.refresh_fraction, (ctx.spec.seed, ctx.step, _SALT))
        refreshed = {old[i] for i in chosen}
        mine = set(uids)
        return RefreshPlan(_without(found, refreshed | (set(found.rows) - mine)), len(refreshed & mine))
    raise ValueError(f"extract.refresh {x.refresh!r} has no reuse plan")


def _after_initial_tuning(ctx: StageContext, found: Reused) -> Reused:
    """`found` without the rows computed at or before the initial-tuning step (the run's first
    step with data, which trains the base before any selection step)."""
    if ctx.spec.model.initial_tuning == "none":
        return found
    first = next((s for s in range(ctx.step) if ctx.store.exists(layout.pool_key(ctx.run, s))), None)
    if first is None:
        return found
    return _without(found, {u for u, s in found.origin.items() if s <= first})


def _without(found: Reused, drop: set[str]) -> Reused:
    keep = [u for u in found.rows if u not in drop]
    return Reused(rows={u: found.rows[u] for u in keep}, origin={u: found.origin[u] for u in keep},
                  summary=found.summary, files=found.files)


def stratified_draw(strata: np.ndarray, origin: np.ndarray, fraction: float,
                    seed: tuple[int, ...]) -> np.ndarray:
    """Indices of round(fraction · n) samples, each stratum's share by largest remainders (ties
    to the smaller label), the smallest `origin` (stalest) first inside a stratum, ties in a
    seeded random order. Sorted."""
    n = len(strata)
    total = math.floor(fraction * n + 0.5)
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    labels, sizes = np.unique(strata, return_counts=True)
    exact = sizes * total / n    # shares summing to `total` exactly
    quota = np.floor(exact).astype(np.int64)
    short = total - int(quota.sum())
    order = sorted(range(len(labels)), key=lambda j: (-(exact[j] - quota[j]), labels[j]))
    for j in order[:short]:
        quota[j] += 1
    tiebreak = np.random.default_rng(list(seed)).permutation(n)
    picked: list[np.ndarray] = []
    for label, q in zip(labels, quota):
        members = np.flatnonzero(strata == label)
        ranked = members[np.lexsort((tiebreak[members], origin[members]))]
        picked.append(ranked[:q])
    return np.sort(np.concatenate(picked))


def previous_clusters(ctx: StageContext, uids: list[str]) -> np.ndarray:
    """Each sample's cluster at the latest earlier step that clustered its pool (cluster-select's
    `labels.npy`); one more label for samples it did not cluster, all one stratum without any."""
    for step in range(ctx.step - 1, -1, -1):
        prefix = layout.stage_prefix(ctx.run, step, "cluster-select")
        key = f"{prefix}/labels.npy"
        if not ctx.store.is_committed(prefix) or not ctx.store.exists(key):
            continue
        labels = ctx.store.read_npy(key)
        members = step_uids(ctx, step)
        if len(members) != len(labels):   # cannot happen for a committed step; never guess
            continue
        at = dict(zip(members, labels.tolist()))
        outside = int(labels.max()) + 1 if len(labels) else 0
        return np.array([at.get(u, outside) for u in uids], dtype=np.int64)
    return np.zeros(len(uids), dtype=np.int64)


def step_uids(ctx: StageContext, step: int) -> list[str]:
    """The candidate pool of an earlier step in feature order: its extract shards' uids."""
    prefix = layout.stage_prefix(ctx.run, step, "extract")
    markers = sorted(k for k in ctx.store.list(prefix) if k.endswith("/_COMMITTED.json"))
    if not markers:
        return []
    count = ctx.store.read_json(markers[0])["summary"]["shard"][1]
    out: list[str] = []
    for i in range(count):
        out += ctx.store.read_json(f"{layout.shard_prefix(ctx.run, step, i, count)}/uids.json")
    return out
