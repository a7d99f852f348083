"""Where Adapt-∞ runs outside the regime the paper assumes: the rules it is silent about.

- `ccs_bins`: CCS (and the scorer-choice histogram) with 50 strata over a quota of 15 is
  uniform sampling; "quota" uses min(bins, quota) strata so each stratum can get a sample.
- `diffuse_clusters`: a cluster whose members point every way (mean cosine to its centroid far
  below the others') is a catch-all, not a pseudo-skill; an even split starves what hides in it.
- `mastered_mask`: samples the model already gets right have near-zero gradients, whose
  L2-normalised directions are noise; they would collapse into one such diffuse cluster.
- `guarded_split`: the budget over clusters, uniform (the paper) or by size (its Table-3
  "density" ablation), with flagged clusters given at least their size-proportional share.
Numpy only (the selection stage does not need torch).
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.primitives import proportional_quotas, split_budget, water_fill

BIN_RULES = ("fixed", "quota")
SPLITS = ("uniform", "density")


def ccs_bins(rule: str, bins: int, quota: int) -> int:
    """Strata for a cluster's CCS draw and scorer choice under the bin rule."""
    if rule == "fixed":
        return int(bins)
    if rule == "quota":
        return max(1, min(int(bins), int(quota)))
    raise ValueError(f"unknown CCS bin rule {rule!r}; known: {', '.join(BIN_RULES)}")


def cluster_cosines(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean cosine of each cluster's (unit) rows to their mean direction; NaN for empty clusters."""
    out = np.full(k, np.nan)
    for c in range(k):
        rows = np.asarray(x[labels == c], dtype=np.float64)
        if len(rows) == 0:
            continue
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        centre = rows.mean(0)
        norm = np.linalg.norm(centre)
        out[c] = float((rows @ (centre / norm)).mean()) if norm > 0 else 0.0
    return out


def diffuse_clusters(cosines: np.ndarray, ratio: float) -> np.ndarray:
    """Clusters whose mean cosine is below `ratio` × the median over clusters (scale-free:
    gradients and hidden states have very different typical cosines)."""
    c = np.asarray(cosines, dtype=np.float64)
    ok = np.isfinite(c)
    if ok.sum() < 2:
        return np.zeros(c.shape, dtype=bool)
    return ok & (c < ratio * float(np.median(c[ok])))


def mastered_mask(perplexity: np.ndarray | None, max_loss: float) -> np.ndarray | None:
    """Samples whose mean answer-token NLL (log perplexity) is below `max_loss`; None if unknown.

    The gradient of a token's loss w.r.t. its logits has norm about 1 − p(correct) ≈ NLL for
    small NLL, so a low loss bounds the gradient: this is the near-zero-gradient group.
    """
    if perplexity is None:
        return None
    p = np.asarray(perplexity, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        nll = np.log(p)
    return np.isfinite(nll) & (nll < max_loss)


def guarded_split(sizes: np.ndarray, total: int, split: str = "uniform",
                  flagged: np.ndarray | None = None) -> np.ndarray:
    """Per-cluster quotas summing to min(total, sum(sizes)).

    "uniform": `split_budget` (the paper); "density": proportional to size. A flagged cluster
    (diffuse, or the mastered group) gets max(its uniform share, its size share) first and the
    rest is split over the others by the same rule, so a catch-all of many samples is not cut
    to one cluster's share of what hides in it.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(min(total, sizes.sum()))
    if split not in SPLITS:
        raise ValueError(f"unknown budget split {split!r}; known: {', '.join(SPLITS)}")

    def base(sz: np.ndarray, t: int) -> np.ndarray:
        if split == "uniform":
            return split_budget(sz, t)
        return proportional_quotas(sz.astype(np.float64), sz, t)

    if flagged is None or not np.asarray(flagged).any():
        return base(sizes, total)
    flagged = np.asarray(flagged, dtype=bool)
    share = np.maximum(base(sizes, total), np.floor(total * sizes / max(int(sizes.sum()), 1)).astype(np.int64))
    share = np.where(flagged, np.minimum(share, sizes), 0)
    if share.sum() > total:  # cannot happen for one flagged cluster; keep the sum exact anyway
        share = proportional_quotas(share.astype(np.float64), share, total)
    quotas = share.copy()
    rest = np.flatnonzero(~flagged)
    left = total - int(share.sum())
    if rest.size:
        quotas[rest] = base(sizes[rest], left)
        left -= int(quotas[rest].sum())
    if left > 0:  # the others were too small: what they cannot take goes back to the flagged
        quotas += water_fill(sizes - quotas, left)
    return quotas
