"""Selection strategies: which pool samples to train on at a step.

Use `get_strategy(name).select(PoolFeatures, SelectionContext)`. Each strategy is one module
here; importing it registers it, so adding a strategy is one module plus one import line.
"""
from adaptinf.selection.base import (PoolFeatures, SelectionContext, SelectionResult, Strategy, available,
                                     get_strategy, register)
from adaptinf.selection import (adapt_inf, coincide, density, random_select, regimes, semdedup,  # noqa: F401
                                single_score)  # (imported for registration)

__all__ = ["PoolFeatures", "SelectionContext", "SelectionResult", "Strategy", "available", "get_strategy",
           "register"]
