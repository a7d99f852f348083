"""Lite-Adapt-∞ permanent pool pruning (docs/method.md §10).

After a step the pool is cut to a budget D so that extraction cost stops growing with the
stream. Two decisions, both from the paper:

1. How many to remove per cluster: from the largest clusters first until the pool fits D, so
   cluster sizes tend to a uniform level (`removal_counts`, water-filling from the top).
2. Which ones: inside a cluster, by cosine similarity of L2-normalised hidden states,
   repeatedly remove the sample whose maximum similarity to another *kept* sample of its
   cluster is highest — the most redundant one (ties: the higher second-highest similarity,
   then the larger index).

Scaling: the exact greedy needs the full similarity matrix of a cluster (quadratic memory for
clusters of several thousand). Instead each sample keeps its top-K neighbour list from a faiss
IndexFlatIP search over its cluster, sorted by similarity. Only the first two kept entries of
a list matter, and they are certified exact while both are at least the list's bound (no
unlisted sample can be more similar). A list that can no longer certify them is refilled
exactly (twice as long), batched with the other lists closest to running out: one float32
product against the cluster's kept rows proposes candidates, exact similarities are taken only
for those float32 rounding cannot rule out. A max-heap with lazy invalidation orders the
candidates; removing j re-reads (vectorised) only the samples whose top-2 held j.

Similarities are recomputed in float64 from the float32 normalised vectors, one pair at a
time with a fixed operand order, so sim(i, j) is bit-identical however it is reached; faiss
and the refill product (float32) only propose candidates, and their rounding is covered by a
tolerance on the bound. The result therefore equals the brute-force greedy, and the previous
implementation (bench/prune_reference.py) removal for removal (tests check both).
"""
from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

import faiss
import numpy as np

from adaptinf.clustering import faiss_threads

logger = logging.getLogger(__name__)

DEFAULT_NEIGHBOURS = 32
_SIM_CHUNK = 4096  # rows per float64 similarity batch: bounds the temporary memory
_REFILL_FACTOR = 2  # a refilled neighbour list is this many times `neighbours` long
_REFILL_BATCH = 32  # lists refilled by one float32 matrix product
_COMPACT_AT = 0.75  # the refill product drops removed rows once they are a quarter of it


@dataclass
class PruneResult:
    """The kept pool and an account of every removal."""
    keep: np.ndarray                                             # sorted kept pool indices
    removed: list[tuple[int, int, float | None, int | None]]     # (index, cluster, max_sim, nearest_index),
    #                                                              in removal order; None: no kept neighbour
    per_cluster_removed: dict[int, int]                          # cluster label -> samples removed
    shortfall: int = 0                                           # samples kept above the target by the caps


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def pair_sims(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows a[t] and b[t] of normalised x, in float64, symmetric by construction.

    Pass x already in float64 where it is called repeatedly: the conversion of the gathered
    rows was over half of the pruning time (the values are the same either way)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    out = np.empty(len(lo), dtype=np.float64)
    for s in range(0, len(lo), _SIM_CHUNK):
        sl = slice(s, s + _SIM_CHUNK)
        out[sl] = np.einsum("ij,ij->i", x[lo[sl]].astype(np.float64, copy=False),
                            x[hi[sl]].astype(np.float64, copy=False))
    return out


def removal_counts(sizes: np.ndarray, excess: int, capacity: np.ndarray | None = None) -> np.ndarray:
    """How many to remove from each cluster: water-filling from the largest down.

    Finds the lowest level L such that cutting every cluster down to L (never below what it
    must keep, `sizes - capacity`) removes at least `excess`; clusters are cut to L + 1, and
    the last few removals go to the clusters that can still give one at level L, largest
    original size first, then lowest position. Removes exactly min(excess, capacity.sum()).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    cap = sizes.copy() if capacity is None else np.minimum(np.asarray(capacity, dtype=np.int64), sizes)
    if excess <= 0:
        return np.zeros_like(sizes)
    if cap.sum() <= excess:
        return cap

    def cut(level: int) -> np.ndarray:
        return np.minimum(cap, np.maximum(sizes - level, 0))

    lo, hi = 0, int(sizes.max())  # cut(lo).sum() >= excess > cut(hi).sum() == 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cut(mid).sum() >= excess:
            lo = mid
        else:
            hi = mid
    counts = cut(lo + 1)
    can_give = np.flatnonzero(cut(lo) > counts)
    order = np.lexsort((can_give, -sizes[can_give]))
    counts[can_give[order[: excess - int(counts.sum())]]] += 1
    return counts


class _ClusterGreedy:
    """The greedy removal inside one cluster, over local indices 0..m-1.

    Each sample holds a list of up to `width` neighbours sorted by exact similarity and a bound
    that no unlisted kept sample exceeds; its top two kept entries are exact while the second
    is at least the bound. After a removal, the samples whose top two held the removed one are
    re-read together (numpy over rows). A list that can no longer certify its top two is
    refilled, together with the other lists closest to running out (a list stays valid however
    early it is refilled, since the kept set only shrinks): one float32 matrix product of the
    cluster's kept rows (kept compact, so it gets cheaper as the cluster shrinks) against the
    batch proposes candidates, and only those that float32 rounding cannot rule out get exact
    similarities, so each refilled list and its bound are exact.
    """

    def __init__(self, x: np.ndarray, protected: np.ndarray, neighbours: int):
        m, h = x.shape
        self.x32 = x
        self.x = x.astype(np.float64)  # converted once; every exact similarity reads it
        self.protected = protected
        self.kept = np.ones(m, dtype=bool)
        self.n_kept = m
        k = min(neighbours, m - 1)
        # A refilled list is longer than the first one, so that it runs out later. Any width
        # gives the same removals: the lists are exact.
        self.width = max(1, min(m - 1, _REFILL_FACTOR * k))
        # float32 inner products of unit vectors err by at most ~h·2⁻²⁴ (faiss and BLAS alike).
        self.tol = 2.0 * h * 2.0**-24 + 1e-9
        index = faiss.IndexFlatIP(h)
        index.add(x)
        with faiss_threads(float(m) * m * h):
            fsim, fids = index.search(x, k + 1)
        is_self = fids == np.arange(m)[:, None]
        is_self[~is_self.any(axis=1), -1] = True  # self outranked by exact duplicates: drop the last
        ids = fids[~is_self].reshape(m, k).astype(np.int64)
        sims = pair_sims(self.x, np.repeat(np.arange(m), k), ids.ravel()).reshape(m, k)
        order = np.argsort(-sims, axis=1, kind="stable")
        self.ids = np.full((m, self.width), -1, dtype=np.int64)
        self.sims = np.full((m, self.width), -np.inf)
        self.ids[:, :k] = np.take_along_axis(ids, order, axis=1)
        self.sims[:, :k] = np.take_along_axis(sims, order, axis=1)
        complete = k == m - 1
        # Any sample not in i's list has faiss similarity <= the last one returned for i.
        self.bound = np.full(m, -np.inf) if complete else fsim[:, -1].astype(np.float64) + self.tol
        self.complete = np.full(m, complete)
        self.left = np.full(m, k)  # kept entries in i's list when last read (which lists to refill early)
        self.top = np.full((m, 2), -1, dtype=np.int64)  # current top-2 kept neighbours of i
        self.version = np.zeros(m, dtype=np.int64)
        self.heap: list[tuple[float, float, int, int]] = []
        self.live = np.arange(m)  # a superset of the kept samples, and their rows, compact
        self.live_x = x

    def _top2(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Exact (max, second, argmax, arg-second) similarity to kept samples for each of `rows`,
        refilling the lists that cannot certify their second entry."""
        v1, v2, n1, n2, stale = self._read_top2(rows)
        if stale.any():
            self._refill(rows[stale])
            v1[stale], v2[stale], n1[stale], n2[stale], _ = self._read_top2(rows[stale])
        return v1, v2, n1, n2

    def _read_top2(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        ids = self.ids[rows]
        alive = (ids >= 0) & self.kept[ids]          # ids of -1 read kept[-1]; masked by ids >= 0
        seen = np.cumsum(alive, axis=1)
        has1, has2 = seen[:, -1] >= 1, seen[:, -1] >= 2
        p, q = np.argmax(seen >= 1, axis=1), np.argmax(seen >= 2, axis=1)
        sims = self.sims[rows]
        r = np.arange(len(rows))
        v1 = np.where(has1, sims[r, p], -np.inf)
        v2 = np.where(has2, sims[r, q], -np.inf)
        n1 = np.where(has1, ids[r, p], -1)
        n2 = np.where(has2, ids[r, q], -1)
        stale = ~self.complete[rows] & (~has2 | (v2 < self.bound[rows]))
        self.left[rows] = seen[:, -1]
        return v1, v2, n1, n2, stale

    def _refill(self, rows: np.ndarray) -> None:
        """Fresh exact lists for `rows` and, in the same product, for the lists nearest to running out."""
        if self.n_kept < _COMPACT_AT * len(self.live):  # drop removed rows: later products get cheaper
            self.live = np.flatnonzero(self.kept)
            self.live_x = np.ascontiguousarray(self.x32[self.live])
        spare = _REFILL_BATCH - len(rows)
        if spare > 0:
            low = self.kept & ~self.protected & ~self.complete & (self.left <= self.width // 4)
            low[rows] = False
            others = np.flatnonzero(low)
            if len(others) > spare:
                others = others[np.argpartition(self.left[others], spare)[:spare]]
            rows = np.concatenate([rows, others])
        gone = ~self.kept[self.live]
        w = self.width
        for s in range(0, len(rows), _REFILL_BATCH):
            batch = rows[s: s + _REFILL_BATCH]
            approx = self.x32[batch] @ self.live_x.T           # (batch, live) float32
            approx[:, gone] = -np.inf
            approx[np.arange(len(batch)), np.searchsorted(self.live, batch)] = -np.inf  # self
            if self.n_kept - 1 <= w:
                kth = np.full(len(batch), -np.inf)
            else:
                cut = approx.shape[1] - w
                kth = np.partition(approx, cut, axis=1)[:, cut].astype(np.float64)
            for c, i in enumerate(batch.tolist()):
                self._store_list(i, approx[c], float(kth[c]))

    def _store_list(self, i: int, approx: np.ndarray, kth: float) -> None:
        """i's list from its float32 similarities to the live rows; kth: the width-th largest."""
        w = self.width
        if kth == -np.inf:  # every other kept sample fits in the list
            cand = self.live[np.isfinite(approx)]
            self.complete[i] = True
            self.bound[i] = -np.inf
        else:
            # Every kept sample outside `cand` has exact similarity < kth - tol <= the bound;
            # the w most similar by float32 are inside it, each exactly >= kth - tol.
            cand = self.live[approx >= kth - 2 * self.tol]
        s = pair_sims(self.x, np.full(len(cand), i), cand)
        order = np.argsort(-s, kind="stable")
        if not self.complete[i]:
            self.bound[i] = max(kth - self.tol, float(s[order[w]]) if len(cand) > w else -np.inf)
        sel = order[:w]
        self.ids[i] = -1
        self.sims[i] = -np.inf
        self.ids[i, : len(sel)] = cand[sel]
        self.sims[i, : len(sel)] = s[sel]
        self.left[i] = len(sel)

    def _push(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        v1, v2, n1, n2 = self._top2(rows)
        self.top[rows, 0], self.top[rows, 1] = n1, n2
        self.version[rows] += 1
        for entry in zip((-v1).tolist(), (-v2).tolist(), (-rows).tolist(), self.version[rows].tolist()):
            heapq.heappush(self.heap, entry)

    def run(self, count: int) -> list[tuple[int, float | None, int | None]]:
        """Remove `count` samples; returns (local index, max_sim, nearest local index) per removal."""
        candidates = np.flatnonzero(~self.protected)
        for s in range(0, len(candidates), _SIM_CHUNK):
            self._push(candidates[s: s + _SIM_CHUNK])
        removed: list[tuple[int, float | None, int | None]] = []
        while len(removed) < count:
            neg_v1, _, neg_i, version = heapq.heappop(self.heap)
            j = -neg_i
            if version != self.version[j] or not self.kept[j]:
                continue
            nearest = int(self.top[j, 0])
            removed.append((j, None if nearest < 0 else -neg_v1, None if nearest < 0 else nearest))
            self.kept[j] = False
            self.n_kept -= 1
            # Only a sample whose top two held j has a new key; protected ones are never keyed.
            hit = np.flatnonzero((self.top[:, 0] == j) | (self.top[:, 1] == j))
            self._push(hit[self.kept[hit] & ~self.protected[hit]])
        return removed


def answer_groups(answers: list[str] | np.ndarray) -> np.ndarray:
    """An id per distinct normalised answer (stripped, lower case, inner whitespace collapsed)."""
    keys = [" ".join(str(a).split()).lower() for a in answers]
    _, ids = np.unique(np.array(keys, dtype=object), return_inverse=True)
    return ids.astype(np.int64)


def _cluster_capacity(members: np.ndarray, protect: np.ndarray, groups: np.ndarray | None,
                      fraction: float) -> int:
    """How many of one cluster's members may go: unprotected ones, at most `fraction` of the
    cluster, and (with answer groups) never the last kept sample of an answer."""
    free = int((~protect[members]).sum())
    if groups is not None:
        g = groups[members]
        _, inv = np.unique(g, return_inverse=True)
        size = np.bincount(inv)
        unprot = np.bincount(inv, weights=~protect[members]).astype(np.int64)
        free = int(np.minimum(unprot, size - 1).sum())
    return min(free, int(np.floor(fraction * len(members))))


def prune_pool(hidden: np.ndarray, labels: np.ndarray, target_size: int,
               protect: np.ndarray | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
               max_cluster_fraction: float = 1.0, answers: list[str] | None = None) -> PruneResult:
    """Cut the pool to `target_size` samples by removing the most redundant ones.

    hidden: (n, h) hidden-state features; labels: (n,) cluster per sample; protect: optional
    bool (n,) mask of samples that must stay (they still count as kept neighbours). If the
    protected samples alone exceed the target, every unprotected sample is removed and a
    warning is logged. Clusters are processed in label order; `removed` lists removals in
    that order.

    Safeguards (the paper has neither; the defaults here are its behaviour):
    `max_cluster_fraction` caps the removals from one cluster at that share of it, so one
    step cannot gut a cluster's rare members. `answers` (one per sample) makes only samples
    with the same normalised answer candidates for redundancy: inside a cluster the removals
    are split over its answer groups, largest first (`removal_counts`), the greedy runs within
    each group, and the last sample of an answer is never removed. What the caps keep above
    the target is `shortfall` (logged).
    """
    return prune_with(_ClusterGreedy, hidden, labels, target_size, protect, neighbours,
                      max_cluster_fraction, answers)


def prune_with(greedy: type, hidden: np.ndarray, labels: np.ndarray, target_size: int,
               protect: np.ndarray | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
               max_cluster_fraction: float = 1.0, answers: list[str] | None = None) -> PruneResult:
    """`prune_pool` with another in-cluster greedy (`greedy(x, protected, neighbours).run(count)`):
    bench/prune.py and the tests run the previous implementation through it to check that the
    removals are the same."""
    hidden = np.asarray(hidden)
    labels = np.asarray(labels)
    n = len(labels)
    if hidden.ndim != 2 or hidden.shape[0] != n:
        raise ValueError(f"hidden {hidden.shape} does not match {n} labels")
    if target_size < 0:
        raise ValueError(f"target_size must be >= 0, got {target_size}")
    protect = np.zeros(n, dtype=bool) if protect is None else np.asarray(protect, dtype=bool)
    if protect.shape != (n,):
        raise ValueError(f"protect must be a bool mask of shape ({n},)")
    if neighbours < 2:
        raise ValueError("neighbours must be >= 2: the greedy's tie-break needs the top two")
    if not 0.0 < max_cluster_fraction <= 1.0:
        raise ValueError(f"max_cluster_fraction must be in (0, 1], got {max_cluster_fraction}")
    if answers is not None and len(answers) != n:
        raise ValueError(f"answers has {len(answers)} entries for {n} samples")
    groups = None if answers is None else answer_groups(answers)

    clusters, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(clusters))
    members_of = [np.flatnonzero(inverse == c) for c in range(len(clusters))]
    capped = max_cluster_fraction < 1.0 or groups is not None
    if capped:
        capacity = np.array([_cluster_capacity(m, protect, groups, max_cluster_fraction) for m in members_of],
                            dtype=np.int64)
    else:
        capacity = sizes - np.bincount(inverse, weights=protect, minlength=len(clusters)).astype(np.int64)
    excess = n - target_size
    unprotected = int((~protect).sum())
    if unprotected < excess:
        logger.warning("%d protected samples exceed the pool budget %d; keeping %d",
                       int(protect.sum()), target_size, int(protect.sum()))
    counts = removal_counts(sizes, excess, capacity)
    shortfall = max(0, min(excess, unprotected) - int(counts.sum()))
    if shortfall:
        logger.warning("pruning caps (max %.0f%% of a cluster%s) keep %d samples above the pool budget %d",
                       100 * max_cluster_fraction, ", one sample per answer" if groups is not None else "",
                       shortfall, target_size)

    removed: list[tuple[int, int, float | None, int | None]] = []
    per_cluster: dict[int, int] = {}
    keep = np.ones(n, dtype=bool)
    for c, label in enumerate(clusters):
        if counts[c] == 0:
            continue
        members = members_of[c]
        for part, count in _parts(members, int(counts[c]), protect, groups):
            cluster = greedy(l2_normalise(hidden[part]), protect[part], neighbours)
            for local, sim, nearest in cluster.run(count):
                keep[part[local]] = False
                removed.append((int(part[local]), label.item(), sim,
                                None if nearest is None else int(part[nearest])))
        per_cluster[label.item()] = int(counts[c])
        logger.debug("cluster %s: removed %d of %d", label, counts[c], sizes[c])
    return PruneResult(keep=np.flatnonzero(keep), removed=removed, per_cluster_removed=per_cluster,
                       shortfall=shortfall)


def _parts(members: np.ndarray, count: int, protect: np.ndarray,
           groups: np.ndarray | None) -> list[tuple[np.ndarray, int]]:
    """(pool indices, removals) per part of a cluster the greedy runs on: the whole cluster, or
    its answer groups with the removals water-filled from the largest (each keeps one)."""
    if groups is None:
        return [(members, count)]
    ids, inv = np.unique(groups[members], return_inverse=True)
    parts = [members[inv == g] for g in range(len(ids))]
    sizes = np.array([len(p) for p in parts], dtype=np.int64)
    cap = np.array([min(len(p) - 1, int((~protect[p]).sum())) for p in parts], dtype=np.int64)
    take = removal_counts(sizes, count, cap)
    return [(p, int(t)) for p, t in zip(parts, take) if t > 0]
