"""Sample scorers (a registry): perplexity, image grounding, EL2N, entropy."""
from . import el2n, entropy, image_grounding, perplexity  # noqa: F401  (registration)
from .base import Scorer, TokenStats, available, get_scorer, register, token_stats

__all__ = ["Scorer", "TokenStats", "available", "get_scorer", "register", "token_stats"]
