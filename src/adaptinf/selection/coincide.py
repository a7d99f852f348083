"""COINCIDE baseline (Lee, Li, Hwang 2024, "Concept-skill Transferability-based Data Selection
for Large Vision-Language Models", EMNLP 2024 Findings, arXiv 2406.10995).

COINCIDE clusters samples into concept-skill compositions and budgets the clusters by how
much each one transfers to the others and how dense (redundant) it is:

1. Features and clusters. The paper concatenates activations of five layers of a small proxy
   VLM (TinyLLaVA-2B) and runs cosine k-means with 10,000 clusters. **Approximation:** here the
   features are the pool's own hidden states as extracted (the target model's mean-pooled
   hidden state of the configured layer(s), docs/method.md §4; configure several layers in the
   extract spec to get closer to the paper), L2-normalised, clustered by
   `selection.embedding.cluster_hidden` (k at the WSS elbow over the run's k range, or the `k`
   option — the paper's ratio is about one cluster per 66 samples).
2. Transferability T_i = mean cosine similarity between centroid i and the other centroids,
   leaving out pairs above `similarity_cap` (0.9 in the public code: near-identical clusters
   are the same concept, not a transfer target). If every other centroid is above the cap, the
   mean over all others is used; a single cluster has T = 0.
3. Density D_i = mean Gaussian kernel exp(−||x − y||² / (2σ²)) over all pairs of cluster i's
   members (self-pairs included, as in the code), σ = `bandwidth`.
4. Cluster weight softmax(T_i / D_i / τ). (T / D favours sparse, well-connected clusters only
   while T > 0, as with the paper's activations; for a cluster with negative T a higher
   density raises the score. Mean-pooled hidden states are usually anisotropic enough that
   centroid cosines are positive; the report lists T and D per cluster to check.)
   The public code walks the clusters by decreasing weight taking
   round(remaining · renormalised weight) each, capped at the cluster size,
   which can fall short of the budget at the end; here the same capped proportional split is
   solved exactly (`primitives.proportional_quotas`), so the total is exactly T.
5. Inside a cluster, greedy MMD prototypes (Kim et al. 2016, MMD-critic, the paper's choice):
   repeatedly add the member that minimises MMD² between the selected set and the whole
   cluster under the same kernel. This is exact, not approximated: the public code re-forms
   every candidate set (O(q·m·q²) per cluster); here running sums make each step O(m).
   Ties go to the lower pool index.

Deterministic given the clustering: a seed only changes k-means. Defaults σ = 1 and τ = 1 are
the public code's argument defaults; on unit-norm features squared distances lie in [0, 4],
so σ = 1 keeps the kernel informative. Set them via spec.strategyOptions (ctx.options).
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register, sorted_unique
from adaptinf.selection.embedding import chunked_rows, cluster_hidden, unit_rows
from adaptinf.selection.primitives import proportional_quotas, softmax


def transferability(centroids: np.ndarray, cap: float = 0.9) -> np.ndarray:
    """Mean cosine similarity of each centroid to the others, ignoring pairs above `cap`."""
    k = len(centroids)
    if k < 2:
        return np.zeros(k)
    cn = unit_rows(centroids)
    sim = cn @ cn.T
    off = ~np.eye(k, dtype=bool)
    keep = off & (sim <= cap)
    fallback = keep.sum(axis=1) == 0            # every other centroid is a near-duplicate
    keep[fallback] = off[fallback]
    return (sim * keep).sum(axis=1) / keep.sum(axis=1)


def _kernel_block(xa: np.ndarray, xb: np.ndarray, sq_a: np.ndarray, sq_b: np.ndarray,
                  bandwidth: float) -> np.ndarray:
    d2 = np.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * (xa @ xb.T), 0.0)
    return np.exp(-d2 / (2.0 * bandwidth**2))


def kernel_column_sums(x: np.ndarray, bandwidth: float) -> np.ndarray:
    """Σ_j K(x_i, x_j) for every i, blockwise (memory linear in the number of rows)."""
    x = x.astype(np.float64)
    sq = (x * x).sum(axis=1)
    out = np.empty(len(x))
    for rows in chunked_rows(len(x)):
        out[rows] = _kernel_block(x[rows], x, sq[rows], sq, bandwidth).sum(axis=1)
    return out


def greedy_mmd_prototypes(x: np.ndarray, quota: int, bandwidth: float) -> np.ndarray:
    """Local indices of `quota` greedy MMD prototypes of the rows of x, in selection order.

    With S the selected set (size t), m rows and K the Gaussian kernel,
    MMD²(S) = mean K(X, X) + Σ_{S×S} K / t² − 2 Σ_{X×S} K / (m t).
    Adding candidate c changes the sums by 2·a_c + K(c, c) and colsum_c, where a_c =
    Σ_{s∈S} K(c, s) is kept up to date with one kernel column per step.
    """
    m = len(x)
    quota = int(min(max(quota, 0), m))
    if quota == m:
        return np.arange(m)
    x = x.astype(np.float64)
    sq = (x * x).sum(axis=1)
    colsum = kernel_column_sums(x, bandwidth)
    kxx = colsum.sum() / m**2
    a = np.zeros(m)
    ss = xs = 0.0
    taken = np.zeros(m, dtype=bool)
    chosen: list[int] = []
    for t in range(quota):
        yy = (ss + 2.0 * a + 1.0) / (t + 1) ** 2          # K(c, c) = 1 for a Gaussian kernel
        xy = (xs + colsum) / (m * (t + 1))
        mmd = kxx + yy - 2.0 * xy
        mmd[taken] = np.inf
        c = int(np.argmin(mmd))                            # first minimum: lowest index
        chosen.append(c)
        taken[c] = True
        ss += 2.0 * a[c] + 1.0
        xs += colsum[c]
        a += _kernel_block(x, x[c:c + 1], sq, sq[c:c + 1], bandwidth)[:, 0]
    return np.array(chosen, dtype=np.int64)


def cluster_density(x: np.ndarray, bandwidth: float) -> float:
    """Mean Gaussian kernel over all ordered pairs (self-pairs included) of the rows of x."""
    return float(kernel_column_sums(x, bandwidth).sum() / len(x) ** 2)


@register
class Coincide(Strategy):
    """Cluster budgets from softmax(transferability / density / τ), MMD prototypes inside."""
    name = "coincide"
    needs = frozenset({"hidden"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        opts = self.options(ctx)   # checked against adaptinf.strategy_options (bandwidth > 0 ...)
        bandwidth = float(opts["bandwidth"])
        cl = cluster_hidden(feats, ctx, self.name, opts["k"])
        sizes = cl.sizes
        alive = sizes > 0
        n = len(feats)
        budget = int(min(max(ctx.budget, 0), n))

        transfer = np.zeros(cl.k)
        transfer[alive] = transferability(cl.centroids[alive], float(opts["similarity_cap"]))
        density = np.full(cl.k, np.nan)
        for c in np.flatnonzero(alive):
            density[c] = cluster_density(cl.x[cl.members[c]], bandwidth)
        score = np.where(alive, transfer / np.where(alive, density, 1.0), 0.0)
        weights = np.zeros(cl.k)
        weights[alive] = softmax(score[alive], float(opts["temperature"]))
        quotas = proportional_quotas(weights, sizes, budget)

        picked = [cl.members[c][greedy_mmd_prototypes(cl.x[cl.members[c]], int(quotas[c]), bandwidth)]
                  for c in range(cl.k) if quotas[c] > 0]
        indices = sorted_unique(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)

        def _clean(v: np.ndarray) -> list[float | None]:
            return [float(a) if np.isfinite(a) else None for a in v]

        report = {
            "strategy": self.name, "budget": int(ctx.budget), "pool_size": n, "selected": int(indices.size),
            **cl.report(),
            "quotas": quotas.tolist(),
            "transferability": _clean(transfer), "density": _clean(density), "weights": _clean(weights),
            "options": opts,
            "notes": [],
        }
        return SelectionResult(indices=indices, report=report, labels=cl.labels)
