"""Lite pruning: the faiss-accelerated greedy equals the O(n²) brute force."""
from __future__ import annotations

import numpy as np
import pytest

from adaptinf.prune import answer_groups, prune_pool, removal_counts


def brute_force(hidden, labels, counts_by_label, protect=None):
    """Reference: full similarity matrix per cluster, argmax by (max, second, index) each time."""
    x = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    x = x.astype(np.float32).astype(np.float64)
    protect = np.zeros(len(labels), bool) if protect is None else protect
    order = []
    for label in sorted(counts_by_label):
        members = np.flatnonzero(labels == label)
        s = x[members] @ x[members].T
        s = (s + s.T) / 2
        np.fill_diagonal(s, -np.inf)
        kept = np.ones(len(members), bool)
        for _ in range(counts_by_label[label]):
            best = None
            for i in np.flatnonzero(kept & ~protect[members]):
                row = np.sort(s[i, kept & (np.arange(len(members)) != i)])[::-1]
                key = (row[0] if len(row) else -np.inf, row[1] if len(row) > 1 else -np.inf, i)
                best = key if best is None or key > best else best
            kept[best[2]] = False
            order.append(int(members[best[2]]))
    return order


@pytest.mark.parametrize("seed,neighbours", [(0, 32), (1, 4), (2, 2), (3, 3)])
def test_greedy_equals_brute_force(seed, neighbours):
    rng = np.random.default_rng(seed)
    n = 240
    hidden = rng.normal(size=(n, 6)).astype(np.float32)
    dup = rng.choice(n, 20, replace=False)                     # some near-duplicates too
    hidden[dup[:10]] = hidden[dup[10:]] + 1e-3 * rng.normal(size=(10, 6)).astype(np.float32)
    labels = rng.integers(0, 4, n)
    result = prune_pool(hidden, labels, target_size=100, neighbours=neighbours)
    assert len(result.keep) == 100
    expected = brute_force(hidden, labels, result.per_cluster_removed)
    assert [r[0] for r in result.removed] == expected
    assert sorted(set(range(n)) - set(expected)) == result.keep.tolist()


def test_protected_samples_stay_and_still_count_as_neighbours():
    rng = np.random.default_rng(5)
    hidden = rng.normal(size=(80, 5)).astype(np.float32)
    labels = rng.integers(0, 2, 80)
    protect = np.zeros(80, bool)
    protect[rng.choice(80, 20, replace=False)] = True
    result = prune_pool(hidden, labels, target_size=40, protect=protect, neighbours=3)
    assert len(result.keep) == 40 and protect[result.keep].sum() == 20
    assert [r[0] for r in result.removed] == brute_force(hidden, labels, result.per_cluster_removed, protect)


def test_removal_counts_water_fill_from_the_largest():
    # sizes 10, 6, 3; remove 8: cut 10 -> 5 (5 removed) then both 6 and 5 ... level 4:
    # cut(4) = 6 + 2 = 8 -> sizes 4, 4, 3.
    assert removal_counts(np.array([10, 6, 3]), 8).tolist() == [6, 2, 0]
    # remove 3: level 7 gives exactly 3 from the largest only.
    assert removal_counts(np.array([10, 6, 3]), 3).tolist() == [3, 0, 0]
    # ties: sizes 5, 5, remove 3 -> level 4 cuts 1+1, the extra one goes to position 0.
    assert removal_counts(np.array([5, 5]), 3).tolist() == [2, 1]
    # capacity (protected samples) caps a cluster; the rest comes from the others.
    assert removal_counts(np.array([10, 6]), 6, capacity=np.array([2, 6])).tolist() == [2, 4]
    assert removal_counts(np.array([4, 4]), 0).tolist() == [0, 0]


def test_largest_clusters_pruned_first_and_target_exact():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [60, 30, 10])
    hidden = rng.normal(size=(100, 8)).astype(np.float32)
    result = prune_pool(hidden, labels, target_size=70)
    assert len(result.keep) == 70
    assert result.per_cluster_removed == {0: 30}
    result = prune_pool(hidden, labels, target_size=40)
    assert len(result.keep) == 40
    kept_sizes = np.bincount(labels[result.keep], minlength=3).tolist()
    assert kept_sizes == [15, 15, 10]
    assert prune_pool(hidden, labels, target_size=100).removed == []


def test_near_duplicates_removed_before_distinct_samples():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(20, 16)).astype(np.float32)
    copies = base[:5] + 1e-4 * rng.normal(size=(5, 16)).astype(np.float32)
    hidden = np.concatenate([base, copies])               # sample i+20 nearly duplicates i
    result = prune_pool(hidden, np.zeros(25, int), target_size=20)
    assert len(result.removed) == 5
    for index, cluster, sim, nearest in result.removed:
        assert cluster == 0 and sim > 0.999 and abs(index - nearest) == 20
    assert {min(r[0], r[3]) for r in result.removed} == set(range(5))  # one of each pair


def _unit(deg):
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg))]


def test_tie_breaks_second_similarity_then_larger_index():
    # a=0°, b=10°, c=-20°, d=100°: a and b share the max (cos 10°); a's second (cos 20°, to c)
    # beats b's (cos 30°), so a goes first although its index is smaller.
    hidden = np.array([_unit(0), _unit(10), _unit(-20), _unit(100)], np.float32)
    result = prune_pool(hidden, np.zeros(4, int), target_size=3)
    assert result.removed[0][0] == 0 and result.removed[0][3] == 1
    assert result.removed[0][2] == pytest.approx(np.cos(np.radians(10)))
    # exact duplicates with identical second similarities: the larger index goes.
    hidden = np.array([_unit(0), _unit(0), _unit(90)], np.float32)
    assert prune_pool(hidden, np.zeros(3, int), target_size=2).removed[0][0] == 1


def test_last_sample_of_a_cluster_has_no_neighbour():
    # target 0 empties both clusters; clusters go in label order; a lone sample has no
    # kept neighbour, recorded as (None, None).
    hidden = np.array([_unit(0), _unit(5), _unit(90)], np.float32)
    result = prune_pool(hidden, np.array([0, 0, 1]), target_size=0)
    assert len(result.keep) == 0
    assert [r[:2] for r in result.removed] == [(1, 0), (0, 0), (2, 1)]
    assert result.removed[0][2] == pytest.approx(np.cos(np.radians(5))) and result.removed[0][3] == 0
    assert result.removed[1][2:] == (None, None) and result.removed[2][2:] == (None, None)
    assert result.per_cluster_removed == {0: 2, 1: 1}


def test_higher_dimension_against_brute_force_with_short_lists():
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(30, 48))
    hidden = (centers[rng.integers(0, 30, 500)] + 0.3 * rng.normal(size=(500, 48))).astype(np.float32)
    labels = rng.integers(0, 3, 500)
    result = prune_pool(hidden, labels, target_size=200, neighbours=4)
    assert [r[0] for r in result.removed] == brute_force(hidden, labels, result.per_cluster_removed)


def test_every_sample_is_kept_or_recorded_and_over_protection_keeps_the_protected(caplog):
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(30, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    result = prune_pool(hidden, labels, target_size=12)
    removed = [r[0] for r in result.removed]
    assert len(set(removed)) == len(removed) == 18
    assert sorted(removed + result.keep.tolist()) == list(range(30))   # nothing silently lost
    assert sum(result.per_cluster_removed.values()) == 18
    # 20 protected samples cannot fit in 12: every unprotected one goes, with a warning
    protect = np.zeros(30, bool)
    protect[:20] = True
    with caplog.at_level("WARNING", logger="adaptinf.prune"):
        result = prune_pool(hidden, labels, target_size=12, protect=protect)
    assert result.keep.tolist() == list(range(20))
    assert "exceed the pool budget" in caplog.text


def test_prune_rejects_bad_arguments():
    hidden = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError):
        prune_pool(hidden, np.zeros(3, int), 2)                      # shape mismatch
    with pytest.raises(ValueError):
        prune_pool(hidden, np.zeros(4, int), -1)
    with pytest.raises(ValueError):
        prune_pool(hidden, np.zeros(4, int), 2, protect=np.zeros(3, bool))
    with pytest.raises(ValueError):
        prune_pool(hidden, np.zeros(4, int), 2, neighbours=1)


# ---- safeguards: per-cluster cap, answer-aware redundancy ---------------------------------

def test_cluster_fraction_caps_removals_and_reports_the_shortfall():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(110, 8))
    labels = np.repeat([0, 1], [100, 10])
    res = prune_pool(hidden, labels, 20, max_cluster_fraction=0.5)
    assert res.per_cluster_removed == {0: 50, 1: 5}
    assert len(res.keep) == 55 and res.shortfall == 35
    # the paper (no cap) reaches the target, cutting the large cluster to the small one's level
    paper = prune_pool(hidden, labels, 20)
    assert len(paper.keep) == 20 and paper.shortfall == 0 and paper.per_cluster_removed == {0: 90}


def test_same_prompt_different_answers_are_not_duplicates():
    # 10 rows of a table that look alike (one hidden state) with their own labels, and 10
    # copies of one question with the same answer, all in one cluster.
    hidden = np.vstack([np.tile([1.0, 0.0, 0.0], (10, 1)),
                        np.tile([0.0, 1.0, 0.0], (10, 1))]) + 1e-3 * np.arange(20)[:, None]
    labels = np.zeros(20, dtype=int)
    answers = [f"label {i}" for i in range(10)] + ["same"] * 10
    res = prune_pool(hidden, labels, 11, answers=answers)
    assert sorted(res.keep.tolist())[:10] == list(range(10))     # every distinct answer kept
    assert len(res.keep) == 11 and res.shortfall == 0            # 9 of the 10 copies went
    paper = prune_pool(hidden, labels, 11)
    assert sum(i < 10 for i in paper.keep) < 10                  # the paper's rule removes rows too


def test_answer_groups_normalise_and_keep_one_per_answer():
    assert answer_groups(["Paris", " paris ", "Rome", "a  b", "A B"]).tolist() == [1, 1, 2, 0, 0]
    hidden = np.eye(4)
    res = prune_pool(hidden, np.zeros(4, int), 0, answers=["x", "x", "y", "z"])
    assert len(res.keep) == 3 and res.shortfall == 3             # one "x" may go, nothing else
    with pytest.raises(ValueError, match="answers"):
        prune_pool(hidden, np.zeros(4, int), 2, answers=["x"])
    with pytest.raises(ValueError, match="max_cluster_fraction"):
        prune_pool(hidden, np.zeros(4, int), 2, max_cluster_fraction=0.0)


# ---- the fast greedy against the previous implementation (bench/prune_reference.py) ---------

def _reference():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "bench" / "prune_reference.py"
    spec = importlib.util.spec_from_file_location("bench_prune_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prune_reference


def _pool_with_ties(seed: int, n: int, dim: int, clusters: int):
    """Clustered vectors with near-copies and exact copies (equal similarities: ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.choice(clusters, size=n, p=rng.dirichlet(np.full(clusters, 1.5)))
    x = (centres[labels] + 0.8 * rng.normal(size=(n, dim))).astype(np.float32)
    copy, source = rng.choice(n, (2, n // 20), replace=False)
    x[copy] = x[source] + 1e-3 * rng.normal(size=(len(copy), dim))
    labels[copy] = labels[source]
    copy, source = rng.choice(n, (2, n // 40), replace=False)
    x[copy] = x[source]
    labels[copy] = labels[source]
    return x, labels, rng


@pytest.mark.parametrize("seed,n,dim,neighbours,keep", [(0, 3000, 16, 32, 0.3), (1, 2500, 8, 4, 0.5),
                                                        (2, 1200, 32, 2, 0.1), (3, 4000, 64, 8, 0.6)])
def test_fast_greedy_removes_what_the_previous_one_did(seed, n, dim, neighbours, keep):
    """Lists refilled in batches and re-read with numpy: the same removals in the same order, with
    the same similarities; on pools with exact copies (tied keys), short lists (many refills),
    protected samples and the per-cluster cap."""
    prune_reference = _reference()
    x, labels, rng = _pool_with_ties(seed, n, dim, clusters=6)
    target = int(keep * n)
    protect = rng.random(n) < 0.1
    for kwargs in ({}, {"protect": protect}, {"max_cluster_fraction": 0.4, "protect": protect}):
        fast = prune_pool(x, labels, target, neighbours=neighbours, **kwargs)
        ref = prune_reference(x, labels, target, neighbours=neighbours, **kwargs)
        assert [r[0] for r in fast.removed] == [r[0] for r in ref.removed], kwargs
        assert [r[2] for r in fast.removed] == [r[2] for r in ref.removed]   # bit-equal similarities
        assert fast.keep.tolist() == ref.keep.tolist()
        assert fast.per_cluster_removed == ref.per_cluster_removed and fast.shortfall == ref.shortfall
    assert len(fast.removed) > 0


def test_fast_greedy_equals_previous_with_answer_groups():
    prune_reference = _reference()
    x, labels, rng = _pool_with_ties(7, 1500, 12, clusters=3)
    answers = [f"a{int(v)}" for v in rng.integers(0, 5, len(labels))]
    fast = prune_pool(x, labels, 600, neighbours=3, answers=answers, max_cluster_fraction=0.7)
    ref = prune_reference(x, labels, 600, neighbours=3, answers=answers, max_cluster_fraction=0.7)
    assert [r[0] for r in fast.removed] == [r[0] for r in ref.removed] and len(ref.removed) > 0
