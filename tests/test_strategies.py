"""Every registered selection strategy honours the contract; known answers for the baselines."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaptinf.selection import PoolFeatures, SelectionContext, available, get_strategy
from adaptinf.selection.coincide import cluster_density, greedy_mmd_prototypes, transferability
from adaptinf.selection.primitives import proportional_quotas, softmax

SCORERS = ("perplexity", "image-grounding", "el2n", "entropy")
N, N_NEW = 240, 60
# Strategies whose draw is random beyond k-means (a new seed must change the selection). The
# embedding baselines are deterministic given the clustering, and on well separated clusters
# a new k-means seed may find the same clusters, so they are not expected to change.
STOCHASTIC = {"adapt-inf", "lite-adapt-inf", "random", "el2n", "entropy", "perplexity", "image-grounding",
              "replay"}


def make_pool(n: int = N, n_new: int = N_NEW, seed: int = 0, kinds=("grads", "hidden", "scores")) -> PoolFeatures:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 5, n)
    hidden = (3.0 * rng.normal(size=(5, 24))[label] + rng.normal(size=(n, 24))).astype(np.float32)
    grads = (2.0 * rng.normal(size=(4, 32))[rng.integers(0, 4, n)] + rng.normal(size=(n, 32))).astype(np.float32)
    grads /= np.linalg.norm(grads, axis=1, keepdims=True)
    scores = {s: rng.gamma(2.0, 1.0 + i, n) for i, s in enumerate(SCORERS)}
    scores["image-grounding"][rng.random(n) < 0.2] = np.nan       # text-only samples
    datasets = ["old-a"] * ((n - n_new) // 2) + ["old-b"] * (n - n_new - (n - n_new) // 2) + ["new"] * n_new
    return PoolFeatures(uids=[f"{d}/{i}" for i, d in enumerate(datasets)], datasets=datasets,
                        is_new=np.arange(n) >= n - n_new,
                        grads=grads if "grads" in kinds else None,
                        hidden=hidden if "hidden" in kinds else None,
                        scores=scores if "scores" in kinds else {})


def ctx(budget: int, seed: int = 0, **kw) -> SelectionContext:
    return SelectionContext(budget=budget, seed=seed, k_min=2, k_max=8, **kw)


@pytest.fixture(scope="module")
def pool() -> PoolFeatures:
    return make_pool()


def check_indices(indices: np.ndarray, n: int) -> None:
    assert indices.dtype.kind == "i"
    assert (np.diff(indices) > 0).all(), "sorted and unique"
    assert len(indices) == 0 or (indices.min() >= 0 and indices.max() < n)


@pytest.mark.parametrize("name", available())
def test_contract(name, pool):
    strategy = get_strategy(name)
    assert strategy.name == name and strategy.needs <= {"grads", "hidden", "scores"}
    for budget in (0, 50, 1000):
        result = strategy.select(pool, ctx(budget))
        check_indices(result.indices, len(pool))
        report = json.loads(json.dumps(result.report, allow_nan=False))   # strict JSON
        assert report["strategy"] == name and report["selected"] == len(result.indices)
        if strategy.budgeted:
            assert len(result.indices) == min(budget, len(pool))
        if "quotas" in report:
            assert sum(report["quotas"]) == len(result.indices)
            assert sum(report["cluster_sizes"]) == len(pool) and len(report["quotas"]) == report["k"]
            assert all(0 <= q <= s for q, s in zip(report["quotas"], report["cluster_sizes"]))
            # the quotas are what was actually selected per cluster
            assert np.bincount(result.labels[result.indices], minlength=report["k"]).tolist() == report["quotas"]
        if result.labels is not None:
            assert result.labels.shape == (len(pool),)


@pytest.mark.parametrize("name", available())
def test_deterministic_per_seed(name, pool):
    strategy = get_strategy(name)
    a, b = strategy.select(pool, ctx(50, seed=3)), strategy.select(pool, ctx(50, seed=3))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert json.dumps(a.report, sort_keys=True) == json.dumps(b.report, sort_keys=True)
    if name in STOCHASTIC:
        assert not np.array_equal(a.indices, strategy.select(pool, ctx(50, seed=4)).indices)


@pytest.mark.parametrize("name", available())
def test_small_pool_gives_everything(name):
    small = make_pool(n=6, n_new=2)
    strategy = get_strategy(name)
    result = strategy.select(small, ctx(10))
    check_indices(result.indices, 6)
    if strategy.budgeted:
        assert result.indices.tolist() == list(range(6))


@pytest.mark.parametrize("name", [s for s in available() if get_strategy(s).needs])
def test_missing_feature_is_a_clear_error(name):
    for kind in sorted(get_strategy(name).needs):
        feats = make_pool(kinds=[k for k in ("grads", "hidden", "scores") if k != kind])
        with pytest.raises(ValueError, match=f"{name}.*{kind}"):
            get_strategy(name).select(feats, ctx(50))


def test_unknown_option_is_rejected(pool):
    for name in available():
        with pytest.raises(ValueError, match="no option"):
            get_strategy(name).select(pool, ctx(50, options={"no_such_knob": 1}))


def test_regimes_ignore_the_budget(pool):
    new = np.flatnonzero(pool.is_new)
    old = np.flatnonzero(~pool.is_new)
    assert get_strategy("sequential").select(pool, ctx(5)).indices.tolist() == new.tolist()
    assert get_strategy("multitask").select(pool, ctx(5)).indices.tolist() == list(range(N))
    replay = get_strategy("replay").select(pool, ctx(5)).indices
    assert set(new) <= set(replay.tolist())
    assert len(set(replay.tolist()) & set(old.tolist())) == 18          # round(0.1 * 180)


def test_replay_rounds_half_up():
    feats = make_pool(n=35, n_new=10)                                  # 25 old -> 2.5 -> 3
    replay = get_strategy("replay").select(feats, ctx(0)).indices
    assert len(replay) == 13 and replay[-10:].tolist() == list(range(25, 35))
    feats = make_pool(n=34, n_new=10)                                  # 24 old -> 2.4 -> 2
    assert len(get_strategy("replay").select(feats, ctx(0)).indices) == 12


def test_adapt_inf_without_any_score_is_an_error(pool):
    with pytest.raises(ValueError, match="scores"):
        get_strategy("adapt-inf").select(pool, ctx(50, scorers=("no-such-score",)))


# ---- SemDeDup ---------------------------------------------------------------------------

def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def feats_from_hidden(hidden: np.ndarray) -> PoolFeatures:
    n = len(hidden)
    return PoolFeatures(uids=[f"d/{i}" for i in range(n)], datasets=["d"] * n, is_new=np.zeros(n, bool),
                        hidden=np.asarray(hidden, np.float32))


def test_semdedup_hand_example():
    # One cluster of unit vectors at 0°, 1°, 30°, 60°, 61°; the centroid points near 30°.
    # Keep order (farthest from the centroid first): 61°, 0°, 60°, 1°, 30°, and
    # M = [-inf, cos 61°, cos 1°, cos 1°, cos 29°]. Keeping 3 keeps 61°, 0° and 30°:
    # one of each near-duplicate pair plus the distinct middle one.
    feats = feats_from_hidden(np.array([unit(a) for a in (0, 1, 30, 60, 61)]))
    result = get_strategy("semdedup").select(feats, ctx(3, options={"k": 1}))
    assert result.indices.tolist() == [0, 2, 4]
    assert result.report["max_kept_similarity"] == pytest.approx(math.cos(math.radians(29)), abs=1e-6)
    assert result.report["min_removed_similarity"] == pytest.approx(math.cos(math.radians(1)), abs=1e-6)
    assert result.report["epsilon"] == pytest.approx(1 - math.cos(math.radians(29)), abs=1e-6)
    # keeping 2: 61° and 0° (30° has M = cos 29° > cos 61°)
    assert get_strategy("semdedup").select(feats, ctx(2, options={"k": 1})).indices.tolist() == [0, 4]


def test_semdedup_removes_exact_duplicates_first():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    hidden = np.concatenate([base, base[:15]])                         # 15 exact copies
    result = get_strategy("semdedup").select(feats_from_hidden(hidden), ctx(40))
    kept = hidden[result.indices]
    assert len(np.unique(kept.round(6), axis=0)) == 40                  # every distinct row exactly once


# ---- density-based pruning ----------------------------------------------------------------

def three_clusters(spreads=(0.02, 0.3, 0.3), per=(40, 40, 40), seed=0, common=0.0):
    """Clusters around 10·e_c (+ common·e_7, which makes centroid cosines positive)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 10
    centres[:, 7] = common
    rows = [centres[c] + s * 10 * rng.normal(size=(m, 8)) for c, (s, m) in enumerate(zip(spreads, per))]
    return np.concatenate(rows).astype(np.float32), np.repeat(np.arange(3), per)


def test_density_budgets_follow_complexity():
    hidden, truth = three_clusters()
    feats = feats_from_hidden(hidden)
    result = get_strategy("density").select(feats, ctx(60, options={"k": 3, "temperature": 0.01}))
    rep = result.report
    # the softmax of complexity / τ is what the report's probabilities say
    cx = np.array(rep["complexity"])
    np.testing.assert_allclose(cx, np.array(rep["d_intra"]) * np.array(rep["d_inter"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rep["probabilities"], softmax(cx, 0.01), rtol=1e-9, atol=1e-12)
    # the tight cluster (spread 0.02) is simple and gets the least; the total is exact
    tight = int(np.bincount(result.labels[truth == 0]).argmax())
    assert rep["quotas"][tight] == min(rep["quotas"]) and sum(rep["quotas"]) == 60
    # a high temperature flattens the split to uniform
    flat = get_strategy("density").select(feats, ctx(60, options={"k": 3, "temperature": 1e6}))
    assert flat.report["quotas"] == [20, 20, 20]


def test_density_within_rules():
    hidden, _ = three_clusters(spreads=(0.3, 0.3, 0.3))
    feats = feats_from_hidden(hidden)
    hard = get_strategy("density").select(feats, ctx(30, options={"k": 3, "within": "hard"}))
    x = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    for c in range(3):
        members = np.flatnonzero(hard.labels == c)
        centre = x[members].mean(axis=0)
        dist = 1 - x[members] @ (centre / np.linalg.norm(centre))
        kept = np.isin(members, hard.indices)
        assert dist[kept].min() >= dist[~kept].max() - 1e-6             # the farthest are kept
    r1 = get_strategy("density").select(feats, ctx(30, seed=1, options={"k": 3, "within": "random"}))
    r2 = get_strategy("density").select(feats, ctx(30, seed=2, options={"k": 3, "within": "random"}))
    assert len(r1.indices) == len(r2.indices) == 30 and not np.array_equal(r1.indices, r2.indices)
    with pytest.raises(ValueError, match="within"):
        get_strategy("density").select(feats, ctx(30, options={"within": "best"}))


# ---- COINCIDE -----------------------------------------------------------------------------

def test_transferability_hand_example():
    # centroids at 0°, 90°, 180°: cosines [[1,0,-1],[0,1,0],[-1,0,1]] -> mean over the others
    c = np.array([unit(0), unit(90), unit(180)])
    np.testing.assert_allclose(transferability(c), [-0.5, 0.0, -0.5], atol=1e-12)
    # a near-duplicate centroid (cos 5° > 0.9) is left out of the mean
    c = np.array([unit(0), unit(5), unit(90)])
    np.testing.assert_allclose(transferability(c), [0.0, math.cos(math.radians(85)),
                                                    (math.cos(math.radians(90)) + math.cos(math.radians(85))) / 2],
                               atol=1e-12)
    assert transferability(np.array([unit(0)])).tolist() == [0.0]


def test_cluster_density_hand_example():
    # two points at distance 2 (σ = 1): pairs (a,a), (b,b) give 1, (a,b), (b,a) give e^{-2}
    x = np.array([[0.0, 1.0], [0.0, -1.0]])
    assert cluster_density(x, 1.0) == pytest.approx((2 + 2 * math.exp(-2)) / 4)
    assert cluster_density(np.ones((5, 3)), 0.5) == pytest.approx(1.0)


def mmd_brute_force(x: np.ndarray, quota: int, bandwidth: float) -> list[int]:
    """The public code's greedy MMD selection, written out (every candidate set re-formed)."""
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * bandwidth**2))
    chosen: list[int] = []
    for _ in range(quota):
        best, best_val = -1, np.inf
        for c in range(len(x)):
            if c in chosen:
                continue
            s = chosen + [c]
            val = k.mean() + k[np.ix_(s, s)].mean() - 2 * k[:, s].mean()
            if val < best_val - 1e-12:
                best, best_val = c, val
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_mmd_equals_brute_force(seed):
    x = np.random.default_rng(seed).normal(size=(25, 4))
    for quota in (1, 4, 9):
        assert greedy_mmd_prototypes(x, quota, 1.5).tolist() == mmd_brute_force(x, quota, 1.5)
    assert greedy_mmd_prototypes(x, 30, 1.5).tolist() == list(range(25))


def test_greedy_mmd_first_pick_is_the_medoid_of_a_blob():
    # the first prototype minimises MMD to the whole cluster: the most central point
    x = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [3.0, 3.0]])
    assert greedy_mmd_prototypes(x, 1, 1.0).tolist() == [0]


def test_coincide_allocation_matches_its_definition():
    hidden, truth = three_clusters(spreads=(0.02, 0.3, 0.3), common=20.0)
    feats = feats_from_hidden(hidden)
    result = get_strategy("coincide").select(feats, ctx(45, options={"k": 3, "temperature": 0.5}))
    rep = result.report
    score = np.array(rep["transferability"]) / np.array(rep["density"])
    assert min(rep["transferability"]) > 0
    np.testing.assert_allclose(rep["weights"], softmax(score, 0.5), rtol=1e-9, atol=1e-12)
    expect = proportional_quotas(softmax(score, 0.5), np.array(rep["cluster_sizes"]), 45)
    assert rep["quotas"] == expect.tolist() and sum(rep["quotas"]) == 45
    # the tight cluster is dense (kernel mean near 1) and so gets the smallest share
    tight = int(np.bincount(result.labels[truth == 0]).argmax())
    assert rep["density"][tight] == max(rep["density"]) and rep["quotas"][tight] == min(rep["quotas"])
