"""Training regimes: how the train and eval stages use a strategy's selection.

`regime_for(strategy).training_model(ctx)` … (the hooks: `base.Regime`). Each regime is one
module here, all imported below: `continue` (plain continual LoRA, the default), `ewc` and
`expansion`. A strategy chooses one by `Strategy.training_regime`; the strategy names (and
their options) stay in the strategy registry, `adaptinf.selection`.
"""
from __future__ import annotations

import importlib as _importlib
import pkgutil as _pkgutil

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


__all__ = ["EvalModel", "Regime", "available_regimes", "get_regime", "regime_for", "register_regime"]
