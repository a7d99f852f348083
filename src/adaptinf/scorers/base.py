"""Scorer interface and registry.

All scorers read per-answer-token statistics from the same forward pass that yields the
gradients (plus, for image grounding, one image-free forward). Adding a scorer = adding a
module with a `@register`ed subclass that sets a literal `name` (adaptinf.manifest reads it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.answer_logits import answer_token_logits


@dataclass
class TokenStats:
    """Per answer token of a batch: which sample it belongs to and its statistics."""
    sample: torch.Tensor   # (N,) long, sample index in the batch
    nll: torch.Tensor      # (N,) negative log-likelihood of the reference token
    el2n: torch.Tensor     # (N,) ‖softmax(logits) − onehot(y)‖₂
    entropy: torch.Tensor  # (N,) predictive entropy −Σ p log p
    batch_size: int

    def per_sample_mean(self, values: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(self.batch_size, dtype=torch.float64, device=values.device)
        count = torch.zeros(self.batch_size, dtype=torch.float64, device=values.device)
        total.index_add_(0, self.sample, values.double())
        count.index_add_(0, self.sample, torch.ones_like(values, dtype=torch.float64))
        return total / count.clamp_min(1)


def token_stats(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> TokenStats:
    """Statistics of the answer tokens (labels != -100), next-token aligned, in fp32.

    `positions`: the sequence positions `logits` was computed at (`answer_logits`), None when it
    covers every position."""
    sample, sel, y = answer_token_logits(logits, labels, positions)     # sel: (N, V)
    logp = torch.log_softmax(sel, dim=-1)
    p = logp.exp()
    p_y = p.gather(1, y[:, None]).squeeze(1)
    nll = -logp.gather(1, y[:, None]).squeeze(1)
    # ‖p − e_y‖² = Σp² − 2p_y + 1, without materialising the one-hot.
    el2n = ((p * p).sum(-1) - 2 * p_y + 1).clamp_min(0).sqrt()
    entropy = -(p * logp).sum(-1)
    return TokenStats(sample, nll, el2n, entropy, labels.shape[0])


class Scorer:
    name: str
    # True when the scorer needs the image-free forward (image grounding).
    needs_text_only_pass: bool = False

    def score(self, with_image: TokenStats, without_image: TokenStats | None,
              has_image: torch.Tensor) -> torch.Tensor:
        """(batch,) float64 scores."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer]) -> type[Scorer]:
    _REGISTRY[cls.name] = cls
    return cls


def get_scorer(name: str) -> Scorer:
    if name not in _REGISTRY:
        raise KeyError(f"unknown scorer {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()


def available() -> list[str]:
    return sorted(_REGISTRY)
