"""SemDeDup baseline (Abbas, Tirumala, Simig, Ganguli, Morcos 2023, "SemDeDup: Data-efficient
learning at web-scale through semantic deduplication", arXiv 2303.09540).

SemDeDup embeds every sample, clusters the embeddings with k-means and, inside each cluster,
orders the members from farthest to nearest to the centroid (its default `keep_hard`). Each
member gets M_j, its highest cosine similarity to a member earlier in that order, and is
removed when M_j > 1 − ε: near-duplicates of samples that are kept anyway go first.

Here the embeddings are the pool's mean-pooled hidden states (docs/method.md §4) and the clusters
those of `selection.embedding.cluster_hidden`. The paper fixes ε and lets the kept count fall
where it may; a training budget needs exactly T, so ε is set implicitly: every sample's M is
computed and the T samples with the lowest M are kept (ties: the earlier sample in its
cluster's order, then the lower pool index), which is SemDeDup at ε = 1 − (highest kept M)
(exact unless that M ties the lowest removed one). Each cluster's first (farthest) member has
no predecessor and is never redundant. The report gives that ε interval and the per-cluster
kept counts ("quotas") the global threshold produced. No randomness beyond k-means: a seed
only changes the clustering.
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register, sorted_unique
from adaptinf.selection.embedding import cluster_hidden, hardness_order, semdedup_redundancy


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@register
class SemDeDup(Strategy):
    """Keep the T least redundant samples by within-cluster cosine similarity."""
    name = "semdedup"
    needs = frozenset({"hidden"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        opts = self.options(ctx)
        cl = cluster_hidden(feats, ctx, self.name, opts["k"])
        n = len(feats)
        budget = int(min(max(ctx.budget, 0), n))
        redundancy = np.full(n, -np.inf)
        rank = np.zeros(n, dtype=np.int64)      # position in the cluster's keep order
        for c, members in enumerate(cl.members):
            order = hardness_order(cl.x, members, cl.centroids[c])
            redundancy[order] = semdedup_redundancy(cl.x[order])
            rank[order] = np.arange(len(order))
        keep_first = np.lexsort((np.arange(n), rank, redundancy))
        indices = sorted_unique(keep_first[:budget])
        max_kept = redundancy[keep_first[budget - 1]] if budget > 0 else -np.inf
        min_removed = redundancy[keep_first[budget]] if budget < n else np.inf
        kept_per_cluster = np.bincount(cl.labels[indices], minlength=cl.k)
        report = {
            "strategy": self.name, "budget": int(ctx.budget), "pool_size": n, "selected": int(indices.size),
            **cl.report(),
            "quotas": kept_per_cluster.tolist(),
            # SemDeDup keeps x iff M(x) <= 1 - eps: the largest eps giving this selection is
            # 1 - max_kept (exact unless max_kept == min_removed, a tie broken by order).
            "max_kept_similarity": _finite_or_none(max_kept),
            "min_removed_similarity": _finite_or_none(min_removed),
            "epsilon": _finite_or_none(1.0 - max_kept),
            "options": opts,
            "notes": [],
        }
        return SelectionResult(indices=indices, report=report, labels=cl.labels)
