"""Sample scorers (a registry): perplexity, image grounding, EL2N, entropy.

Each scorer is one module here (a `@register`-ed `Scorer` subclass with a literal `name`); the
modules `adaptinf.manifest` lists are imported here, which fills the registry.
"""
import importlib as _importlib

from adaptinf import manifest as _manifest

from .base import Scorer, TokenStats, available, get_scorer, register, token_stats

for _module in sorted(set(_manifest.scorer_modules().values())):
    _importlib.import_module(_module)   # registers its scorers
_manifest.check_registered(_manifest.scorer_modules(), available(), "scorer")

__all__ = ["Scorer", "TokenStats", "available", "get_scorer", "register", "token_stats"]
