"""Adapt-∞ and Lite-Adapt-∞ (Maharana et al., ICLR 2025, arXiv 2410.10636; docs/method.md §6–10).

1. Pseudo-task clustering: k-means on the pool's projected, L2-normalised LoRA gradients,
   k at the WSS elbow (`adaptinf.clustering.choose_k`).
2. Budget over clusters: T split uniformly, small clusters give all and pass the rest on
   (`split_budget`; `safeguards.guarded_split` adds the size-share floor for diffuse clusters
   and the mastered group, and the Table-3 "density" split).
3. Multi-way selection inside each cluster: among the run's scorers, the one whose trimmed
   histogram has the highest entropy (`choose_scorer`), then CCS on that score (`ccs_sample`).

Lite-Adapt-∞ selects the same way and additionally asks the prune stage to cut the pool to
D afterwards (`adaptinf.prune`), which is why it also needs hidden states.

The rules the paper is silent about (k rule, CCS bins, diffuse clusters, mastered samples)
live in `selection.safeguards`; the SelectionContext defaults are the paper's behaviour.
"""
from __future__ import annotations

import numpy as np

from adaptinf.clustering import choose_k, k_stability
from adaptinf.prune import l2_normalise
from adaptinf.selection.base import (PoolFeatures, SelectionContext, SelectionResult, Strategy,
                                     impute_median, register, sorted_unique)
from adaptinf.selection.primitives import DEFAULT_BINS, ccs_sample, choose_scorer, split_budget
from adaptinf.selection.safeguards import ccs_bins, cluster_cosines, diffuse_clusters, guarded_split, mastered_mask


STRATUM_KEY = 1_000_000   # generator key offset of the mastered group's strata


def multiway_sample(scores: dict[str, np.ndarray], idx: np.ndarray, quota: int,
                    rng: np.random.Generator, bins: int = DEFAULT_BINS) -> tuple[np.ndarray, str | None, dict[str, float]]:
    """`quota` of the pool indices `idx` by CCS on their highest-entropy applicable score.

    Scores that are NaN for every sample in `idx` are not applicable there; NaN entries of the
    chosen score are imputed with its median. With no applicable score the draw is uniform.
    `bins` is used for both the entropy histogram and the CCS strata, so the scorer chosen is
    the one that spreads best at the resolution CCS stratifies at.
    Returns (selected pool indices, chosen scorer or None, entropy per applicable scorer).
    """
    name, entropies = choose_scorer(scores, idx, bins)
    if name is None:
        local = rng.choice(len(idx), size=min(quota, len(idx)), replace=False)
    else:
        local = ccs_sample(impute_median(np.asarray(scores[name])[idx]), quota, rng, bins)
    return idx[local], name, entropies


def _cluster_space(feats: PoolFeatures, ctx: SelectionContext, strategy: str) -> np.ndarray:
    """The vectors k-means runs on: projected gradients (the paper) or hidden states (ablation)."""
    if ctx.cluster_features == "gradients":
        return feats.require("grads", strategy)
    if ctx.cluster_features == "hidden":
        return l2_normalise(feats.require("hidden", strategy))
    raise ValueError(f"unknown clustering features {ctx.cluster_features!r}; known: gradients, hidden")


def _check(ctx: SelectionContext) -> None:
    for name, value, known in (("diffuse", ctx.diffuse, ("none", "size")),
                               ("mastered", ctx.mastered, ("none", "group")),
                               ("masteredBudget", ctx.mastered_budget, ("cluster", "size")),
                               ("masteredRehearsal", ctx.mastered_rehearsal, ("pooled", "stratified"))):
        if value not in known:
            raise ValueError(f"selection.{name} must be one of {known}, got {value!r}")


@register
class AdaptInf(Strategy):
    """Gradient clusters → uniform budget → per-cluster scorer choice → CCS."""
    name = "adapt-inf"
    needs = frozenset({"grads", "scores"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)                      # no options: rejects unknown ones
        self.require_all(feats)                # Lite also needs hidden states (for the prune stage)
        _check(ctx)
        x = _cluster_space(feats, ctx, self.name)
        # Checked before the (costly) clustering: without any score CCS has nothing to stratify.
        scores = feats.require_scores(ctx.scorers, self.name)
        notes = [f"scorer {s!r} was not extracted; skipped" for s in ctx.scorers if s not in feats.scores]

        # Near-zero-gradient samples: their directions are noise, so they are kept out of
        # k-means and form one group of their own (the last label).
        mastered = np.zeros(len(feats), dtype=bool)
        if ctx.mastered == "group":
            mask = mastered_mask(feats.scores.get("perplexity"), ctx.mastered_loss)
            if mask is None:
                notes.append("mastered: no perplexity score extracted; no mastered group")
            elif 0 < mask.sum() < len(feats) - 1:
                mastered = mask
        active = np.flatnonzero(~mastered)
        clusters = choose_k(x[active], ctx.k_min, ctx.k_max, ctx.seed, ctx.niter, ctx.nredo, ctx.k_rule,
                            ctx.min_gain, ctx.k_sweep)
        k = clusters.k + int(mastered.any())
        labels = np.full(len(feats), clusters.k, dtype=np.int64)
        labels[active] = clusters.labels
        sizes = np.bincount(labels, minlength=k)

        cosines = cluster_cosines(x, labels, k)
        diffuse = diffuse_clusters(cosines[:clusters.k], ctx.diffuse_ratio)
        flagged = np.zeros(k, dtype=bool)
        if ctx.diffuse == "size":
            flagged[:clusters.k] = diffuse
        if mastered.any() and ctx.mastered_budget == "size":
            flagged[clusters.k] = True
        quotas = guarded_split(sizes, ctx.budget, ctx.budget_split, flagged)

        picked: list[np.ndarray] = []
        per_cluster: list[dict] = []
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if idx.size == 0:
                continue
            # One generator per cluster: a cluster's draw does not depend on the others'.
            rng = np.random.default_rng([ctx.seed, c])
            bins = ccs_bins(ctx.ccs_bin_rule, ctx.ccs_bins, int(quotas[c]))
            strata: list[dict] = []
            if mastered.any() and c == clusters.k and ctx.mastered_rehearsal == "stratified":
                chosen, scorer, entropies, strata = self._stratified_rehearsal(feats, ctx, scores, idx, int(quotas[c]))
            else:
                chosen, scorer, entropies = multiway_sample(scores, idx, int(quotas[c]), rng, bins)
            if scorer is None:
                notes.append(f"cluster {c}: no applicable scorer; sampled uniformly")
            picked.append(chosen)
            per_cluster.append({"cluster": c, "size": int(idx.size), "quota": int(quotas[c]),
                                **({"strata": strata} if strata else {}),
                                "selected": int(chosen.size), "scorer": scorer, "bins": bins,
                                "mean_cosine": None if not np.isfinite(cosines[c]) else round(float(cosines[c]), 4),
                                "diffuse": bool(c < clusters.k and diffuse[c]),
                                "mastered_group": bool(c == clusters.k),
                                "entropies": {n: round(v, 6) for n, v in entropies.items()}})

        indices = sorted_unique(np.concatenate(picked))
        report = {
            "strategy": self.name,
            "budget": int(ctx.budget),
            "pool_size": len(feats),
            "selected": int(indices.size),
            "k": k,
            "k_rule": ctx.k_rule,
            "k_sweep": clusters.sweep_report(),
            "cluster_features": ctx.cluster_features,
            "budget_split": ctx.budget_split,
            "mastered": int(mastered.sum()),
            "mastered_budget": ctx.mastered_budget,
            "mastered_rehearsal": ctx.mastered_rehearsal,
            "diffuse_clusters": [int(c) for c in np.flatnonzero(diffuse)],
            "cluster_sizes": [int(s) for s in sizes],
            "quotas": [int(q) for q in quotas],
            "wss_by_k": {str(kk): v for kk, v in clusters.wss_by_k.items()},
            "scorer_counts": _count([c["scorer"] for c in per_cluster]),
            "clusters": per_cluster,
            "notes": notes,
        }
        if ctx.stability_seeds > 0:
            seeds = [ctx.seed + 1000 * (i + 1) for i in range(ctx.stability_seeds)]
            report["k_stability"] = k_stability(x[active], clusters, seeds, ctx.k_min, ctx.k_max, ctx.niter,
                                                ctx.nredo, ctx.k_rule, ctx.min_gain, ctx.k_sweep)
        return SelectionResult(indices=indices, report=report, labels=labels)


    def _stratified_rehearsal(self, feats: PoolFeatures, ctx: SelectionContext, scores: dict[str, np.ndarray],
                              idx: np.ndarray, quota: int) -> tuple[np.ndarray, str | None, dict[str, float], list[dict]]:
        """The mastered group's quota split evenly over k-means clusters of its hidden states.

        Mastered samples' gradients are near zero and their directions noise, but their hidden
        states still say what the samples are about; an even split over those clusters rehearses
        every mastered skill, where one draw over the group follows its biggest skill. At most
        `quota` strata (more could not each get a sample). Returns the selected pool indices, the
        scorer most strata chose, no group-level entropies (each stratum reports its own) and
        one report entry per stratum.
        """
        hidden = l2_normalise(feats.require("hidden", f"{self.name} (selection.masteredRehearsal: stratified)"))
        hi = max(1, min(ctx.k_max, quota))
        sub = choose_k(hidden[idx], min(ctx.k_min, hi), hi, ctx.seed, ctx.niter, ctx.nredo, ctx.k_rule, ctx.min_gain,
                       ctx.k_sweep)
        shares = split_budget(np.bincount(sub.labels, minlength=sub.k), quota)
        chosen: list[np.ndarray] = []
        strata: list[dict] = []
        for j in range(sub.k):
            members = idx[sub.labels == j]
            if members.size == 0:
                continue
            # Keyed apart from the clusters' generators ([seed, c] with c < k).
            rng = np.random.default_rng([ctx.seed, STRATUM_KEY + j])
            bins = ccs_bins(ctx.ccs_bin_rule, ctx.ccs_bins, int(shares[j]))
            got, scorer, entropies = multiway_sample(scores, members, int(shares[j]), rng, bins)
            chosen.append(got)
            strata.append({"stratum": j, "size": int(members.size), "quota": int(shares[j]), "selected": int(got.size),
                           "scorer": scorer, "entropies": {n: round(v, 6) for n, v in entropies.items()}})
        names = [s["scorer"] for s in strata if s["scorer"] is not None]
        scorer = max(sorted(set(names)), key=names.count) if names else None
        return np.concatenate(chosen) if chosen else idx[:0], scorer, {}, strata


@register
class LiteAdaptInf(AdaptInf):
    """Adapt-∞ selection, then the pool is pruned to D by hidden-state redundancy."""
    name = "lite-adapt-inf"
    needs = frozenset({"grads", "scores", "hidden"})
    prunes_pool = True


def _count(names: list[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in names:
        key = n if n is not None else "uniform"
        counts[key] = counts.get(key, 0) + 1
    return counts
