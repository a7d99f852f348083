"""`continue`: plain continual LoRA, every strategy's regime unless it names another.

Each step trains the previous step's adapter further on its selection; eval scores that
adapter. These are the `Regime` hooks as they are.
"""
from __future__ import annotations

from .base import Regime, register_regime


@register_regime
class Continue(Regime):
    name = "continue"
