"""Selection strategies: which pool samples to train on at a step.

Use `get_strategy(name).select(PoolFeatures, SelectionContext)`. Each strategy is one module
here: a `Strategy` subclass decorated with `@register` and a literal `name = "..."`. Adding a
strategy is adding that file: `adaptinf.manifest` reads the names from the source (for the spec,
the CRD enums and the operator, without torch), and the modules it lists are imported here.
"""
import importlib as _importlib

from adaptinf import manifest as _manifest
from adaptinf.selection.base import (PoolFeatures, SelectionContext, SelectionResult, Strategy, available,
                                     get_strategy, register)

for _module in sorted(set(_manifest.strategy_modules().values())):
    _importlib.import_module(_module)   # registers its strategies
_manifest.check_registered(_manifest.strategy_modules(), available(), "strategy")

__all__ = ["PoolFeatures", "SelectionContext", "SelectionResult", "Strategy", "available", "get_strategy",
           "register"]
