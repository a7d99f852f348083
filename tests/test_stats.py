"""Paired bootstrap intervals (`adaptinf.runner.stats`) on cases whose answer is known exactly."""
from __future__ import annotations

import pytest

from adaptinf.runner import stats


def test_two_seeds_enumerated_exactly():
    # Resamples of (1, 3): (1,1) 1/4, (1,3)/(3,1) 1/2, (3,3) 1/4 -> means 1, 2, 3; the 2.5% and
    # 97.5% quantiles are the extremes.
    assert stats.bootstrap_ci([1.0, 3.0]) == (2.0, 1.0, 3.0)


def test_skewed_five_seeds_known_quantiles():
    # d = (0, 0, 0, 0, 10): a resample's mean is 2K with K ~ Binomial(5, 1/5).
    # P(K = 0) = 0.328 >= 0.025 -> low 0; P(K <= 2) = 0.942 < 0.975 <= P(K <= 3) = 0.993 -> high 6.
    assert stats.bootstrap_ci([0, 0, 0, 0, 10]) == (2.0, 0.0, 6.0)
    # At 80%: P(K <= 0) = 0.328 >= 0.1 -> 0; P(K <= 1) = 0.737 < 0.9 <= P(K <= 2) -> 4.
    assert stats.bootstrap_ci([0, 0, 0, 0, 10], level=0.8) == (2.0, 0.0, 4.0)


def test_monte_carlo_agrees_with_the_exact_distribution(monkeypatch):
    monkeypatch.setattr(stats, "EXACT_MAX", 0)
    mean, low, high = stats.bootstrap_ci([0, 0, 0, 0, 10], draws=100_000, seed=1)
    assert (mean, low, high) == (2.0, 0.0, 6.0)
    assert stats.bootstrap_ci([0, 0, 0, 0, 10], seed=3) == stats.bootstrap_ci([0, 0, 0, 0, 10], seed=3)


def test_degenerate_cases():
    assert stats.bootstrap_ci([4.0]) == (4.0, 4.0, 4.0)          # one seed: the difference itself
    assert stats.bootstrap_ci([2.5, 2.5, 2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError, match="no paired"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0], level=1.0)


def test_paired_differences_only_over_shared_seeds_and_defined_figures():
    run = {0: {"g": 5.0, "f": None}, 1: {"g": 7.0, "f": None}, 2: {"g": 1.0, "f": None}}
    base = {0: {"g": 4.0, "f": 2.0}, 1: {"g": 4.0, "f": 3.0}}
    out = stats.paired_differences(run, base, ("g", "f"))
    assert out["seeds"] == 2                       # seed 2 has no baseline run
    assert out["g"] == {"diff": 2.0, "ci": [1.0, 3.0]}   # diffs 1 and 3
    assert out["f"] is None                        # not defined for this strategy (e.g. multitask)
    with pytest.raises(ValueError, match="no seed in common"):
        stats.paired_differences({5: {"g": 1.0}}, base, ("g",))
