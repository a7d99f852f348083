"""Random selection: T samples uniformly from the whole pool (the paper's strong baseline)."""
from __future__ import annotations

import numpy as np

from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register, sorted_unique


@register
class RandomSelect(Strategy):
    name = "random"
    needs = frozenset()

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)  # no options: rejects unknown ones
        n = len(feats)
        rng = np.random.default_rng(ctx.seed)
        indices = sorted_unique(rng.choice(n, size=min(ctx.budget, n), replace=False))
        return SelectionResult(indices=indices, report={
            "strategy": self.name, "budget": int(ctx.budget), "pool_size": n,
            "selected": int(indices.size), "notes": []})
