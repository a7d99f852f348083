"""Selection strategies: which pool samples to train on at a step.

Use `get_strategy(name).select(PoolFeatures, SelectionContext)`. Each strategy is one module
here; importing it registers it, so adding a strategy is one module plus one import line.
"""
from adaptinf.selection.base import (PoolFeatures, SelectionContext, SelectionResult, Strategy, available,
                                     get_strategy, register)
from adaptinf.selection import adapt_inf, random_select, regimes, single_score  # noqa: F401  (registration)

__all__ = ["PoolFeatures", "SelectionContext", "SelectionResult", "Strategy", "available", "get_strategy",
           "register"]
