"""Known-answer tests of the selection building blocks (docs/method.md §7–9)."""
from __future__ import annotations

import math

from dataclasses import replace

import numpy as np
import pytest

from adaptinf.selection.primitives import (ccs_sample, choose_scorer, proportional_quotas, round_quotas,
                                           shifted_quotas, softmax, split_budget, trimmed_histogram_entropy,
                                           water_fill)
from adaptinf.selection.safeguards import (ccs_bins, cluster_cosines, diffuse_clusters, guarded_split,
                                           mastered_mask)


def uniform_core_with_outliers() -> np.ndarray:
    """1000 values: 50 each at ±1e6 (exactly the 5% tails) and a core of 18 values at b + 0.5
    for every b in 0..49. The core's range is [0.5, 49.5], bin width 49/50, so value b + 0.5
    falls in bin floor(b · 50/49) = b (b = 49 lands on the top edge: last bin): 18 per bin."""
    core = np.repeat(np.arange(50) + 0.5, 18)
    values = np.concatenate([np.full(50, -1e6), core, np.full(50, 1e6)])
    return np.random.default_rng(0).permutation(values)


def test_entropy_uniform_histogram_is_log_bins_after_trimming():
    s = uniform_core_with_outliers()
    assert trimmed_histogram_entropy(s) == pytest.approx(math.log(50), abs=1e-12)
    # Without trimming the outliers set the range: 50 | 900 (all core values in bin 25) | 50.
    p = np.array([0.05, 0.9, 0.05])
    assert trimmed_histogram_entropy(s, trim=0.0) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12)
    # Ten bins over the same core: 5 core values per bin of width 4.9 -> 90 each -> log(10).
    assert trimmed_histogram_entropy(s, bins=10) == pytest.approx(math.log(10), abs=1e-12)


def test_entropy_trims_exactly_five_percent_each_side():
    # 40 samples: floor(0.05 * 40) = 2 dropped at each end. The two lowest (-5, -4) and the
    # two highest (104, 105) go; the rest spans [0, 1]: half at 0, half at 1 -> log 2.
    s = np.concatenate([[-5.0, -4.0], np.zeros(18), np.ones(18), [104.0, 105.0]])
    assert trimmed_histogram_entropy(s) == pytest.approx(math.log(2), abs=1e-12)
    # One outlier per side: the 2nd lowest / 2nd highest are tied with kept values (0 and 1),
    # and values tied with the boundary stay in: 18 zeros and 20 ones are histogrammed.
    s2 = np.concatenate([[-5.0, 0.0], np.zeros(17), np.ones(19), [1.0, 105.0]])
    p = np.array([18, 20]) / 38
    assert trimmed_histogram_entropy(s2) == pytest.approx(-(p * np.log(p)).sum(), abs=1e-12)


def test_entropy_edge_cases():
    assert trimmed_histogram_entropy(np.full(100, 3.0)) == 0.0          # point mass
    assert trimmed_histogram_entropy(np.array([])) == 0.0
    assert trimmed_histogram_entropy(np.full(5, np.nan)) == 0.0
    s = uniform_core_with_outliers()
    with_nan = np.concatenate([s, np.full(7, np.nan)])                  # NaN ignored
    assert trimmed_histogram_entropy(with_nan) == pytest.approx(math.log(50), abs=1e-12)
    # affine invariance (scores are normalised first)
    assert trimmed_histogram_entropy(3.0 * s - 7.0) == pytest.approx(math.log(50), abs=1e-12)
    with pytest.raises(ValueError):
        trimmed_histogram_entropy(s, trim=0.5)


def test_choose_scorer_picks_highest_entropy_and_skips_nan():
    s = uniform_core_with_outliers()
    scores = {
        "two_point": np.where(np.arange(1000) % 2 == 0, 0.0, 1.0),     # log 2
        "spread": s,                                                    # log 50
        "missing": np.full(1000, np.nan),                               # not applicable
        "constant": np.zeros(1000),                                     # 0
    }
    idx = np.arange(1000)
    name, ent = choose_scorer(scores, idx)
    assert name == "spread"
    assert set(ent) == {"two_point", "spread", "constant"}
    assert ent["two_point"] == pytest.approx(math.log(2)) and ent["constant"] == 0.0
    # on a subset where "spread" is constant the two-point score wins
    sub = np.flatnonzero(s == 0.5)
    assert choose_scorer(scores, sub)[0] == "two_point"
    # nothing applicable -> None; ties -> the first listed
    assert choose_scorer({"m": np.full(10, np.nan)}, np.arange(10)) == (None, {})
    assert choose_scorer({"a": np.zeros(10), "b": np.ones(10)}, np.arange(10))[0] == "a"


def test_split_budget_hand_example():
    # Uniform share 15/3 = 5; cluster 0 has only 2 and gives them all; the leftover 13 is
    # split over the two others: 13 // 2 = 6 for the first, the remaining 7 for the last
    # (equal sizes: the later index gets the extra sample).
    assert split_budget([2, 10, 10], 15).tolist() == [2, 6, 7]
    assert split_budget([10, 10, 2], 15).tolist() == [6, 7, 2]
    assert split_budget([5, 5, 5], 9).tolist() == [3, 3, 3]
    assert split_budget([1, 1, 30], 10).tolist() == [1, 1, 8]
    assert split_budget([3, 4], 100).tolist() == [3, 4]                # budget above the pool
    assert split_budget([3, 4], 0).tolist() == [0, 0]
    assert split_budget([0, 4], 2).tolist() == [0, 2]                  # empty cluster


def test_split_budget_total_is_exact_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 50, size=rng.integers(1, 12))
        t = int(rng.integers(0, 400))
        q = split_budget(sizes, t)
        assert q.sum() == min(t, sizes.sum())
        assert (q >= 0).all() and (q <= sizes).all()
        # no cluster below its size gets fewer than another cluster's quota minus one
        open_ = q < sizes
        if open_.any():
            assert q.max() <= q[open_].min() + 1


def test_water_fill_rejects_bad_input():
    with pytest.raises(ValueError):
        water_fill(np.array([-1, 2]), 1)
    with pytest.raises(ValueError):
        water_fill(np.array([1, 2]), -1)


def strata_example():
    """Scores over [0, 4] with 4 bins of width 1 holding 1, 2, 5 and 10 samples."""
    bins = [np.array([0.0]), np.array([1.2, 1.5]), np.linspace(2.1, 2.9, 5), np.linspace(3.05, 4.0, 10)]
    return np.concatenate(bins), np.repeat(np.arange(4), [1, 2, 5, 10])


def test_ccs_quotas_hand_example():
    scores, bin_of = strata_example()
    # budget 12 over bins sized 1, 2, 5, 10 (smallest first): min(1, 12//4=3)=1, then
    # min(2, 11//3=3)=2, then min(5, 9//2=4)=4, then the last 5 -> quotas 1, 2, 4, 5.
    for seed in range(5):
        picked = ccs_sample(scores, 12, np.random.default_rng(seed), bins=4, trim=0.0)
        assert len(picked) == 12 and len(set(picked.tolist())) == 12
        assert np.bincount(bin_of[picked], minlength=4).tolist() == [1, 2, 4, 5]
    # budget 4: one per bin
    picked = ccs_sample(scores, 4, np.random.default_rng(0), bins=4, trim=0.0)
    assert np.bincount(bin_of[picked], minlength=4).tolist() == [1, 1, 1, 1]


def test_ccs_samples_tails_only_when_the_trimmed_range_is_short():
    rng = np.random.default_rng(0)
    scores = np.concatenate([[-100.0, -90.0], rng.uniform(0, 1, 36), [90.0, 100.0]])  # 2 tails per side
    tails = {0, 1, 38, 39}
    picked = ccs_sample(scores, 36, np.random.default_rng(1))
    assert tails.isdisjoint(picked.tolist()) and len(picked) == 36
    picked = ccs_sample(scores, 38, np.random.default_rng(1))
    assert len(picked) == 38 and len(tails & set(picked.tolist())) == 2
    assert ccs_sample(scores, 99, np.random.default_rng(1)).tolist() == list(range(40))
    assert ccs_sample(scores, 0, np.random.default_rng(1)).tolist() == []


def test_ccs_is_deterministic_per_seed_and_varies_with_it():
    scores = np.random.default_rng(3).normal(size=500)
    a = ccs_sample(scores, 100, np.random.default_rng(7))
    b = ccs_sample(scores, 100, np.random.default_rng(7))
    c = ccs_sample(scores, 100, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (np.diff(a) > 0).all()
    with pytest.raises(ValueError):
        ccs_sample(np.array([1.0, np.nan]), 1, np.random.default_rng(0))


def test_softmax_known_values():
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3)]), 1.0), [0.25, 0.75])
    np.testing.assert_allclose(softmax(np.array([0.0, 2 * math.log(3)]), 2.0), [0.25, 0.75])
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0]), 0.01), [0.5, 0.5])  # no overflow
    with pytest.raises(ValueError):
        softmax(np.array([1.0]), 0.0)


def test_proportional_quotas_cap_and_redistribute():
    # shares 25, 15, 10; cluster 0 holds 10, its excess 15 is re-split 3:2 -> 24, 16
    assert proportional_quotas(np.array([0.5, 0.3, 0.2]), np.array([10, 100, 100]), 50).tolist() == [10, 24, 16]
    # equal weights, 10 over 3: floors 3, 3, 3 and the remainder to the lowest index
    assert proportional_quotas(np.ones(3), np.array([10, 10, 10]), 10).tolist() == [4, 3, 3]
    # a cascade: capping cluster 0 pushes cluster 1 over its size too
    assert proportional_quotas(np.array([0.6, 0.3, 0.1]), np.array([5, 6, 100]), 40).tolist() == [5, 6, 29]
    # zero weight gets nothing unless the others are exhausted
    assert proportional_quotas(np.array([1.0, 0.0]), np.array([5, 5]), 4).tolist() == [4, 0]
    assert proportional_quotas(np.array([1.0, 0.0]), np.array([5, 5]), 8).tolist() == [5, 3]
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 10))
        sizes = rng.integers(0, 30, k)
        t = int(rng.integers(0, 200))
        q = proportional_quotas(rng.dirichlet(np.ones(k)), sizes, t)
        assert q.sum() == min(t, sizes.sum()) and (q >= 0).all() and (q <= sizes).all()


def test_shifted_quotas_solve_the_qp():
    # x = clip(t + λ, lo, hi): cluster 0 capped at 3, then 3 + λ + 2 + λ = 7 -> λ = 1
    assert shifted_quotas(np.array([5.0, 3.0, 2.0]), np.zeros(3), np.array([3, 10, 10]), 10).tolist() == [3, 4, 3]
    # lower bounds bind: 8 + λ + 2 + 2 = 10 -> λ = -2, the others clip up to 2
    assert shifted_quotas(np.array([8.0, 1.0, 1.0]), np.full(3, 2), np.full(3, 10), 10).tolist() == [6, 2, 2]
    # targets already feasible and integral: unchanged
    assert shifted_quotas(np.array([2.0, 5.0]), np.zeros(2), np.array([9, 9]), 7).tolist() == [2, 5]
    # the QP's real solution 10/3 each, rounded to 4, 3, 3
    assert shifted_quotas(np.zeros(3), np.zeros(3), np.full(3, 9), 10).tolist() == [4, 3, 3]
    with pytest.raises(ValueError):
        shifted_quotas(np.zeros(2), np.full(2, 6), np.full(2, 9), 10)   # lower bounds exceed the total
    rng = np.random.default_rng(1)
    for _ in range(200):
        k = int(rng.integers(1, 10))
        hi = rng.integers(0, 30, k)
        t = int(rng.integers(0, 200))
        q = shifted_quotas(rng.dirichlet(np.ones(k)) * t, np.zeros(k), hi, t)
        assert q.sum() == min(t, hi.sum()) and (q >= 0).all() and (q <= hi).all()


def test_round_quotas_largest_remainder():
    assert round_quotas(np.array([1.5, 2.7, 0.8]), np.array([9, 9, 9]), 5).tolist() == [1, 3, 1]
    # the cap blocks the largest remainder: the next one gets it
    assert round_quotas(np.array([2.0, 2.9, 0.1]), np.array([9, 2, 9]), 5).tolist() == [2, 2, 1]
    # short allocation filled evenly over the room left
    assert round_quotas(np.zeros(3), np.array([1, 5, 5]), 6).tolist() == [1, 2, 3]


# ---- safeguards: CCS bins, diffuse clusters, mastered samples, guarded budget split ------

def test_ccs_bin_rule():
    assert ccs_bins("fixed", 50, 15) == 50          # the paper: 50 strata whatever the quota
    assert ccs_bins("quota", 50, 15) == 15          # one stratum per sample the quota allows
    assert ccs_bins("quota", 50, 80) == 50
    assert ccs_bins("quota", 50, 0) == 1
    with pytest.raises(ValueError, match="bin rule"):
        ccs_bins("sqrt", 50, 10)


def test_cluster_cosines_and_diffuse_flag():
    e = np.eye(4, dtype=np.float32)
    # cluster 0: one direction repeated (cosine 1); cluster 1: 4 orthogonal directions
    # (mean direction (1,1,1,1)/2: cosine 0.5 each); cluster 2: two opposite directions (0).
    x = np.vstack([e[[0, 0, 0]], e, e[[1]], -e[[1]]])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    cos = cluster_cosines(x, labels, 4)
    assert cos[:3] == pytest.approx([1.0, 0.5, 0.0])
    assert np.isnan(cos[3])                                    # empty cluster
    # median of (1, 0.5, 0) is 0.5: below 0.5 × 0.5 only cluster 2
    assert diffuse_clusters(cos, 0.5).tolist() == [False, False, True, False]
    assert not diffuse_clusters(np.array([0.3]), 0.5).any()   # nothing to compare with


def test_mastered_mask_is_a_loss_threshold():
    ppl = np.array([1.01, math.exp(0.049), math.exp(0.051), 3.0, np.nan])
    assert mastered_mask(ppl, 0.05).tolist() == [True, True, False, False, False]
    assert mastered_mask(None, 0.05) is None


def test_guarded_split_known_answers():
    sizes = np.array([100, 10, 10, 10])
    # paper: uniform water-fill, 10 each
    assert guarded_split(sizes, 40).tolist() == [10, 10, 10, 10]
    # the flagged catch-all gets its size share floor(40·100/130) = 30; the other 10 are
    # water-filled over the three small clusters (3, 3, 4)
    assert guarded_split(sizes, 40, flagged=np.array([True, False, False, False])).tolist() == [30, 3, 3, 4]
    # a small flagged cluster keeps its uniform share (larger than its size share)
    assert guarded_split(np.array([10, 100, 100]), 30, flagged=np.array([True, False, False])).tolist() == [10, 10, 10]
    # Table-3 "density": by size
    assert guarded_split(np.array([60, 30, 10]), 10, "density").tolist() == [6, 3, 1]
    # the flagged share cannot take more than the cluster has; leftovers go back
    q = guarded_split(np.array([5, 2]), 7, flagged=np.array([True, False]))
    assert q.tolist() == [5, 2]
    with pytest.raises(ValueError, match="budget split"):
        guarded_split(sizes, 10, "size")


def _mastered_pool(seed: int = 0):
    from adaptinf.selection import PoolFeatures
    rng = np.random.default_rng(seed)
    centres = np.eye(16)[:3] * 10
    skills = np.repeat(np.arange(3), 50)
    grads = np.vstack([centres[skills] + rng.normal(size=(150, 16)),
                       rng.normal(size=(60, 16))])              # 60 mastered: noise directions
    grads /= np.linalg.norm(grads, axis=1, keepdims=True)
    ppl = np.concatenate([rng.uniform(2, 5, 150), np.full(60, 1.001)])
    n = len(ppl)
    return PoolFeatures(uids=[f"d/{i}" for i in range(n)], datasets=["d"] * n, is_new=np.ones(n, bool),
                        grads=grads.astype(np.float32), scores={"perplexity": ppl, "el2n": rng.uniform(0, 1, n)})


def test_adapt_inf_mastered_group_and_quota_bins():
    from adaptinf.selection import SelectionContext, get_strategy
    feats = _mastered_pool()
    ctx = SelectionContext(budget=40, seed=0, k_min=2, k_max=8, nredo=3, k_rule="gain",
                           mastered="group", ccs_bin_rule="quota", scorers=("perplexity", "el2n"))
    res = get_strategy("adapt-inf").select(feats, ctx)
    rep = res.report
    assert rep["mastered"] == 60 and rep["k"] == 4            # 3 skills + the mastered group
    assert (res.labels[150:] == 3).all() and len(set(res.labels[:150].tolist())) == 3
    # 4 groups of (50, 50, 50, 60), T = 40: by default the group is one cluster, 10 each
    assert rep["mastered_budget"] == "cluster" and rep["quotas"] == [10, 10, 10, 10]
    assert all(c["bins"] == min(50, c["quota"]) for c in rep["clusters"])
    # masteredBudget "size": its size share floor(40·60/210) = 11 beats its uniform 10; the
    # skills share the other 29 (9, 10, 10)
    by_size = get_strategy("adapt-inf").select(feats, replace(ctx, mastered_budget="size")).report
    assert by_size["quotas"][3] == 11 and sum(by_size["quotas"]) == 40
    with pytest.raises(ValueError, match="masteredBudget"):
        get_strategy("adapt-inf").select(feats, replace(ctx, mastered_budget="most"))
    paper = get_strategy("adapt-inf").select(feats, SelectionContext(budget=40, seed=0, k_min=2, k_max=8,
                                                                     scorers=("perplexity", "el2n")))
    assert paper.report["mastered"] == 0 and all(c["bins"] == 50 for c in paper.report["clusters"])


def test_stratified_rehearsal_spreads_the_mastered_quota_over_its_hidden_state_clusters():
    """54 of the 60 mastered samples are one skill, 6 another (distinct hidden states): one draw
    over the group gives the small skill about a tenth of the group's quota, the stratified
    rehearsal an even share over the group's hidden-state clusters."""
    from adaptinf.selection import SelectionContext, get_strategy
    feats = _mastered_pool()
    rng = np.random.default_rng(1)
    hidden = rng.normal(scale=0.05, size=(210, 8))
    hidden[:150, 0] += 1.0                          # the 150 skill samples
    hidden[150:204, 1] += 1.0                       # mastered skill A: 54
    hidden[204:, 2] += 1.0                          # mastered skill B: 6
    ctx = SelectionContext(budget=40, seed=0, k_min=2, k_max=8, nredo=3, k_rule="gain",
                           mastered="group", ccs_bin_rule="quota", scorers=("perplexity", "el2n"))
    with pytest.raises(ValueError, match="hidden"):   # stratified needs hidden states
        get_strategy("adapt-inf").select(feats, replace(ctx, mastered_rehearsal="stratified"))
    feats.hidden = hidden.astype(np.float32)
    small = set(range(204, 210))
    pooled = get_strategy("adapt-inf").select(feats, ctx)
    strat = get_strategy("adapt-inf").select(feats, replace(ctx, mastered_rehearsal="stratified"))
    # The same budget over the same clusters; only the group's draw differs.
    assert pooled.report["quotas"] == strat.report["quotas"] == [10, 10, 10, 10]
    assert len(strat.indices) == len(pooled.indices) == 40
    assert len(small & set(pooled.indices.tolist())) <= 2
    group = strat.report["clusters"][3]
    assert strat.report["mastered_rehearsal"] == "stratified" and group["mastered_group"]
    # k-means may split the big skill further, but the small one is a stratum of its own and
    # gets an even share of the group's 10, more than one draw over the group gives it.
    sizes = [s["size"] for s in group["strata"]]
    assert 6 in sizes and sum(sizes) == 60
    assert sum(s["quota"] for s in group["strata"]) == 10
    got = len(small & set(strat.indices.tolist()))
    assert got >= 10 // len(sizes) and got > len(small & set(pooled.indices.tolist()))
    with pytest.raises(ValueError, match="masteredRehearsal"):
        get_strategy("adapt-inf").select(feats, replace(ctx, mastered_rehearsal="even"))


def test_adapt_inf_clusters_hidden_states_for_the_ablation():
    from adaptinf.selection import SelectionContext, get_strategy
    feats = _mastered_pool()
    with pytest.raises(ValueError, match="hidden"):
        get_strategy("adapt-inf").select(feats, SelectionContext(budget=20, seed=0, cluster_features="hidden"))
    feats.hidden = np.repeat(np.eye(8, dtype=np.float32)[:2], [100, 110], axis=0)
    res = get_strategy("adapt-inf").select(feats, SelectionContext(budget=20, seed=0, k_min=2, k_max=4,
                                                                   cluster_features="hidden", k_rule="gain"))
    assert res.report["k"] == 2 and res.report["cluster_features"] == "hidden"
    assert res.labels[:100].tolist() == [res.labels[0]] * 100


def test_stage_builds_the_selection_context_from_the_spec():
    from types import SimpleNamespace

    from adaptinf.spec import LifelongRunSpec
    from adaptinf.stages.cluster_select import selection_context
    spec = LifelongRunSpec.model_validate({
        "model": {"base": "m"}, "trainBudget": 10, "storage": {"uri": "s"},
        "clustering": {"kRule": "elbow", "nredo": 2, "features": "hidden"},
        "selection": {"ccsBins": 20, "budgetSplit": "density", "mastered": "none", "diffuseRatio": 0.4,
                      "masteredBudget": "size"}})
    ctx = selection_context(SimpleNamespace(spec=spec, step=2), ("perplexity",))
    assert ctx.mastered_budget == "size"
    assert (ctx.k_rule, ctx.nredo, ctx.cluster_features, ctx.ccs_bins, ctx.ccs_bin_rule, ctx.budget_split,
            ctx.mastered, ctx.diffuse, ctx.diffuse_ratio, ctx.stability_seeds, ctx.seed) == \
        ("elbow", 2, "hidden", 20, "quota", "density", "none", "size", 0.4, 2, 2)
