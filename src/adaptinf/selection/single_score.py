"""Single-score baselines: CCS over the whole pool on one score, no clustering.

The paper's EL2N, Entropy, Perplexity and Image-Grounding rows (Table 2): each uses one
score for every sample, with the same coverage-centric sampling (Zheng et al., ICLR 2023)
that Adapt-∞ uses inside clusters. NaN entries are imputed with the median, as in Adapt-∞.
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.adapt_inf import multiway_sample
from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register


class _SingleScore(Strategy):
    """CCS on the score named like the strategy."""
    needs = frozenset({"scores"})

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)  # no options: rejects unknown ones
        scores = feats.require_scores((self.name,), self.name)
        rng = np.random.default_rng(ctx.seed)
        indices, scorer, entropies = multiway_sample(scores, np.arange(len(feats)), ctx.budget, rng)
        notes = [] if scorer else [f"{self.name!r} is NaN for every sample; sampled uniformly"]
        indices = np.sort(indices)
        return SelectionResult(indices=indices, report={
            "strategy": self.name, "budget": int(ctx.budget), "pool_size": len(feats),
            "selected": int(indices.size), "entropies": entropies, "notes": notes})


@register
class El2nSelect(_SingleScore):
    name = "el2n"


@register
class EntropySelect(_SingleScore):
    name = "entropy"


@register
class PerplexitySelect(_SingleScore):
    name = "perplexity"


@register
class ImageGroundingSelect(_SingleScore):
    name = "image-grounding"
