"""Training regimes the paper compares against (Table 2); they ignore the budget T.

- `sequential`: train on each new dataset in full, nothing from the past (the forgetting
  baseline and the reference for relative gain).
- `multitask`: one joint training on all the data "in one go" (the paper's upper bound): with
  `joint`, run-local and compare only ingest the steps before the last and train once, on the
  whole pool, at the last step. (On the operator, which cannot know the last step, every step
  trains on the whole pool.)
- `replay`: the new dataset in full plus a random 10% of the old samples ("Random replay 10%";
  option `fraction`).

Two more from He et al., "Continual Instruction Tuning for Large Multimodal Models" (2023),
which select like `sequential` and differ in how they train (`Strategy.training_regime` names
their regime in `adaptinf.training.regimes`, one module each):

- `ewc`: regularisation — the previous adapter is continued under an EWC penalty whose Fisher
  comes from the earlier steps' training data (`adaptinf.training.regimes.ewc`, on
  `adaptinf.training.ewc`; options `lambda`, `fisher_samples`).
- `expansion`: model expansion — a new adapter per dataset; at eval each sample is routed to
  the adapter owning the nearest of the k-means centroids of each adapter's training prompts'
  hidden states (`adaptinf.training.regimes.expansion`, on `adaptinf.evaluation.routing`).
"""
from __future__ import annotations

import numpy as np

from adaptinf.selection.base import PoolFeatures, SelectionContext, SelectionResult, Strategy, register, sorted_unique


def _result(name: str, feats: PoolFeatures, indices: np.ndarray, **extra) -> SelectionResult:
    indices = sorted_unique(indices)
    return SelectionResult(indices=indices, report={
        "strategy": name, "pool_size": len(feats), "selected": int(indices.size),
        "new": int(np.count_nonzero(feats.is_new)), **extra,
        "notes": ["budget T ignored: this regime trains on full data"]})


@register
class Sequential(Strategy):
    name = "sequential"
    needs = frozenset()
    budgeted = False

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)  # no options: rejects unknown ones
        return _result(self.name, feats, np.flatnonzero(feats.is_new))


@register
class Multitask(Strategy):
    name = "multitask"
    needs = frozenset()
    budgeted = False
    joint = True

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        self.options(ctx)  # no options: rejects unknown ones
        return _result(self.name, feats, np.arange(len(feats)))


@register
class Replay(Strategy):
    name = "replay"
    needs = frozenset()
    budgeted = False

    def select(self, feats: PoolFeatures, ctx: SelectionContext) -> SelectionResult:
        fraction = float(self.options(ctx)["fraction"])   # in [0, 1]: adaptinf.strategy_options
        old = np.flatnonzero(~np.asarray(feats.is_new, dtype=bool))
        count = int(np.floor(fraction * old.size + 0.5))  # round half up
        replayed = np.random.default_rng(ctx.seed).choice(old, size=count, replace=False)
        return _result(self.name, feats, np.concatenate([np.flatnonzero(feats.is_new), replayed]),
                       replayed=count)


@register
class Ewc(Sequential):
    name = "ewc"
    training_regime = "ewc"


@register
class Expansion(Sequential):
    name = "expansion"
    training_regime = "expansion"
