"""Reading the extract shards back as one PoolFeatures, in pool order."""
from __future__ import annotations

import numpy as np

from adaptinf import layout
from adaptinf.data.pool import PoolManifest
from adaptinf.selection import PoolFeatures

from .context import StageContext, StageError
from .feature_reuse import ORIGIN


def load_features(ctx: StageContext, pool: PoolManifest) -> PoolFeatures:
    prefix = ctx.prefix("extract")
    markers = sorted(k for k in ctx.store.list(prefix) if k.endswith("/_COMMITTED.json"))
    if not markers:
        raise StageError(f"extract of {ctx.run!r} step {ctx.step} has no finished shard")
    count = ctx.store.read_json(markers[0])["summary"]["shard"][1]
    shards = [layout.shard_prefix(ctx.run, ctx.step, i, count) for i in range(count)]
    missing = [s for s in shards if not ctx.store.is_committed(s)]
    if missing:
        raise StageError(f"extract shards not finished: {missing}")
    uids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {"grads": [], "hidden": []}
    scores: dict[str, list[np.ndarray]] = {}
    for shard in shards:
        files = ctx.store.read_marker(shard)["files"]
        uids += ctx.store.read_json(f"{shard}/uids.json")
        for kind in parts:
            if f"{kind}.npy" in files:
                parts[kind].append(ctx.store.read_npy(f"{shard}/{kind}.npy"))
        for rel in files:
            if rel.startswith("scores/"):
                scores.setdefault(rel[len("scores/"):-len(".npy")], []).append(ctx.store.read_npy(f"{shard}/{rel}"))
    if uids != pool.members:
        raise StageError(f"extract shards cover {len(uids)} samples that do not match the pool of {len(pool.members)}")
    new = {m for m in pool.members if m.split("/", 1)[0] == ctx.dataset}
    return PoolFeatures(
        uids=uids, datasets=[u.split("/", 1)[0] for u in uids],
        is_new=np.array([u in new for u in uids], dtype=bool),
        grads=np.concatenate(parts["grads"]) if parts["grads"] else None,
        hidden=np.concatenate(parts["hidden"]) if parts["hidden"] else None,
        scores={k: np.concatenate(v) for k, v in scores.items()})


def skipped_scorers(ctx: StageContext) -> dict[str, str]:
    """Scorers the extract shards left out, with the reason (e.g. no vision tower)."""
    prefix = ctx.prefix("extract")
    out: dict[str, str] = {}
    for key in sorted(k for k in ctx.store.list(prefix) if k.endswith("/_COMMITTED.json")):
        out.update(ctx.store.read_json(key).get("summary", {}).get("skipped_scorers", {}))
    return out


def feature_provenance(ctx: StageContext, selected: list[str] | None = None) -> dict[str, object]:
    """How many of this step's features were computed and how many reused from earlier steps
    (a fixed proxy model, or the trained model under a refresh policy), and the step each was
    computed at: their staleness. Where features were reused or could be (shards with a feature
    key), also their age in steps, the same for the `selected` samples, and the refresh policy
    with the number of old samples it recomputed; each row's step is in its shard's origin.npy."""
    prefix = ctx.prefix("extract")
    computed = reused = refreshed = 0
    at: dict[str, int] = {}
    keyed: list[str] = []
    policy: dict[str, object] | None = None
    for key in sorted(k for k in ctx.store.list(prefix) if k.endswith("/_COMMITTED.json")):
        summary = ctx.store.read_json(key).get("summary", {})
        computed += int(summary.get("features_computed", summary.get("samples", 0)))
        reused += int(summary.get("features_reused", 0))
        for step, count in summary.get("computed_at", {}).items():
            at[step] = at.get(step, 0) + int(count)
        if "feature_key" in summary:
            keyed.append(key[: -len("/_COMMITTED.json")])
        if "refresh" in summary:
            policy = summary["refresh"]
            refreshed += int(summary.get("features_refreshed", 0))
    out: dict[str, object] = {"computed": computed, "reused": reused,
                              "computed_at_step": dict(sorted(at.items(), key=lambda kv: int(kv[0])))}
    if not keyed:   # every feature computed at this step, as always (the paper's every-step)
        return out
    if policy is not None:
        out.update(refresh=policy, refreshed=refreshed)
    out["age_steps"] = _ages({int(s): c for s, c in at.items()}, ctx.step)
    if selected is not None:
        chosen = set(selected)
        steps: dict[int, int] = {}
        for shard in keyed:
            uids = ctx.store.read_json(f"{shard}/uids.json")
            origin = ctx.store.read_npy(f"{shard}/{ORIGIN}")
            for uid, step in zip(uids, origin.tolist()):
                if uid in chosen:
                    steps[int(step)] = steps.get(int(step), 0) + 1
        out["selected_computed_at_step"] = {str(s): c for s, c in sorted(steps.items())}
        out["selected_age_steps"] = _ages(steps, ctx.step)
    return out


def _ages(computed_at: dict[int, int], step: int) -> dict[str, int]:
    """Samples per age (this step minus the step that computed them), youngest first."""
    return {str(step - s): c for s, c in sorted(computed_at.items(), reverse=True)}
