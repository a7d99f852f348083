"""`ewc`: the previous adapter continued under an EWC penalty (`adaptinf.training.ewc`).

The Fisher accumulated up to the previous step is stored beside that step's adapter
(`ewc_fisher.safetensors`); a previous adapter without one (trained by another regime, e.g.
the step 0 that `compare` shares) gets it estimated here from that step's training data, with
that adapter's weights. Options `lambda` and `fisher_samples`: spec.strategyOptions for the
`ewc` strategy, spec.training.ewc for another strategy's selection trained under the penalty.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from adaptinf.data.records import Record
from adaptinf.model.checkpoints import RunStep, latest_trained
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle
from adaptinf.training import ewc

from .base import Regime, register_regime, training_records

log = logging.getLogger(__name__)


def settings(spec: Any) -> tuple[float, int]:
    """(λ, Fisher samples) in effect: the options of a strategy that trains with this regime (the
    `ewc` strategy, or a plugin's), else training.ewc."""
    from adaptinf.selection import get_strategy
    if get_strategy(spec.strategy).training_regime == Ewc.name:
        options = spec.effective_strategy_options()
        return float(options["lambda"]), int(options["fisher_samples"])
    return float(spec.training.ewc.lambda_), int(spec.training.ewc.fisher_samples)


def _fisher_samples(ctx: RunStep) -> int:
    return settings(ctx.spec)[1]


def _fisher_upto(ctx: RunStep, bundle: ModelBundle, step: int, adapter: Path) -> dict[str, torch.Tensor]:
    """The Fisher accumulated up to `step`: stored beside its adapter, or estimated now (the model
    must then hold that adapter's weights, as the freshly loaded training model does)."""
    stored = adapter / ewc.FISHER_FILE
    if stored.exists():
        return ewc.load_fisher(stored)
    log.info("ewc: adapter of step %d has no Fisher; estimating it from that step's training data", step)
    return ewc.diagonal_fisher(bundle, Encoder(bundle, ctx.spec.training.max_length), training_records(ctx, step),
                               ctx.spec.training.batch_size, _fisher_samples(ctx), seed=ctx.spec.seed + step)


@register_regime
class Ewc(Regime):
    name = "ewc"

    def __init__(self) -> None:
        self.penalty: ewc.EwcPenalty | None = None   # None: no previous adapter, no penalty

    def before_train(self, ctx: RunStep, bundle: ModelBundle) -> dict[str, Any]:
        previous = latest_trained(ctx, ctx.step)   # only the latest adapter is needed (and fetched)
        if previous is None:
            return {"ewc": "no previous adapter: no penalty"}
        step, adapter = previous
        fisher = _fisher_upto(ctx, bundle, step, adapter)
        lam = settings(ctx.spec)[0]
        self.penalty = ewc.EwcPenalty(bundle.model, fisher, lam)
        return {"ewc": {"lambda": lam, "fisher_upto_step": step}}

    def loss_penalty(self) -> ewc.EwcPenalty | None:
        return self.penalty

    def after_train(self, ctx: RunStep, bundle: ModelBundle, records: list[Record],
                    adapter_dir: Path) -> dict[str, Any]:
        """The Fisher accumulated up to this step: this step's, plus the penalty's."""
        fisher = ewc.diagonal_fisher(bundle, Encoder(bundle, ctx.spec.training.max_length), records,
                                     ctx.spec.training.batch_size, _fisher_samples(ctx), seed=ctx.spec.seed + ctx.step)
        previous = self.penalty.fisher if self.penalty else None
        ewc.save_fisher(ewc.accumulate(fisher, previous), adapter_dir / ewc.FISHER_FILE)
        return {"ewc_fisher_samples": min(len(records), _fisher_samples(ctx))}
