"""Shared pieces of the embedding baselines (SemDeDup, density-based pruning, COINCIDE).

All three cluster the pool's hidden-state features and then decide, per cluster, how many
samples to keep and which. What they share lives here:

- `cluster_hidden`: L2-normalised hidden states, k-means (faiss, `adaptinf.clustering`), k at
  the WSS elbow over the run's k range unless a strategy option fixes k. All three papers
  cluster unit vectors with cosine ("spherical") k-means; Euclidean k-means on unit vectors is
  the same objective up to the centroid norm and is what `adaptinf.clustering` provides.
  Using the run's k range gives every cluster-based strategy the same clustering budget, so a
  comparison isolates features and allocation rules (the papers use far more clusters on far
  bigger pools: 50k for SemDeDup on LAION, 10k for COINCIDE on LLaVA-665K).
- `hardness_order`: a cluster's members from farthest to nearest to the centroid (SemDeDup's
  default `keep_hard` ordering, also Sorscher et al.'s self-supervised prototype metric).
- `semdedup_redundancy`: SemDeDup's M, each member's highest cosine similarity to a member
  earlier in that order.
- `cosine_sims_to`, `chunked_rows`: blockwise similarity helpers that keep memory linear in the
  cluster size.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from adaptinf.clustering import choose_k, kmeans
from adaptinf.prune import l2_normalise
from adaptinf.selection.base import PoolFeatures, SelectionContext

ROW_BLOCK = 256  # rows per similarity block: a block is ROW_BLOCK x cluster size float64s


@dataclass
class EmbeddingClusters:
    """Unit-norm features and their clustering."""
    x: np.ndarray               # (n, h) float32, rows L2-normalised
    k: int
    labels: np.ndarray          # (n,) int64
    centroids: np.ndarray       # (k, h) float32 k-means centroids (not unit norm)
    wss_by_k: dict[int, float]
    members: list[np.ndarray]   # pool indices of each cluster, ascending (may be empty)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(m) for m in self.members], dtype=np.int64)

    def report(self) -> dict:
        """The JSON-serialisable part every embedding baseline reports."""
        return {"k": self.k, "cluster_sizes": self.sizes.tolist(),
                "wss_by_k": {str(k): v for k, v in self.wss_by_k.items()}}


def cluster_hidden(feats: PoolFeatures, ctx: SelectionContext, strategy: str,
                   k: int | None = None) -> EmbeddingClusters:
    """Normalise the pool's hidden states and cluster them (k fixed, or at the WSS elbow)."""
    hidden = feats.require("hidden", strategy)
    if hidden.ndim != 2 or not np.isfinite(hidden).all():
        raise ValueError(f"strategy {strategy!r}: hidden features must be a finite (n, h) matrix")
    x = l2_normalise(hidden)
    if k is None:
        res = choose_k(x, ctx.k_min, ctx.k_max, ctx.seed, ctx.niter, ctx.nredo, ctx.k_rule, ctx.min_gain,
                       ctx.k_sweep)
        k_, labels, centroids, wss_by_k = res.k, res.labels, res.centroids, res.wss_by_k
    else:
        if int(k) < 1:
            raise ValueError(f"strategy {strategy!r}: option k must be >= 1, got {k}")
        k_ = min(int(k), len(x))
        labels, centroids, wss = kmeans(x, k_, ctx.seed, ctx.niter, ctx.nredo)
        wss_by_k = {k_: wss}
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k_ + 1))
    members = [order[bounds[c]:bounds[c + 1]] for c in range(k_)]
    return EmbeddingClusters(x=x, k=k_, labels=labels, centroids=centroids, wss_by_k=wss_by_k,
                             members=members)


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (zero rows stay zero), float64."""
    m = np.asarray(m, dtype=np.float64)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def chunked_rows(n: int, block: int = ROW_BLOCK) -> Iterator[slice]:
    for start in range(0, n, block):
        yield slice(start, min(start + block, n))


def hardness_order(x: np.ndarray, members: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """`members` sorted by cosine distance to the centroid, farthest first (ties: lower index)."""
    if len(members) == 0:
        return members
    c = unit_rows(centroid[None, :])[0]
    dist = 1.0 - x[members].astype(np.float64) @ c
    return members[np.lexsort((members, -dist))]


def semdedup_redundancy(xo: np.ndarray) -> np.ndarray:
    """SemDeDup's M for rows in keep order: M_j = max_{i<j} cos(x_i, x_j); M_0 = -inf.

    A sample is removed by SemDeDup when M_j > 1 − ε: it nearly duplicates a sample that
    comes earlier (is kept in preference). Blockwise, so memory is linear in the cluster size.
    """
    m = len(xo)
    out = np.full(m, -np.inf)
    if m < 2:
        return out
    x64 = xo.astype(np.float64)
    for rows in chunked_rows(m):
        sims = x64[rows] @ x64[: rows.stop].T                    # (block, rows.stop)
        j = np.arange(rows.start, rows.stop)[:, None]
        sims[np.arange(rows.stop)[None, :] >= j] = -np.inf       # only earlier samples count
        out[rows] = sims.max(axis=1)
    return out


def keep_least_redundant(xo: np.ndarray, quota: int) -> np.ndarray:
    """Positions (into the keep order) of the `quota` least redundant rows by SemDeDup's M.

    Equivalent to SemDeDup inside one cluster with ε set so that exactly `quota` survive;
    ties keep the earlier (harder) sample.
    """
    m_vals = semdedup_redundancy(xo)
    order = np.lexsort((np.arange(len(xo)), m_vals))
    return np.sort(order[:quota])
