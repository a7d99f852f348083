"""The Lite pruning greedy as it was before the speed-up (commit 3e63e7f), kept for comparison.

`bench/prune.py` times it next to `adaptinf.prune.prune_pool` in one run and checks that both
remove the same samples in the same order; `tests/test_prune.py` checks the same on small
pools. Not part of the product path. Per sample: a faiss top-K list with exact float64
similarities; a list that runs out is rescanned by gathering every kept row of the cluster in
float64; one Python-level top-2 read per affected sample.
"""
from __future__ import annotations

import heapq

import faiss
import numpy as np

from adaptinf.clustering import faiss_threads
from adaptinf.prune import DEFAULT_NEIGHBOURS, PruneResult, pair_sims, prune_with


class ReferenceGreedy:
    """The greedy removal inside one cluster, over local indices 0..m-1."""

    def __init__(self, x: np.ndarray, protected: np.ndarray, neighbours: int):
        m, h = x.shape
        self.x = x.astype(np.float64)  # converted once; every exact similarity reads it
        self.protected = protected
        self.kept = np.ones(m, dtype=bool)
        self.k = min(neighbours, m - 1)
        # faiss float32 inner products err by at most ~h·2⁻²⁴ for unit vectors.
        tol = 2.0 * h * 2.0**-24 + 1e-9
        index = faiss.IndexFlatIP(h)
        index.add(x)
        with faiss_threads(float(m) * m * h):
            fsim, fids = index.search(x, self.k + 1)
        is_self = fids == np.arange(m)[:, None]
        is_self[~is_self.any(axis=1), -1] = True  # self outranked by exact duplicates: drop the last
        ids = fids[~is_self].reshape(m, self.k).astype(np.int64)
        sims = pair_sims(self.x, np.repeat(np.arange(m), self.k), ids.ravel()).reshape(m, self.k)
        order = np.argsort(-sims, axis=1, kind="stable")
        self.ids = np.take_along_axis(ids, order, axis=1)
        self.sims = np.take_along_axis(sims, order, axis=1)
        complete = self.k == m - 1
        # Any sample not in i's list has faiss similarity <= the last one returned for i.
        self.bound = np.full(m, -np.inf) if complete else fsim[:, -1].astype(np.float64) + tol
        self.complete = np.full(m, complete)
        self.ptr = np.zeros(m, dtype=np.int64)    # first possibly-kept position in i's list
        self.top = np.full((m, 2), -1, dtype=np.int64)  # current top-2 kept neighbours of i
        # Reverse lists: who lists j. CSR for the initial lists, plus appends from rescans.
        flat = self.ids.ravel()
        rev_order = np.argsort(flat, kind="stable")
        self.rev_ptr = np.searchsorted(flat[rev_order], np.arange(m + 1))
        self.rev_rows = rev_order // max(self.k, 1)
        self.rev_extra: dict[int, list[int]] = {}
        self.version = np.zeros(m, dtype=np.int64)
        self.heap: list[tuple[float, float, int, int]] = []

    def _top2(self, i: int) -> tuple[float, float, int, int]:
        """(max, second, argmax, arg-second) similarity of i to kept samples, exact."""
        kept = self.kept
        for attempt in (0, 1):  # a fresh exact list (attempt 1) is certified by construction
            ids = self.ids[i]
            p = int(self.ptr[i])
            while p < self.k and (ids[p] < 0 or not kept[ids[p]]):
                p += 1
            self.ptr[i] = p
            q = p + 1
            while q < self.k and (ids[q] < 0 or not kept[ids[q]]):
                q += 1
            if attempt == 0 and not self.complete[i] and (q >= self.k or self.sims[i, q] < self.bound[i]):
                self._rescan(i)
            else:
                break
        v1, n1 = (float(self.sims[i, p]), int(ids[p])) if p < self.k else (-np.inf, -1)
        v2, n2 = (float(self.sims[i, q]), int(ids[q])) if q < self.k else (-np.inf, -1)
        return v1, v2, n1, n2

    def _rescan(self, i: int) -> None:
        """Exact similarities of i to every kept sample; store the top-K as i's new list."""
        others = np.flatnonzero(self.kept)
        others = others[others != i]
        s = pair_sims(self.x, np.full(len(others), i), others)
        if len(others) > self.k:
            part = np.argpartition(-s, self.k)
            self.bound[i] = s[part[self.k]]  # exact: every unlisted kept sample is <= this
            sel = part[: self.k]
        else:
            self.bound[i] = -np.inf
            self.complete[i] = True
            sel = np.arange(len(others))
        sel = sel[np.argsort(-s[sel], kind="stable")]
        self.ids[i] = -1
        self.sims[i] = -np.inf
        self.ids[i, : len(sel)] = others[sel]
        self.sims[i, : len(sel)] = s[sel]
        self.ptr[i] = 0
        for j in others[sel]:
            self.rev_extra.setdefault(int(j), []).append(i)

    def _push(self, i: int) -> None:
        v1, v2, n1, n2 = self._top2(i)
        self.top[i] = (n1, n2)
        self.version[i] += 1
        heapq.heappush(self.heap, (-v1, -v2, -i, int(self.version[i])))

    def run(self, count: int) -> list[tuple[int, float | None, int | None]]:
        """Remove `count` samples; returns (local index, max_sim, nearest local index) per removal."""
        for i in np.flatnonzero(~self.protected):
            self._push(int(i))
        removed: list[tuple[int, float | None, int | None]] = []
        while len(removed) < count:
            neg_v1, _, neg_i, version = heapq.heappop(self.heap)
            j = -neg_i
            if version != self.version[j] or not self.kept[j]:
                continue
            nearest = int(self.top[j, 0])
            removed.append((j, None if nearest < 0 else -neg_v1, None if nearest < 0 else nearest))
            self.kept[j] = False
            listers = self.rev_rows[self.rev_ptr[j]: self.rev_ptr[j + 1]]
            for i in (*listers.tolist(), *self.rev_extra.pop(j, ())):
                if self.kept[i] and not self.protected[i] and j in (self.top[i, 0], self.top[i, 1]):
                    self._push(i)
        return removed


def prune_reference(hidden: np.ndarray, labels: np.ndarray, target_size: int,
                    protect: np.ndarray | None = None, neighbours: int = DEFAULT_NEIGHBOURS,
                    max_cluster_fraction: float = 1.0, answers: list[str] | None = None) -> PruneResult:
    """`prune_pool` with the previous greedy."""
    return prune_with(ReferenceGreedy, hidden, labels, target_size, protect, neighbours,
                      max_cluster_fraction, answers)
