"""Density-based pruning baseline, "DBP" in the Adapt-∞ paper's Table 2.

Abbas, Rusak, Tirumala, Brendel, Chaudhuri, Morcos 2024, "Effective pruning of web-scale
datasets based on complexity of concept clusters" (ICLR 2024, arXiv 2401.04578), building on
Sorscher et al. 2022, "Beyond neural scaling laws: beating power law scaling via data
pruning" (self-supervised prototypes: k-means on embeddings, distance to the centroid as
difficulty).

1. k-means on the L2-normalised hidden states (`selection.embedding.cluster_hidden`).
2. Cluster complexity C_j = d_intra_j · d_inter_j:
   d_intra_j = mean cosine distance of cluster j's members to its centroid (how spread out
   the concept is); d_inter_j = mean cosine distance from centroid j to its `neighbours`
   nearest other centroids (how isolated it is). Dense, crowded clusters are simple: they
   need few samples. A NaN complexity (a single cluster has no neighbour) is replaced by the
   mean of the others, as in the public code; with no finite value at all the split is uniform.
3. P = softmax(C / τ) over the non-empty clusters; the budget N_j solves the paper's quadratic
   program min ||N − P·T||² s.t. ΣN = T, lower_j <= N_j <= |cluster j| (solved exactly by
   `primitives.shifted_quotas`, rounded to integers summing to T). lower_j is 1 for every
   cluster (capped at its size; 0 if T is smaller than the number of clusters), or
   floor(balance · T / k) with the code's optional "class balance" ratio.
4. Inside a cluster, N_j samples by the `within` rule:
   - "dedup" (default): SemDeDup's order — the N_j least redundant members by within-cluster
     cosine similarity, farthest-from-centroid first on ties. The paper runs SemDeDup over the
     whole data before DBP; redundancy ranking inside the cluster approximates that two-pass
     pipeline with one pass and an exact count.
   - "hard": the N_j members farthest from the centroid (Sorscher et al.'s prototype metric,
     the public code's `which_to_keep=hard`).
   - "random": uniform inside the cluster (`which_to_keep=random`), seeded per cluster.

Defaults: τ = 0.5 (the public code's default), neighbours = 20 (capped at k − 1; our choice —
the notes do not fix it), balance = 0. C's scale depends on the features: for tightly
packed hidden states the products are small and τ = 0.5 makes P nearly uniform, so set τ for
the feature space at hand (spec.strategyOptions, or ctx.options) rather than trusting the default.
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register, sorted_unique
from adaptinf.selection.embedding import cluster_hidden, hardness_order, keep_least_redundant, unit_rows
from adaptinf.selection.primitives import shifted_quotas, softmax


def cluster_complexity(x: np.ndarray, members: list[np.ndarray], centroids: np.ndarray,
                       neighbours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d_intra, d_inter, complexity) per cluster; NaN where undefined (empty cluster, k = 1)."""
    k = len(members)
    cn = unit_rows(centroids)
    d_intra = np.full(k, np.nan)
    for c, m in enumerate(members):
        if len(m):
            d_intra[c] = float(np.mean(1.0 - x[m].astype(np.float64) @ cn[c]))
    d_inter = np.full(k, np.nan)
    alive = np.flatnonzero([len(m) > 0 for m in members])
    nn = min(int(neighbours), len(alive) - 1)
    if nn >= 1:
        dist = 1.0 - cn[alive] @ cn[alive].T
        np.fill_diagonal(dist, np.inf)
        nearest = np.sort(dist, axis=1)[:, :nn]       # the nn smallest distances per centroid
        d_inter[alive] = nearest.mean(axis=1)
    return d_intra, d_inter, d_intra * d_inter


@register
class DensityBased(Strategy):
    """Cluster budgets from softmax(d_intra · d_inter / τ), then a within-cluster rule."""
    name = "density"
    needs = frozenset({"hidden"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        opts = self.options(ctx)   # checked against adaptinf.strategy_options (within, balance ...)
        cl = cluster_hidden(feats, ctx, self.name, opts["k"])
        sizes = cl.sizes
        n = len(feats)
        budget = int(min(max(ctx.budget, 0), n))
        notes: list[str] = []

        d_intra, d_inter, cx = cluster_complexity(cl.x, cl.members, cl.centroids, opts["neighbours"])
        alive = sizes > 0
        finite = alive & np.isfinite(cx)
        if not finite.any():
            cx_used = np.zeros(cl.k)
            notes.append("no cluster complexity is defined (one cluster?): uniform split")
        else:
            cx_used = np.where(np.isfinite(cx), cx, cx[finite].mean())
        probs = np.zeros(cl.k)
        probs[alive] = softmax(cx_used[alive], float(opts["temperature"]))

        floor = max(1, int(float(opts["balance"]) * budget / max(int(alive.sum()), 1)))
        lower = np.minimum(floor, sizes)
        if lower.sum() > budget:
            lower[:] = 0
            notes.append("budget below one sample per cluster: no lower bound")
        quotas = shifted_quotas(probs * budget, lower, sizes, budget)

        picked: list[np.ndarray] = []
        for c, members in enumerate(cl.members):
            q = int(quotas[c])
            if q == 0:
                continue
            order = hardness_order(cl.x, members, cl.centroids[c])
            if opts["within"] == "dedup":
                chosen = order[keep_least_redundant(cl.x[order], q)]
            elif opts["within"] == "hard":
                chosen = order[:q]
            else:
                rng = np.random.default_rng([ctx.seed, c])
                chosen = rng.choice(members, size=q, replace=False)
            picked.append(chosen)
        indices = sorted_unique(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)

        def _clean(v: np.ndarray) -> list[float | None]:
            return [float(a) if np.isfinite(a) else None for a in v]

        report = {
            "strategy": self.name, "budget": int(ctx.budget), "pool_size": n, "selected": int(indices.size),
            **cl.report(),
            "quotas": quotas.tolist(),
            "d_intra": _clean(d_intra), "d_inter": _clean(d_inter), "complexity": _clean(cx),
            "probabilities": _clean(probs),
            "options": opts,
            "notes": notes,
        }
        return SelectionResult(indices=indices, report=report, labels=cl.labels)
