"""Training regimes: how the train and eval stages use a strategy's selection.

`regime_for_run(spec).training_model(ctx)` … (the hooks: `base.Regime`). Each regime is one
module here, all imported below: `continue` (plain continual LoRA, the default), `ewc` and
`expansion`. A strategy chooses one by `Strategy.training_regime`; the strategy names (and
their options) stay in the strategy registry, `adaptinf.selection`.
"""
from __future__ import annotations

import importlib as _importlib
import pkgutil as _pkgutil

from adaptinf.spec_base import SpecError

from .base import EvalModel, Regime, available_regimes, get_regime, register_regime

for _info in _pkgutil.iter_modules(__path__):
    if _info.name != "base":
        _importlib.import_module(f"{__name__}.{_info.name}")   # registers its regime


def regime_for(strategy: str) -> Regime:
    """A fresh instance of the regime the named strategy trains with (`Strategy.training_regime`:
    the one seam between the strategy registry and this one)."""
    from adaptinf.selection import get_strategy
    name = get_strategy(strategy).training_regime
    if name not in available_regimes():
        raise ValueError(f"strategy {strategy!r} trains with regime {name!r}, which is not registered; "
                         f"known: {', '.join(available_regimes())}")
    return get_regime(name)


def regime_for_run(spec) -> Regime:
    """The regime a run's stages use: its strategy's, except that `training.ewc.lambda` > 0 turns
    plain continual LoRA into `ewc` (the spec refuses it for the strategies `ewc` and `expansion`)."""
    regime = regime_for(spec.strategy)
    if spec.training.ewc.lambda_ == 0:
        return regime
    if regime.name != "continue":   # what the spec's validation refuses, should a spec skip it
        raise SpecError(f"training.ewc.lambda: strategy {spec.strategy!r} trains with regime {regime.name!r}, "
                        "not plain continual LoRA; set it to 0")
    return get_regime("ewc")


__all__ = ["EvalModel", "Regime", "available_regimes", "get_regime", "regime_for", "regime_for_run",
           "register_regime"]
