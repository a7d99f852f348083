"""Paired comparisons over seeds: each strategy's difference to a baseline, with a bootstrap CI.

Every strategy of a seed starts from the same step 0 and is scored on the same eval records
(`compare.py` copies the seed's step 0 into every run; the eval suite is the stream's, cut by
`eval.maxSamples` in file order), so the per-seed differences d_i = figure(strategy, seed i) −
figure(baseline, seed i) are paired: the seed's luck (step-0 model, batch order shared by the
step-0 adapter) cancels out of them.

The interval is the percentile bootstrap of the mean of the d_i: resample the n seeds with
replacement, take the mean, and read the α/2 and 1 − α/2 quantiles of that distribution. For
n ≤ `EXACT_MAX` seeds the bootstrap distribution is enumerated exactly (every multiset of seeds
with its multinomial weight), so the interval is deterministic; above that it is estimated from
`draws` seeded resamples. With n seeds the interval can never be narrower than the spread the
seeds show: 2 or 3 seeds give a coarse interval, and one seed none at all (the difference itself).
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import numpy as np

EXACT_MAX = 10   # C(2n−1, n) multisets: 92,378 at n = 10
LEVEL = 0.95


def _quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value v with P(X ≤ v) ≥ q (the inverse CDF of a discrete distribution)."""
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    i = int(np.searchsorted(cdf, q * cdf[-1] - 1e-12, side="left"))
    return float(values[order][min(i, len(values) - 1)])


def _exact_means(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every bootstrap mean of d with its probability (multisets of indices, multinomial weights)."""
    n = len(d)
    means, weights = [], []
    log_nfact = math.lgamma(n + 1)
    for combo in itertools.combinations_with_replacement(range(n), n):
        counts = Counter(combo).values()
        weights.append(math.exp(log_nfact - sum(math.lgamma(c + 1) for c in counts) - n * math.log(n)))
        means.append(d[list(combo)].mean())
    return np.asarray(means), np.asarray(weights)


def bootstrap_ci(diffs: list[float], level: float = LEVEL, draws: int = 20_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean paired difference and its percentile-bootstrap interval."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired difference to bootstrap")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if d.size <= EXACT_MAX:
        means, weights = _exact_means(d)
    else:
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, d.size, size=(draws, d.size))].mean(axis=1)
        weights = np.ones(draws)
    alpha = 1.0 - level
    return float(d.mean()), _quantile(means, weights, alpha / 2), _quantile(means, weights, 1 - alpha / 2)


def paired_differences(per_seed: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]],
                       keys: tuple[str, ...], level: float = LEVEL) -> dict[str, Any]:
    """For each figure in `keys`: {"diff", "ci": [low, high]} over the seeds both runs have.

    `per_seed` and `baseline` map seed → figures (as `report.run_figures` returns them); a
    figure that is None for a seed (not defined for that strategy) gives no difference.
    """
    seeds = sorted(set(per_seed) & set(baseline), key=str)
    if not seeds:
        raise ValueError("no seed in common with the baseline: nothing to pair")
    out: dict[str, Any] = {"seeds": len(seeds), "level": level}
    for key in keys:
        diffs = [per_seed[s][key] - baseline[s][key] for s in seeds
                 if per_seed[s].get(key) is not None and baseline[s].get(key) is not None]
        if diffs:
            mean, low, high = bootstrap_ci(diffs, level)
            out[key] = {"diff": mean, "ci": [low, high]}
        else:
            out[key] = None
    return out
