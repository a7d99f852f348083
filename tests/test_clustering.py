"""Pseudo-task clustering: faiss k-means, the log-WSS kneedle elbow, k range clamping."""
from __future__ import annotations

import numpy as np
import pytest

from sklearn.metrics import adjusted_rand_score

from adaptinf import clustering
from adaptinf.clustering import choose_k, elbow_k, gain_k, k_range, k_stability, kmeans, nmi, pick_k


def blobs(seed: int, centres: int = 7, per: int = 120, dim: int = 16, spread: float = 0.3):
    """`centres` gaussian blobs: centres ~ N(0, 25 I) (pairwise distance ~ 28), std `spread`."""
    rng = np.random.default_rng(seed)
    mu = 5.0 * rng.normal(size=(centres, dim))
    truth = np.repeat(np.arange(centres), per)
    x = mu[truth] + spread * rng.normal(size=(len(truth), dim))
    return x.astype(np.float32), truth


@pytest.mark.parametrize("data_seed", [0, 1, 2, 3])
def test_elbow_finds_the_number_of_blobs(data_seed):
    x, truth = blobs(data_seed)
    for seed in (0, 1, 2):
        res = choose_k(x, k_min=2, k_max=15, seed=seed)
        assert res.k == 7, (data_seed, seed, res.wss_by_k)
        assert sorted(res.wss_by_k) == list(range(2, 16))
        # the clusters are the blobs: each blob maps to exactly one label and vice versa
        pairs = set(zip(truth.tolist(), res.labels.tolist()))
        assert len(pairs) == 7 and len({p[1] for p in pairs}) == 7


def test_elbow_three_blobs_in_higher_dimension():
    x, _ = blobs(5, centres=3, per=200, dim=64, spread=0.5)
    assert choose_k(x, 2, 10, seed=0).k == 3


def test_elbow_rule_on_hand_made_curves():
    ks = list(range(2, 16))
    # Drop by a factor ~15 at k=7 and flat afterwards (the 7-blob curve that raw kneedle
    # misplaces at k=6): the log-scale elbow is k=7.
    wss = [293358, 200296, 125633, 57546, 23073, 1491, 1475, 1461, 1446, 1435, 1425, 1411, 1395, 1378]
    assert elbow_k(ks, wss) == 7
    # order of the inputs does not matter
    assert elbow_k(ks[::-1], wss[::-1]) == 7
    # a straight line (in log space) has no elbow: the smallest k
    assert elbow_k([1, 2, 3, 4], [8.0, 4.0, 2.0, 1.0]) == 1
    # flat curve, fewer than three points
    assert elbow_k([3, 4, 5], [2.0, 2.0, 2.0]) == 3
    assert elbow_k([3, 9], [5.0, 1.0]) == 3
    # zero WSS (a perfect fit: k = the number of distinct points) is floored, not log(0), and
    # the perfect fit is the elbow; float noise below the floor cannot move it
    assert elbow_k([1, 2, 3, 4], [100.0, 1.0, 0.0, 0.0]) == 3
    assert elbow_k([1, 2, 3, 4], [100.0, 1.0, 3e-5, 1e-7]) == 3
    with pytest.raises(ValueError):
        elbow_k([1, 2], [1.0])
    with pytest.raises(ValueError):
        elbow_k([1, 2, 3], [1.0, -1.0, 0.5])


def test_kmeans_is_deterministic_per_seed_and_wss_is_exact():
    x, _ = blobs(0, centres=4, per=50, spread=2.0)
    l1, c1, w1 = kmeans(x, 5, seed=3)
    l2, c2, w2 = kmeans(x, 5, seed=3)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(c1, c2)
    assert w1 == w2
    # WSS is the squared distance of every point to its nearest centroid
    d2 = ((x[:, None, :].astype(np.float64) - c1[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(l1, d2.argmin(axis=1))
    assert w1 == pytest.approx(d2.min(axis=1).sum(), rel=1e-4)
    # another seed starts elsewhere (5 centroids over 4 overlapping blobs: not a unique optimum)
    _, c3, _ = kmeans(x, 5, seed=4)
    assert not np.array_equal(c1, c3)


def test_choose_k_is_deterministic_per_seed():
    x, _ = blobs(1, centres=5, per=40, spread=1.5)
    a, b = choose_k(x, 2, 9, seed=11), choose_k(x, 2, 9, seed=11)
    assert a.k == b.k and a.wss_by_k == b.wss_by_k
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_k_range_clamps_for_small_pools():
    assert k_range(1000, 5, 50) == (5, 50)
    assert k_range(60, 5, 50) == (5, 30)       # at most n // 2 clusters
    assert k_range(9, 5, 50) == (4, 4)         # k_min follows k_max down
    assert k_range(3, 2, 8) == (1, 1)
    assert k_range(1, 5, 50) == (1, 1)
    with pytest.raises(ValueError):
        k_range(0, 5, 50)
    with pytest.raises(ValueError):
        k_range(10, 6, 5)


def test_choose_k_on_tiny_pools():
    x = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    res = choose_k(x, 5, 50)
    assert res.k == 4 and list(res.wss_by_k) == [4]
    assert set(res.labels.tolist()) <= set(range(4))
    one = choose_k(x[:1], 5, 50)
    assert one.k == 1 and one.labels.tolist() == [0] and one.wss_by_k[1] == pytest.approx(0.0, abs=1e-6)


def test_kmeans_rejects_bad_input():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError):
        kmeans(x, 5)
    with pytest.raises(ValueError):
        kmeans(x, 0)
    with pytest.raises(ValueError):
        kmeans(np.zeros((0, 2), np.float32), 1)
    with pytest.raises(ValueError):
        kmeans(x, 2, nredo=0)


# ---- the relative-gain k rule, k stability, NMI ------------------------------------------

def test_gain_rule_on_hand_made_curves():
    ks = [2, 3, 4, 5, 6]
    # 50%, 50%, 4%, 2%: the first step that gains under 5% is 4 -> 5.
    assert gain_k(ks, [100, 50, 25, 24, 23.5], 0.05) == 4
    # every step gains 3% (no structure): the smallest k, not the sweep's end
    assert gain_k(ks, [100 * 0.97**i for i in range(5)], 0.05) == 2
    # every step gains 10%: the largest k
    assert gain_k(ks, [100 * 0.9**i for i in range(5)], 0.05) == 6
    # unsorted input is sorted by k first
    assert gain_k([4, 2, 3], [25, 100, 50], 0.05) == 4
    with pytest.raises(ValueError, match="min_gain"):
        gain_k(ks, [5, 4, 3, 2, 1], 0.0)
    with pytest.raises(ValueError, match="unknown k rule"):
        pick_k(ks, [5, 4, 3, 2, 1], "silhouette")


@pytest.mark.parametrize("data_seed", [0, 1])
def test_gain_rule_finds_the_number_of_blobs(data_seed):
    x, truth = blobs(data_seed)
    res = choose_k(x, k_min=2, k_max=15, seed=0, nredo=3, rule="gain")
    assert res.k == 7, res.wss_by_k
    assert nmi(res.labels, truth) == pytest.approx(1.0)


def test_gain_rule_does_not_follow_k_max_on_structureless_data():
    # Isotropic noise has no number of groups: the elbow runs with the sweep's end, the gain
    # rule stays put when kMax grows.
    x = np.random.default_rng(0).normal(size=(600, 32)).astype(np.float32)
    small = choose_k(x, 2, 12, seed=0, rule="gain").k
    large = choose_k(x, 2, 24, seed=0, rule="gain").k
    assert small == large


def test_nmi_known_answers():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert nmi(a, np.array([5, 5, 3, 3, 9, 9])) == pytest.approx(1.0)   # a relabelling
    assert nmi(a, np.zeros(6)) == pytest.approx(0.0)                    # one cluster: no information
    # two independent balanced halves: MI = 0
    assert nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        nmi(a, a[:3])


def test_k_stability_reports_each_seed():
    x, _ = blobs(0)
    chosen = choose_k(x, 2, 15, seed=0, nredo=3, rule="gain")
    st = k_stability(x, chosen, [1, 2], 2, 15, nredo=3, rule="gain")
    assert [r["k"] for r in st["runs"]] == [7, 7]
    assert st["k_min_seen"] == st["k_max_seen"] == 7 and st["mean_nmi"] == pytest.approx(1.0)


@pytest.mark.parametrize("rule", ["gain", "elbow"])
@pytest.mark.parametrize("data_seed", [0, 1, 2])
def test_fast_sweep_chooses_the_full_sweeps_k_on_blobs(rule, data_seed):
    x, truth = blobs(data_seed, centres=7, per=150)
    full = choose_k(x, 2, 15, seed=0, nredo=3, rule=rule, sweep="full")
    fast = choose_k(x, 2, 15, seed=0, nredo=3, rule=rule, sweep="fast")
    assert fast.k == full.k == 7, (fast.wss_by_k, full.wss_by_k)
    assert adjusted_rand_score(full.labels, fast.labels) >= 0.97
    assert adjusted_rand_score(truth, fast.labels) >= 0.97
    assert (fast.sweep, full.sweep) == ("fast", "full")
    assert len(fast.wss_by_k) < len(full.wss_by_k) == 14  # fewer k measured
    # The final clustering's restarts include full's: never a worse WSS at the same k.
    assert clustering._assign(x, fast.centroids)[1] <= full.wss_by_k[7] * (1 + 1e-6)


def test_fast_sweep_subsamples_large_pools(monkeypatch):
    x, truth = blobs(3, centres=5, per=1000, dim=8)
    monkeypatch.setattr(clustering, "SAMPLE_MIN_ROWS", 1000)  # so a test-sized pool is subsampled
    assert clustering.sample_rows(len(x), 8) == 1600  # 200 rows per cluster at kMax
    fast = choose_k(x, 2, 8, seed=0, rule="elbow", sweep="fast")
    full = choose_k(x, 2, 8, seed=0, rule="elbow", sweep="full")
    assert fast.sample_rows == 1600 and full.sample_rows == 5000 and fast.labels.shape == (5000,)
    assert fast.k == full.k == 5 and adjusted_rand_score(truth, fast.labels) >= 0.97
    assert fast.sweep_report() == {"sweep": "fast", "sample_rows": 1600, "k_evaluated": len(fast.wss_by_k)}


def test_elbow_search_equals_the_whole_grid_on_decreasing_curves():
    # Random non-increasing curves: the coarse-to-fine search returns elbow_k of the whole curve
    # while measuring fewer points.
    rng = np.random.default_rng(0)
    measured_fewer = 0
    for trial in range(200):
        lo, hi = 2, int(rng.integers(5, 60))
        drops = rng.exponential(1.0, hi - lo) * (rng.random(hi - lo) < 0.7) * rng.uniform(0.01, 3)
        curve = dict(zip(range(lo, hi + 1), np.exp(-np.concatenate([[0.0], np.cumsum(drops)])) * 1e3))
        asked: list[int] = []

        def wss_at(k: int) -> float:
            asked.append(k)
            return float(curve[k])

        assert clustering._elbow_search(lo, hi, wss_at) == elbow_k(list(curve), list(curve.values())), trial
        measured_fewer += len(set(asked)) < len(curve)
    assert measured_fewer > 100


def test_gain_search_stops_at_the_rules_answer():
    curve = {2: 100.0, 3: 50.0, 4: 20.0, 5: 19.5, 6: 5.0, 7: 4.0}
    asked: list[int] = []
    k = clustering._gain_search(2, 7, lambda kk: asked.append(kk) or curve[kk], 0.05)
    assert k == gain_k(list(curve), list(curve.values())) == 4
    assert sorted(set(asked)) == [2, 3, 4, 5]  # nothing past the stop


def test_unknown_sweep_is_a_clear_error():
    x, _ = blobs(0)
    with pytest.raises(ValueError, match="unknown k sweep 'quick'"):
        choose_k(x, 2, 5, sweep="quick")


def test_k_stability_names_the_sweep():
    x, _ = blobs(0)
    chosen = choose_k(x, 2, 15, seed=0, nredo=3, rule="gain", sweep="fast")
    st = k_stability(x, chosen, [1], 2, 15, nredo=3, rule="gain", sweep="fast")
    assert st["sweep"] == "fast" and [r["k"] for r in st["runs"]] == [7]


def test_auto_sweep_is_full_below_the_subsample_and_fast_above():
    """`auto` (the spec default) leaves pools that fit the fast sweep's subsample exactly as the
    full sweep clusters them, and uses the fast sweep on larger ones."""
    from adaptinf.clustering import SAMPLE_MIN_ROWS, sample_rows
    rng = np.random.default_rng(0)
    small = rng.normal(size=(300, 8)).astype(np.float32)
    auto, full = choose_k(small, 2, 6, seed=0, sweep="auto"), choose_k(small, 2, 6, seed=0, sweep="full")
    assert auto.sweep == "full" and auto.k == full.k and (auto.labels == full.labels).all()
    n = SAMPLE_MIN_ROWS + 50
    assert sample_rows(n, 6) < n
    big = rng.normal(size=(n, 4)).astype(np.float32)
    assert choose_k(big, 2, 6, seed=0, sweep="auto").sweep == "fast"
