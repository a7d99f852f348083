"""Per-sample metrics, lifelong aggregates (docs/method.md §11) and cluster-agreement measures."""
from __future__ import annotations

import math

import numpy as np
import pytest

from adaptinf.analysis import cluster_purity, contingency, nmi
from adaptinf.metrics import forgetting_rate_taught
from adaptinf.metrics import (average_accuracy, best_per_skill, bleu, box_iou, exact_match, forgetting_rate,
                              normalise_answer, parse_box, relative_gain, score)


@pytest.mark.parametrize("pred,ref,expected", [
    ("Yes.", "yes", 1.0),
    ("  The   Cat ", "the cat", 1.0),
    ("3", "3.", 1.0),                       # trailing punctuation only
    ("blue!?", "Blue", 1.0),
    ("a,b", "a b", 0.0),                    # inner punctuation is kept
    ("yes", "no", 0.0),
    ("", "", 1.0),
    ("two", "2", 0.0),                      # no number-word mapping
])
def test_exact_match(pred, ref, expected):
    assert exact_match(pred, ref) == expected


def test_normalise_answer():
    assert normalise_answer("  Hello,\n  World. ") == "hello, world"


def test_box_iou_by_hand():
    # [0,0,2,2] and [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7
    assert box_iou("[0, 0, 2, 2]", "[1, 1, 3, 3]") == pytest.approx(1 / 7)
    # containment: [0,0,4,4] ⊃ [1,1,3,3]: 4 / 16
    assert box_iou("[0,0,4,4]", "[1,1,3,3]") == pytest.approx(0.25)
    # loose format and swapped corners are accepted
    assert box_iou("box: 2 2 0 0", "[0.0, 0.0, 2.0, 2.0]") == pytest.approx(1.0)
    assert box_iou("[0.1, 0.2, 0.5, 0.6]", "[0.1,0.2,0.5,0.6]") == pytest.approx(1.0)
    # disjoint, unparseable, degenerate
    assert box_iou("[0,0,1,1]", "[2,2,3,3]") == 0.0
    assert box_iou("no box here", "[0,0,1,1]") == 0.0
    assert box_iou("[0,0,0,0]", "[0,0,0,0]") == 0.0
    assert parse_box("[1, 2, 3]") is None


def test_bleu_hand_computed():
    # pred "the cat sat on the mat" vs ref "the cat is on the mat" (c = r = 6, no penalty)
    # 1-grams: the×2, cat, on, mat match -> 5/6
    # 2-grams: "the cat", "on the", "the mat" of 5 -> smoothed (3+1)/(5+1)
    # 3-grams: "on the mat" of 4 -> (1+1)/(4+1)
    # 4-grams: none of 3 -> (0+1)/(3+1)
    expected = (5 / 6 * 4 / 6 * 2 / 5 * 1 / 4) ** 0.25          # = (1/18)^(1/4)
    assert bleu("the cat sat on the mat", "the cat is on the mat") == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.48549, abs=1e-5)
    # brevity: "the cat" vs a 6-token reference; all precisions 1 (2-gram 1/1, empty 3/4-grams
    # smoothed to 1/1), penalty exp(1 - 6/2)
    assert bleu("the cat", "the cat sat on the mat") == pytest.approx(math.exp(-2), rel=1e-12)
    # clipped counts: "the the the" vs "the cat": unigram 1/3, bigrams (0+1)/(2+1), 3-gram
    # (0+1)/(1+1), 4-gram 1/1; c = 3 > r = 2 -> no penalty
    assert bleu("the the the", "the cat") == pytest.approx((1 / 3 * 1 / 3 * 1 / 2 * 1) ** 0.25, rel=1e-12)
    assert bleu("a b c d", "a b c d") == pytest.approx(1.0)
    assert bleu("x y", "a b") == 0.0                               # no unigram match
    assert bleu("", "a") == 0.0 and bleu("a", "") == 0.0


def test_score_dispatch():
    assert score("exact_match", "Yes", "yes") == 1.0
    assert score("iou", "[0,0,2,2]", "[1,1,3,3]") == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="unknown metric"):
        score("rouge", "a", "a")


# Per-step skill scores P_s^t of a hand-made run (C appears at step 1).
HISTORY = [
    {"A": 0.8, "B": 0.5},
    {"A": 0.6, "B": 0.5, "C": 0.4},
    {"A": 0.7, "B": 0.25, "C": 0.2},
]


def test_average_accuracy():
    assert average_accuracy(HISTORY[-1]) == pytest.approx((0.7 + 0.25 + 0.2) / 3)
    with pytest.raises(ValueError):
        average_accuracy({})


def test_forgetting_rate_by_hand():
    # The paper's S×T denominator. Relative drops:
    # t=1: A (0.8-0.6)/0.8 = 25 %, B 0 %; C has no previous score (counts 0).
    # t=2: A rose -> 0 %, B (0.5-0.25)/0.5 = 50 %, C (0.4-0.2)/0.4 = 50 %.
    # S = 3 skills (A, B, C), T = 2 steps after the first: (25 + 50 + 50) / 6
    assert forgetting_rate(HISTORY) == pytest.approx(125 / 6)
    assert forgetting_rate(HISTORY[:1]) == 0.0
    assert forgetting_rate([]) == 0.0
    # a zero previous score cannot be forgotten from: 0 in the sum, but still in the denominator
    assert forgetting_rate([{"A": 0.0, "B": 1.0}, {"A": 0.0, "B": 0.5}]) == pytest.approx(25.0)
    # improvements never count negative
    assert forgetting_rate([{"A": 0.2}, {"A": 0.9}]) == 0.0


def test_forgetting_rate_taught_by_hand():
    # Only the 5 pairs with a previous score > 0: (25 + 0 + 0 + 50 + 50) / 5
    assert forgetting_rate_taught(HISTORY) == pytest.approx(25.0)
    assert forgetting_rate_taught(HISTORY[:1]) == 0.0
    assert forgetting_rate_taught([{"A": 0.0}, {"A": 0.0}]) == 0.0        # no eligible pair
    assert forgetting_rate_taught([{"A": 0.0, "B": 1.0}, {"A": 0.0, "B": 0.5}]) == pytest.approx(50.0)


def test_near_zero_score_does_not_dominate_the_paper_rate():
    # Issue 15's case: after step 0 one skill is at 0.008, the others at 0; at step 1 it falls
    # to 0 while the others are learned. Taught pairs only: 100 %; S×T = 3 × 1: 100 / 3.
    history = [{"a": 0.008, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 0.5, "c": 0.6}]
    assert forgetting_rate_taught(history) == pytest.approx(100.0)
    assert forgetting_rate(history) == pytest.approx(100 / 3)
    # the paper's rate is never above the taught-only one (same sum, larger denominator)
    assert forgetting_rate(HISTORY) <= forgetting_rate_taught(HISTORY)


def test_relative_gain_by_hand():
    sequential = [{"A": 0.875, "B": 0.1}, {"A": 0.5, "B": 0.5, "C": 0.8}, {"A": 0.3, "B": 0.2, "C": 0.4}]
    best = best_per_skill(sequential)
    assert best == {"A": 0.875, "B": 0.5, "C": 0.8}
    # A 0.7/0.875 = 80 %, B 0.25/0.5 = 50 %, C 0.2/0.8 = 25 % -> mean 155/3 %
    assert relative_gain(HISTORY[-1], best) == pytest.approx(155 / 3)
    # skills without a positive reference are skipped
    assert relative_gain({"A": 0.5, "D": 0.9}, {"A": 0.5, "D": 0.0}) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        relative_gain({"A": 0.5}, {"B": 0.5})


# ---- cluster agreement --------------------------------------------------------------------

def test_contingency_and_purity_by_hand():
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    truth = ["a", "a", "b", "b", "b", "c", "c", "a"]
    assert contingency(labels, truth).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    # majority counts 2 + 2 + 2 over 8 samples
    assert cluster_purity(labels, truth) == pytest.approx(6 / 8)
    assert cluster_purity([5, 5, 7], ["x", "x", "y"]) == 1.0
    assert cluster_purity(np.arange(6), np.zeros(6)) == 1.0          # singletons are "pure"
    assert cluster_purity(np.zeros(4), [0, 0, 1, 2]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cluster_purity([0, 1], [0])


def test_nmi_by_hand():
    # identical up to renaming -> 1.0; independent (table [[1, 1], [1, 1]]) -> 0.0
    assert nmi([0, 0, 1, 1], ["x", "x", "y", "y"]) == pytest.approx(1.0)
    assert nmi([0, 1, 0, 1], [0, 0, 1, 1]) == 0.0
    # table [[2, 1], [0, 1]] over n = 4:
    # MI = 2/4 log(2·4/(3·2)) + 1/4 log(1·4/(3·2)) + 1/4 log(1·4/(1·2))
    # H(labels) = H(3/4, 1/4), H(truth) = H(1/2, 1/2)
    mi = 0.5 * math.log(8 / 6) + 0.25 * math.log(4 / 6) + 0.25 * math.log(2)
    h1 = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h2 = math.log(2)
    assert nmi([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(mi / ((h1 + h2) / 2), rel=1e-12)
    # edge cases as in scikit-learn
    assert nmi([3, 3, 3], ["a", "a", "a"]) == 1.0
    assert nmi([3, 3, 3], ["a", "b", "c"]) == 0.0
    assert nmi([], []) == 1.0


def test_nmi_and_purity_against_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        truth = rng.integers(0, int(rng.integers(1, 6)), n)
        # a noisy copy of the truth, with some clusters split
        labels = np.where(rng.random(n) < 0.3, rng.integers(0, 8, n), truth * 2 + rng.integers(0, 2, n))
        assert nmi(labels, truth) == pytest.approx(metrics.normalized_mutual_info_score(truth, labels), abs=1e-10)
        table = metrics.cluster.contingency_matrix(truth, labels)      # classes × clusters
        assert cluster_purity(labels, truth) == pytest.approx(table.max(axis=0).sum() / n, abs=1e-12)
