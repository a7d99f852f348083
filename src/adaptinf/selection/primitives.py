"""The numeric building blocks of Adapt-∞ selection (docs/method.md §7–9).

- `trimmed_histogram_entropy`: how spread out a score is inside a cluster; the scorer with
  the highest entropy is the one that tells the cluster's samples apart best.
- `ccs_sample`: coverage-centric coreset selection (Zheng et al., ICLR 2023, "Coverage-centric
  Coreset Selection for High Pruning Rates", Algorithm 1) over the trimmed score range.
- `split_budget`: the uniform-with-leftovers budget split over clusters.
- `softmax`, `proportional_quotas`, `shifted_quotas`, `round_quotas`: the weighted budget
  splits of the embedding baselines (COINCIDE's capped proportional split, density-based
  pruning's quadratic program), exact to the sample.

`water_fill` is the shared core of `ccs_sample` and `split_budget`: visit groups from the smallest up, each
takes min(size, remaining // groups_left). A small group gives all it has and its unused
share passes on to the larger ones. When the budget fits (sum(sizes) >= budget) this hands out
exactly the budget: if the last (largest) group could not absorb what is left, some earlier
group j took its floor share q_j < size_j, and everything after it holds at least q_j + 1,
which bounds what is left at the last group by q_j + 1 <= its size — a contradiction. So the
integer remainder always lands, deterministically, on the largest groups (equal sizes: the
later index gets the extra one).
"""
from __future__ import annotations

import numpy as np

DEFAULT_BINS = 50
DEFAULT_TRIM = 0.05


def water_fill(sizes: np.ndarray, total: int) -> np.ndarray:
    """Per-group takes summing to exactly min(total, sum(sizes)), as equal as the sizes allow."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or (sizes < 0).any():
        raise ValueError("sizes must be a 1-d array of non-negative counts")
    if total < 0:
        raise ValueError(f"budget must be >= 0, got {total}")
    take = np.zeros_like(sizes)
    remaining = int(min(total, sizes.sum()))
    order = np.argsort(sizes, kind="stable")
    for left, g in zip(range(len(order), 0, -1), order):
        take[g] = min(int(sizes[g]), remaining // left)
        remaining -= int(take[g])
    assert remaining == 0, "water_fill: budget not exhausted (cannot happen, see module doc)"
    return take


def split_budget(sizes: np.ndarray | list[int], total: int) -> np.ndarray:
    """Split T uniformly over clusters; small clusters give all and pass their leftover on.

    docs/method.md §7. Returns per-cluster quotas (int64) summing to exactly min(total, sum(sizes))
    (the paper's code overshot T through ceilings).
    """
    return water_fill(np.asarray(sizes), int(total))


def _trim_mask(scores: np.ndarray, trim: float) -> tuple[np.ndarray, float, float]:
    """Samples left after dropping the floor(trim·n) lowest and highest, and their range.

    The range is the min and max of the remaining samples, not interpolated quantiles:
    np.quantile interpolates towards the dropped neighbour, so one far outlier would still
    stretch the range (to −50 for a core in [0, 100] with outliers at −1000) and squeeze
    the histogram, the very effect trimming is meant to remove. Values tied with the
    boundary values stay in.
    """
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    n = scores.size
    cut = int(np.floor(trim * n))
    ranked = np.sort(scores)
    lo, hi = float(ranked[cut]), float(ranked[n - 1 - cut])
    return (scores >= lo) & (scores <= hi), lo, hi


def _bin_ids(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Equal-width bin of each value over [lo, hi]; the top edge belongs to the last bin."""
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.int64)
    ids = np.floor((values - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(ids, 0, bins - 1)


def trimmed_histogram_entropy(scores: np.ndarray, bins: int = DEFAULT_BINS,
                              trim: float = DEFAULT_TRIM) -> float:
    """Entropy (nats) of a score's histogram after dropping its extreme tails.

    docs/method.md §8: normalise (z-score), drop the top and bottom `trim` fraction (by rank),
    histogram into `bins` equal-width bins over the remaining range and return −Σ p log p of
    the bin masses p (bin densities normalised to sum to 1; equal-width bins make the two the
    same up to a constant). A uniform spread over all bins gives log(bins), a point mass 0.
    Non-finite values are ignored; empty or constant input gives 0.0. (The paper's code
    binned the raw score within ±4σ, which lets outliers squeeze the histogram.)
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0 or s.std() == 0.0:
        return 0.0
    s = (s - s.mean()) / s.std()
    inside, lo, hi = _trim_mask(s, trim)
    if hi <= lo:
        return 0.0
    counts = np.bincount(_bin_ids(s[inside], lo, hi, bins), minlength=bins)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def choose_scorer(scores_by_name: dict[str, np.ndarray], idx: np.ndarray,
                  bins: int = DEFAULT_BINS, trim: float = DEFAULT_TRIM) -> tuple[str | None, dict[str, float]]:
    """The scorer whose values over `idx` have the highest trimmed histogram entropy.

    Returns (name, entropies). Scorers with no finite value in `idx` are not applicable
    there and are left out of `entropies`; if none is applicable the name is None. Ties go
    to the scorer listed first.
    """
    entropies: dict[str, float] = {}
    for name, values in scores_by_name.items():
        v = np.asarray(values, dtype=np.float64)[idx]
        if np.isfinite(v).any():
            entropies[name] = trimmed_histogram_entropy(v, bins, trim)
    best: str | None = None
    for name, h in entropies.items():
        if best is None or h > entropies[best]:
            best = name
    return best, entropies


def ccs_sample(scores: np.ndarray, budget: int, rng: np.random.Generator,
               bins: int = DEFAULT_BINS, trim: float = DEFAULT_TRIM) -> np.ndarray:
    """Coverage-centric coreset sampling: equal quotas over score strata.

    The strata are `bins` equal-width bins over the range left after dropping the `trim`
    fraction of lowest and highest scores. Bins are visited from the smallest up; each draws
    min(size, remaining // bins_left) samples uniformly at random, so the unused quota of
    sparse bins passes on (`water_fill`). Returns sorted local indices, exactly min(budget, n)
    of them.

    Choice: samples in the trimmed tails (outliers, often noise) are drawn only when the
    trimmed range cannot fill the budget, and then uniformly at random among the tails.
    Scores must be finite (callers impute NaN first).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError("ccs_sample needs a 1-d array of finite scores")
    n = s.size
    m = int(min(max(budget, 0), n))
    if m == n:
        return np.arange(n)
    inside, lo, hi = _trim_mask(s, trim)
    inside_idx = np.flatnonzero(inside)
    bin_of = _bin_ids(s[inside_idx], lo, hi, bins)
    members = [inside_idx[bin_of == b] for b in range(bins)]
    quotas = water_fill(np.array([len(g) for g in members]), m)
    picked = [rng.choice(g, size=q, replace=False) for g, q in zip(members, quotas) if q > 0]
    short = m - int(quotas.sum())
    if short > 0:
        picked.append(rng.choice(np.flatnonzero(~inside), size=short, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def softmax(z: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / temperature) in float64, shifted by the max so large scores cannot overflow."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(z, dtype=np.float64) / temperature
    if z.size == 0:
        return z
    e = np.exp(z - z.max())
    return e / e.sum()


def round_quotas(x: np.ndarray, caps: np.ndarray, total: int,
                 lower: np.ndarray | None = None) -> np.ndarray:
    """Integer quotas closest to the real allocation `x`, summing to exactly min(total, caps.sum()).

    Largest-remainder rounding: everyone gets floor(x), then the samples still owed go one
    each to the largest fractional parts (ties: lower index) among groups below their cap.
    If `x` itself fell short of the total by a whole sample or more (a degenerate allocation,
    e.g. weights that underflowed to 0), the rest is water-filled over the groups with room.
    Quotas stay within [lower, caps] (lower defaults to 0).
    """
    caps = np.asarray(caps, dtype=np.int64)
    lo = np.zeros_like(caps) if lower is None else np.minimum(np.asarray(lower, dtype=np.int64), caps)
    total = int(min(total, caps.sum()))
    x = np.clip(np.asarray(x, dtype=np.float64), lo, caps)
    q = np.floor(x).astype(np.int64)
    frac = x - q
    idx = np.arange(len(q))
    left = total - int(q.sum())
    if left > 0:
        order = np.lexsort((idx, -frac))
        order = order[q[order] < caps[order]][:left]
        q[order] += 1
        left -= len(order)
        if left > 0:
            q += water_fill(caps - q, left)
    elif left < 0:
        # x summed above the total (rounding noise): take back from the smallest remainders.
        order = np.lexsort((-idx, frac))
        order = order[q[order] > lo[order]][:-left]
        q[order] -= 1
    if int(q.sum()) != total:
        raise ValueError("round_quotas: lower bounds exceed the total")
    return q


def proportional_quotas(weights: np.ndarray, sizes: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over groups in proportion to `weights`, capped by the group sizes.

    A group whose share exceeds its size gives all it has and the excess is re-split over the
    others in proportion to their weights (repeated until nothing overflows: the capped
    proportional allocation x_i = min(size_i, s * w_i) with the scale s that makes it sum to
    the total). Then `round_quotas`. Sums to exactly min(total, sizes.sum()).
    """
    w = np.asarray(weights, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.int64)
    if w.shape != sizes.shape or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite, non-negative and one per group")
    remaining = float(min(total, sizes.sum()))
    x = np.zeros(len(w))
    active = (w > 0) & (sizes > 0)
    while active.any() and remaining > 0:
        share = remaining / w[active].sum() * w
        over = active & (share >= sizes)
        if not over.any():
            x[active] = share[active]
            break
        x[over] = sizes[over]          # saturated: the rest is re-split over the others
        remaining -= float(sizes[over].sum())
        active &= ~over
    return round_quotas(x, sizes, total)


def shifted_quotas(targets: np.ndarray, lower: np.ndarray, upper: np.ndarray, total: int,
                   iters: int = 200) -> np.ndarray:
    """The quadratic program of density-based pruning, solved exactly, then rounded.

    minimise ||x − targets||² subject to sum(x) = total and lower <= x <= upper (Abbas et al.
    2024 solve it with OSQP). Its KKT solution is x_i = clip(targets_i + λ, lower_i, upper_i)
    with the single shift λ that meets the total; sum(x) is monotone in λ, so bisection finds
    it to float precision. Requires sum(lower) <= total; the total is capped at sum(upper).
    """
    t = np.asarray(targets, dtype=np.float64)
    lo = np.asarray(lower, dtype=np.int64)
    hi = np.asarray(upper, dtype=np.int64)
    if not (t.shape == lo.shape == hi.shape) or (lo > hi).any():
        raise ValueError("targets, lower and upper must have one entry per group with lower <= upper")
    total = int(min(total, hi.sum()))
    if lo.sum() > total:
        raise ValueError(f"lower bounds sum to {int(lo.sum())} > total {total}")
    if len(t) == 0:
        return lo.copy()
    a, b = float((lo - t).min()), float((hi - t).max())   # sum(x) <= total at a, >= total at b
    for _ in range(iters):
        mid = 0.5 * (a + b)
        if mid in (a, b):                                    # the interval is one float wide
            break
        if np.clip(t + mid, lo, hi).sum() < total:
            a = mid
        else:
            b = mid
    return round_quotas(np.clip(t + b, lo, hi), hi, total, lower=lo)
