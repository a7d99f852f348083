"""Adapt-∞ and Lite-Adapt-∞ (Maharana et al., ICLR 2025, arXiv 2410.10636; PAPER_NOTES §2–6).

1. Pseudo-task clustering: k-means on the pool's projected, L2-normalised LoRA gradients,
   k at the WSS elbow (`adaptinf.clustering.choose_k`).
2. Budget over clusters: T split uniformly, small clusters give all and pass the rest on
   (`split_budget`).
3. Multi-way selection inside each cluster: among the run's scorers, the one whose trimmed
   histogram has the highest entropy (`choose_scorer`), then CCS on that score (`ccs_sample`).

Lite-Adapt-∞ selects the same way and additionally asks the prune stage to cut the pool to
D afterwards (`adaptinf.prune`), which is why it also needs hidden states.
"""
from __future__ import annotations

import numpy as np

from adaptinf.clustering import choose_k
from adaptinf.selection.base import (PoolFeatures, SelectionContext, SelectionResult, Strategy,
                                     impute_median, register, sorted_unique)
from adaptinf.selection.primitives import ccs_sample, choose_scorer, split_budget


def multiway_sample(scores: dict[str, np.ndarray], idx: np.ndarray, quota: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, str | None, dict[str, float]]:
    """`quota` of the pool indices `idx` by CCS on their highest-entropy applicable score.

    Scores that are NaN for every sample in `idx` are not applicable there; NaN entries of the
    chosen score are imputed with its median. With no applicable score the draw is uniform.
    Returns (selected pool indices, chosen scorer or None, entropy per applicable scorer).
    """
    name, entropies = choose_scorer(scores, idx)
    if name is None:
        local = rng.choice(len(idx), size=min(quota, len(idx)), replace=False)
    else:
        local = ccs_sample(impute_median(np.asarray(scores[name])[idx]), quota, rng)
    return idx[local], name, entropies


@register
class AdaptInf(Strategy):
    """Gradient clusters, uniform budget over them, entropy-chosen scorer + CCS inside."""
    name = "adapt-inf"
    needs = frozenset({"grads", "scores"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)                      # no options: rejects unknown ones
        self.require_all(feats)                # Lite also needs hidden states (for the prune stage)
        grads = feats.require("grads", self.name)
        # Checked before the (costly) clustering: without any score CCS has nothing to stratify.
        scores = feats.require_scores(ctx.scorers, self.name)
        notes = [f"scorer {s!r} was not extracted; skipped" for s in ctx.scorers if s not in feats.scores]
        clusters = choose_k(grads, ctx.k_min, ctx.k_max, ctx.seed, ctx.niter, ctx.nredo)
        sizes = np.bincount(clusters.labels, minlength=clusters.k)
        quotas = split_budget(sizes, ctx.budget)

        picked: list[np.ndarray] = []
        per_cluster: list[dict] = []
        for c in range(clusters.k):
            idx = np.flatnonzero(clusters.labels == c)
            if idx.size == 0:
                continue
            # One generator per cluster: a cluster's draw does not depend on the others'.
            rng = np.random.default_rng([ctx.seed, c])
            chosen, scorer, entropies = multiway_sample(scores, idx, int(quotas[c]), rng)
            if scorer is None:
                notes.append(f"cluster {c}: no applicable scorer; sampled uniformly")
            picked.append(chosen)
            per_cluster.append({"cluster": c, "size": int(idx.size), "quota": int(quotas[c]),
                                "selected": int(chosen.size), "scorer": scorer,
                                "entropies": {k: round(v, 6) for k, v in entropies.items()}})

        indices = sorted_unique(np.concatenate(picked))
        report = {
            "strategy": self.name,
            "budget": int(ctx.budget),
            "pool_size": len(feats),
            "selected": int(indices.size),
            "k": clusters.k,
            "cluster_sizes": [int(s) for s in sizes],
            "quotas": [int(q) for q in quotas],
            "wss_by_k": {str(k): v for k, v in clusters.wss_by_k.items()},
            "scorer_counts": _count([c["scorer"] for c in per_cluster]),
            "clusters": per_cluster,
            "notes": notes,
        }
        return SelectionResult(indices=indices, report=report, labels=clusters.labels)


@register
class LiteAdaptInf(AdaptInf):
    """Adapt-∞ selection, then the pool is pruned to D by hidden-state redundancy."""
    name = "lite-adapt-inf"
    needs = frozenset({"grads", "scores", "hidden"})
    prunes_pool = True


def _count(names: list[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in names:
        key = n if n is not None else "uniform"
        counts[key] = counts.get(key, 0) + 1
    return counts
