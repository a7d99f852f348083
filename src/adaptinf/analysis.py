"""How well clusters match known groups: purity and normalised mutual information.

Used to check whether the pseudo-task clusters (of gradients or hidden states) recover the
datasets or skills of a stream — labels that selection itself never sees (docs/method.md §2). Pure
numpy; `nmi` reproduces scikit-learn's `normalized_mutual_info_score` with its default
arithmetic normalisation, including its edge cases, without importing it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def contingency(labels: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> np.ndarray:
    """(clusters × classes) count matrix; labels of any hashable, sortable type."""
    a, b = np.asarray(labels), np.asarray(truth)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"labels {a.shape} and truth {b.shape} must be 1-d and of equal length")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max(initial=-1) + 1, ib.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ia.ravel(), ib.ravel()), 1)
    return table


def cluster_purity(labels: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> float:
    """Share of samples whose cluster's majority class is their own class, in [0, 1].

    purity = (1/n) Σ_clusters max_class |cluster ∩ class|. 1.0 for a perfect (or finer)
    clustering; it rewards many small clusters, so read it next to `nmi`. Empty input: 1.0.
    """
    table = contingency(labels, truth)
    n = table.sum()
    return float(table.max(axis=1).sum() / n) if n else 1.0


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(labels: Sequence | np.ndarray, truth: Sequence | np.ndarray) -> float:
    """Normalised mutual information MI / ((H(labels) + H(truth)) / 2), in [0, 1].

    Natural logs (the base cancels). As in scikit-learn: two single-group labellings (or
    empty input) match perfectly (1.0); otherwise zero mutual information gives 0.0, which
    also covers a single group against several.
    """
    table = contingency(labels, truth)
    n = table.sum()
    if n == 0 or table.shape == (1, 1):
        return 1.0
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    nz = table > 0
    pij = table[nz] / n
    # MI = Σ p_ij log(p_ij / (p_i p_j)) over the non-empty cells
    mi = float((pij * (np.log(table[nz] * n) - np.log(np.outer(rows, cols)[nz]))).sum())
    mi = max(mi, 0.0)   # rounding can leave a tiny negative for independent labellings
    if mi == 0.0:
        return 0.0
    return mi / ((_entropy(rows) + _entropy(cols)) / 2.0)
