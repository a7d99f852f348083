"""Pseudo-task clustering: k-means with k at the elbow of the WSS curve (docs/method.md §6).

Adapt-∞ clusters the pool's L2-normalised gradient vectors into "pseudo-tasks" and picks k
by the elbow of the within-cluster sum of squares over k in 5..50. The paper's code used
scikit-learn's MiniBatchKMeans with k set by hand; here faiss k-means sweeps every k in the
range (an elbow sweep k=5..50 over 100k×256 takes about 7 s on one CPU thread, bench/README.md §2) and the
elbow is found with the kneedle rule (Satopää et al., 2011, "Finding a 'Kneedle' in a
Haystack") applied to log WSS (see `elbow_k` for why the log).

Centroids start from k-means++ seeding (faiss's `init_method`; Arthur & Vassilvitskii 2007):
faiss's default random init often puts two centroids in one true cluster and one across two,
a local minimum that bends the WSS curve in the wrong place (on 7 well-separated blobs over
k=2..15 the elbow landed anywhere in 3..9 with raw WSS, 2..14 with log WSS, across seeds;
with k-means++ and log WSS it is 7 for every seed, see tests/test_clustering.py). `nredo` > 1
keeps the best of several runs, for data with overlapping groups.
faiss trains on at most 256 points per centroid (its default subsampling, seeded, like the
mini-batches of the paper's code); labels and WSS are always computed over every point.
Small problems run faiss on one OpenMP thread (`faiss_threads`): on a loaded machine OpenMP's
spinning threads made a 3000×256, k=5..30 sweep take 14 s instead of 1 s.
Two sweeps measure the WSS curve (`choose_k(sweep=...)`, the spec's `clustering.sweep`):
`full`, the reference, trains every k in the range on every row; `fast` measures the curve on a
fixed-seed subsample with fewer iterations and a smaller training sample per centroid, only at
the k the rule needs (see `_gain_search`, `_elbow_search`: the same k as that curve's full grid),
and then trains the chosen k on every row as `full` does, with at least 10 restarts (a superset
of full's, so at the same k its WSS is never above full's). Warm starts (k from k-1's centroids plus k-means++ draws) were tried for
the sweep: on the bench data their WSS was 4-18% above independent restarts' at the same k.
Numpy and faiss only: the operator-side selection stage must not need torch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

logger = logging.getLogger(__name__)

SERIAL_WORK = 1 << 26  # multiply-adds per k-means pass below which threads cost more than they save


@contextmanager
def faiss_threads(work: float) -> Iterator[None]:
    """Run the enclosed faiss calls on one OpenMP thread if `work` is small; restore after.

    Thread start-up and spin-waiting dominate small k-means and searches, and on a shared
    machine idle-spinning threads compete with other processes for the cores.
    """
    if work >= SERIAL_WORK:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@dataclass
class ClusterResult:
    """The clustering at the chosen k, with the WSS curve it was chosen from."""
    k: int
    labels: np.ndarray          # (n,) int64 cluster id per point, in 0..k-1
    centroids: np.ndarray       # (k, d) float32
    wss_by_k: dict[int, float]  # every k tried -> within-cluster sum of squared distances
    sweep: str = "full"         # how the curve was measured: "full" | "fast" (choose_k)
    sample_rows: int = 0        # rows the curve was measured on (all n for "full")

    def sweep_report(self) -> dict:
        """What ran to choose k, for the selection report."""
        return {"sweep": self.sweep, "sample_rows": self.sample_rows, "k_evaluated": len(self.wss_by_k)}


def _as_matrix(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, d) matrix, got shape {x.shape}")
    return x


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    """Nearest centroid of every point and the total squared distance (the WSS)."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(centroids)
    dist, labels = index.search(x, 1)
    # faiss computes |x|²+|c|²−2x·c in float32: clamp the tiny negatives of coincident points.
    return labels[:, 0].astype(np.int64), float(np.maximum(dist[:, 0], 0.0).sum(dtype=np.float64))


def _train_centroids(x: np.ndarray, k: int, seed: int, niter: int, nredo: int = 1,
                     points_per_centroid: int = 256) -> np.ndarray:
    # min_points_per_centroid=1: small pools are legitimate here, so no "please provide at
    # least 39*k points" warning on stderr; faiss still splits empty clusters.
    if nredo < 1:
        raise ValueError(f"nredo must be >= 1, got {nredo}")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=False, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=points_per_centroid, nredo=nredo,
                      init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS)
    km.train(x)
    return np.array(km.centroids, dtype=np.float32, copy=True)


def kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = 25,
           nredo: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """Euclidean k-means with faiss (k-means++ seeding), deterministic for a seed.

    Returns (labels (n,) int64, centroids (k, d) float32, wss) where wss is the sum over all
    points of the squared distance to their nearest centroid.
    """
    x = _as_matrix(x)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k must be in 1..n={x.shape[0]}, got {k}")
    with faiss_threads(float(x.shape[0]) * x.shape[1] * k):
        centroids = _train_centroids(x, k, seed, niter, nredo)
        labels, wss = _assign(x, centroids)
    return labels, centroids, wss


def _sorted_curve(ks: list[int] | np.ndarray, wss: list[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The WSS curve as float arrays sorted by k, checked."""
    ks_arr = np.asarray(ks, dtype=np.float64)
    w = np.asarray(wss, dtype=np.float64)
    if ks_arr.shape != w.shape or ks_arr.ndim != 1 or ks_arr.size == 0:
        raise ValueError("ks and wss must be non-empty 1-d sequences of the same length")
    order = np.argsort(ks_arr, kind="stable")
    ks_arr, w = ks_arr[order], w[order]
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("WSS values must be finite and non-negative")
    return ks_arr, w


def elbow_k(ks: list[int] | np.ndarray, wss: list[float] | np.ndarray) -> int:
    """The k at the elbow of a decreasing WSS curve (kneedle on log WSS).

    The curve is log(WSS) against k; both axes are normalised to [0, 1] and the elbow is the
    point furthest below the chord from the first to the last point (vertical distance, which
    for a fixed chord ranks points exactly as the perpendicular distance does). Ties go to the
    smaller k. With fewer than three points, a flat curve, or no point below the chord (a
    straight or concave curve has no elbow), the smallest k is returned: more clusters than the
    data supports only dilutes the per-cluster budget.

    Why the log: WSS falls by orders of magnitude once k reaches the true number of groups, but
    on the raw scale the last pre-elbow steps are already near zero, so raw kneedle tends to stop
    one k short (7 blobs, WSS 293k, ..., 23k, 1.5k, 1.5k, ... over k=2..15 gives k=6). The log
    makes the criterion relative (a drop by a factor, not by an amount) and scale-free. WSS
    below 1e-6 of the largest value (a perfect fit, e.g. k >= distinct points, where faiss's
    float32 distances leave only rounding noise) is floored there, so log stays finite and
    noise cannot make an elbow.
    """
    ks_arr, w = _sorted_curve(ks, wss)
    curve = _kneedle(ks_arr, w)
    if curve is None:
        return int(ks_arr[0])
    below = curve[1] - curve[0]
    best = int(np.argmax(below))
    if below[best] <= 0.0:
        logger.info("WSS curve has no elbow over k=%d..%d; using the smallest k",
                    int(ks_arr[0]), int(ks_arr[-1]))
        return int(ks_arr[0])
    return int(ks_arr[best])


def _kneedle(ks_arr: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """elbow_k's normalised log curve and chord at each k (sorted); None where it has no elbow
    to look for (fewer than three points, a flat curve)."""
    if ks_arr.size < 3 or w.max() == w.min():
        return None
    w = np.log(np.maximum(w, w.max() * 1e-6))
    xn = (ks_arr - ks_arr[0]) / (ks_arr[-1] - ks_arr[0])
    yn = (w - w.min()) / (w.max() - w.min())
    return yn, yn[0] + (yn[-1] - yn[0]) * xn


def gain_k(ks: list[int] | np.ndarray, wss: list[float] | np.ndarray, min_gain: float = 0.05) -> int:
    """The smallest k whose next cluster cuts the WSS by less than `min_gain` (relative).

    One more cluster is worth having while it removes at least that share of the remaining
    within-cluster scatter: WSS(k+1) <= (1 - min_gain) · WSS(k). On a curve without an elbow
    (every step a few percent) this stops early instead of following the sweep's upper bound,
    as the elbow does (the chord then runs to kMax); on well-separated groups WSS collapses
    until the true k and barely moves after it. WSS is floored at 1e-6 of its largest value
    (a perfect fit leaves only float noise). If every step gains, the largest k is returned.
    """
    if not 0.0 < min_gain < 1.0:
        raise ValueError(f"min_gain must be in (0, 1), got {min_gain}")
    ks_arr, w = _sorted_curve(ks, wss)
    w = np.maximum(w, w.max() * 1e-6) if w.max() > 0 else np.ones_like(w)
    for i in range(len(w) - 1):
        if w[i + 1] > (1.0 - min_gain) * w[i]:
            return int(ks_arr[i])
    return int(ks_arr[-1])


K_RULES = ("gain", "elbow")


def pick_k(ks: list[int], wss: list[float], rule: str = "elbow", min_gain: float = 0.05) -> int:
    """The k the named rule picks from a WSS curve."""
    if rule == "elbow":
        return elbow_k(ks, wss)
    if rule == "gain":
        return gain_k(ks, wss, min_gain)
    raise ValueError(f"unknown k rule {rule!r}; known: {', '.join(K_RULES)}")


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean of the entropies) of two labelings."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("labelings must be 1-d and of the same length")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    ha = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    hb = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    if ha + hb == 0.0:
        return 1.0  # both a single cluster: identical
    return max(0.0, 2.0 * mi / (ha + hb))


def k_range(n: int, k_min: int, k_max: int) -> tuple[int, int]:
    """The k range actually swept for a pool of n points.

    k_max is clamped to n // 2 so that clusters hold two points on average (a cluster per
    point makes the WSS curve meaningless and CCS inside a cluster trivial), and k_min to
    k_max; a pool of one point gets k = 1.
    """
    if n < 1:
        raise ValueError("cannot cluster an empty pool")
    if not 1 <= k_min <= k_max:
        raise ValueError(f"need 1 <= k_min <= k_max, got {k_min}, {k_max}")
    hi = max(1, min(k_max, n // 2))
    lo = min(k_min, hi)
    if (lo, hi) != (k_min, k_max):
        logger.info("pool of %d points: k range %d..%d clamped to %d..%d", n, k_min, k_max, lo, hi)
    return lo, hi


SWEEPS = ("auto", "fast", "full")
SAMPLE_MIN_ROWS = 20_000  # the fast sweep's subsample: at least this many rows ...
SAMPLE_ROWS_PER_K = 200   # ... and this many per cluster at k_max (faiss trains on <= 256 per centroid)
SWEEP_NITER = 10          # k-means iterations per k in the fast sweep (k-means++ seeds converge fast)
SWEEP_POINTS_PER_CENTROID = 128  # faiss's training subsample per centroid in the fast sweep (full: 256)
FINAL_MIN_REDO = 10       # restarts of the fast sweep's one clustering on every row (see choose_k)
ELBOW_GRID = 8            # intervals of the elbow search's first, coarse grid
SAMPLE_KEY = 7919         # keys the subsample's generator apart from other uses of the seed


def sample_rows(n: int, k_max: int) -> int:
    """Rows the fast sweep measures the WSS curve on, for a pool of n and the swept k_max."""
    return min(n, max(SAMPLE_MIN_ROWS, SAMPLE_ROWS_PER_K * k_max))


def _gain_search(lo: int, hi: int, wss_at: Callable[[int], float], min_gain: float) -> int:
    """gain_k over lo..hi, evaluating k upwards only until the rule stops.

    The rule looks at consecutive k from the smallest, so the curve past its stop cannot change
    it: the same k as gain_k on the whole curve (whose floor, 1e-6 of the largest WSS, is the
    same when the largest is WSS(lo), as on any decreasing curve).
    """
    curve = {lo: wss_at(lo)}
    for k in range(lo + 1, hi + 1):
        curve[k] = wss_at(k)
        got = gain_k(list(curve), list(curve.values()), min_gain)
        if got < k:
            return got
    return hi


def elbow_grid_step(lo: int, hi: int) -> int:
    """Spacing of the elbow search's first grid over lo..hi (ELBOW_GRID intervals)."""
    return max(1, -(-(hi - lo) // ELBOW_GRID))


def _elbow_search(lo: int, hi: int, wss_at: Callable[[int], float]) -> int:
    """elbow_k over lo..hi from a coarse grid, refined only where the elbow could still be.

    Exact for a non-increasing curve: the normalisation and the chord depend only on the end
    points (WSS(lo) is the largest, WSS(hi) the smallest), so each k's distance below the chord
    does not depend on which other k were measured; and between measured a < b every k lies
    at most chord(a+1) - y(b) below the chord, so an interval whose bound cannot beat the best
    point so far need not be measured. A measured rise (k-means stuck in a worse optimum at
    the larger k) is replaced by the best WSS measured at a smaller k, which that clustering
    plus an idle centroid achieves: the search then runs on that running minimum.
    """
    if hi - lo < 3:
        return elbow_k(list(range(lo, hi + 1)), [wss_at(k) for k in range(lo, hi + 1)])
    step = elbow_grid_step(lo, hi)
    measured = {k: wss_at(k) for k in sorted({*range(lo, hi, step), hi})}
    while True:
        ks, w = _sorted_curve(list(measured), list(measured.values()))
        w = np.minimum.accumulate(w)
        shape = _kneedle(ks, w)
        if shape is None:  # flat and non-increasing: flat throughout
            return lo
        yn, chord = shape
        best = float(max((chord - yn).max(), 0.0))
        slope = (chord[-1] - chord[0]) / (hi - lo)
        todo = [int(a + b) // 2 for a, b, yb in zip(ks[:-1], ks[1:], yn[1:])
                if b - a > 1 and chord[0] + slope * (a + 1 - lo) - yb > best - 1e-9]
        if not todo:
            return elbow_k(ks, w)
        measured.update({k: wss_at(k) for k in todo})


def _sweep_curve(x: np.ndarray, lo: int, hi: int, seed: int, niter: int, nredo: int, rule: str,
                 min_gain: float) -> tuple[int, dict[int, float], int]:
    """The fast sweep: (k, the measured WSS by k, in pool units, and the rows measured on)."""
    n = x.shape[0]
    m = sample_rows(n, hi)
    rows = x if m == n else x[np.sort(np.random.default_rng([seed, SAMPLE_KEY]).choice(n, m, replace=False))]
    curve: dict[int, float] = {}

    def wss_at(k: int) -> float:
        # Each k on its own (same seed, restarts as asked): WSS(k) is a function of k alone,
        # whatever order the search asks in.
        if k not in curve:
            centroids = _train_centroids(rows, k, seed, min(niter, SWEEP_NITER), nredo, SWEEP_POINTS_PER_CENTROID)
            curve[k] = _assign(rows, centroids)[1] * (n / m)  # in the pool's units
        return curve[k]

    k = _gain_search(lo, hi, wss_at, min_gain) if rule == "gain" else _elbow_search(lo, hi, wss_at)
    return k, dict(sorted(curve.items())), m


def choose_k(x: np.ndarray, k_min: int = 5, k_max: int = 50, seed: int = 0, niter: int = 25, nredo: int = 1,
             rule: str = "elbow", min_gain: float = 0.05, sweep: str = "full") -> ClusterResult:
    """k-means at the k that `rule` (`pick_k`) picks from the WSS curve over the (clamped) range.

    sweep "full" (the reference) trains every k on every row; "auto" is "fast" when the pool has
    more rows than the fast sweep's subsample and "full" otherwise. "fast" measures the curve on
    `sample_rows` rows with at most SWEEP_NITER iterations, SWEEP_POINTS_PER_CENTROID training
    points per centroid and the same restarts, only at the k the rule needs,
    then trains the chosen k on every row as "full" does (same seed and niter) but with at least
    FINAL_MIN_REDO restarts: faiss's restart r is seeded seed + r·constant, so these include
    full's and the WSS at a k both choose is never above full's. The time saved pays for them:
    on the bench data ARI against the true blobs at a fixed k moved by up to 0.2 between local
    optima, and 10 restarts instead of 3 raised it from 0.78-0.85 to 0.96-0.98 at k 16-18. Every k uses the same seed, so the result is a
    function of (x, range, seed, niter, nredo, rule, sweep).
    """
    if rule not in K_RULES:
        raise ValueError(f"unknown k rule {rule!r}; known: {', '.join(K_RULES)}")
    if sweep not in SWEEPS:
        raise ValueError(f"unknown k sweep {sweep!r}; known: {', '.join(SWEEPS)}")
    x = _as_matrix(x)
    lo, hi = k_range(x.shape[0], k_min, k_max)
    if sweep == "auto":  # fast only where a subsample saves work: a smaller pool clusters as before
        sweep = "fast" if sample_rows(x.shape[0], hi) < x.shape[0] else "full"
    with faiss_threads(float(x.shape[0]) * x.shape[1] * hi):
        if sweep == "fast":
            k, wss_by_k, m = _sweep_curve(x, lo, hi, seed, niter, nredo, rule, min_gain)
            centroids = _train_centroids(x, k, seed, niter, max(nredo, FINAL_MIN_REDO))
            labels, _ = _assign(x, centroids)
        else:
            m = x.shape[0]
            wss_by_k = {}
            centroids_by_k: dict[int, np.ndarray] = {}
            for kk in range(lo, hi + 1):
                centroids_by_k[kk] = _train_centroids(x, kk, seed, niter, nredo)
                _, wss_by_k[kk] = _assign(x, centroids_by_k[kk])
            k = pick_k(list(wss_by_k), list(wss_by_k.values()), rule, min_gain)
            centroids = centroids_by_k[k]
            labels, _ = _assign(x, centroids)
    logger.debug("chose k=%d from WSS %s (%s sweep on %d rows)", k, wss_by_k, sweep, m)
    return ClusterResult(k=k, labels=labels, centroids=centroids, wss_by_k=wss_by_k, sweep=sweep, sample_rows=m)


def k_stability(x: np.ndarray, chosen: ClusterResult, seeds: list[int], k_min: int, k_max: int,
                niter: int = 25, nredo: int = 1, rule: str = "elbow", min_gain: float = 0.05,
                sweep: str = "full") -> dict:
    """How much the choice of k and the labels depend on the k-means seed.

    Re-runs the whole k choice once per seed, with the same sweep (for "fast" the seed also
    draws the subsample); reports each run's k and the NMI of its labels with the chosen ones
    (1.0: the same partition). A k that moves a lot between seeds says the data has no clear
    number of groups, which the selection report should show.
    """
    runs = []
    for s in seeds:
        other = choose_k(x, k_min, k_max, s, niter, nredo, rule, min_gain, sweep)
        runs.append({"seed": int(s), "k": other.k, "nmi": round(nmi(chosen.labels, other.labels), 4)})
    ks = [chosen.k] + [r["k"] for r in runs]
    return {"k": chosen.k, "sweep": sweep, "runs": runs, "k_min_seen": min(ks), "k_max_seen": max(ks),
            "mean_nmi": round(float(np.mean([r["nmi"] for r in runs])), 4) if runs else None}
