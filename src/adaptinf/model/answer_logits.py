"""Logits only where they are read: at the positions that predict an answer token.

The loss, the scores and the gradients read the logits of the answer tokens only (a few of
each sample's tokens), but a forward computes the LM head — hidden × vocabulary — at every
position. Over a real vocabulary that head is a large share of a small model's work
(SmolLM2-135M: 576 × 49,152, a fifth of its forward; Gemma-3-270M: 640 × 262,144, most of it),
and the full logits tensor, batch × length × vocabulary, is the largest activation in memory.
transformers' `logits_to_keep` (a 1-D tensor of positions, since 4.52) applies the head to
those positions only; the result is the same logits at those positions, so the loss, scores
and gradients are unchanged (tests compare them with the full forward on CPU in fp32, where they
are bit-identical; on a GPU in bf16 a head over fewer rows may run another GEMM kernel, equal to
bf16 rounding).

The kept positions are one set for the whole batch (the union over its samples): with batches
of similar length, as extract and training make them, the union is a few times one answer.
"""
from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """(P,) sorted positions p whose logits predict an answer token in some sample of the batch
    (labels[:, p + 1] != -100)."""
    return (labels[:, 1:] != -100).any(0).nonzero().flatten()


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (peft wrappers pass it through)."""
    inner = getattr(model, "module", model)     # DDP / accelerate wrappers, then peft's
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return _forward_takes_logits_to_keep(type(inner))


@functools.cache
def _forward_takes_logits_to_keep(cls: type) -> bool:
    # Per class, not per call: extract and training ask once a batch.
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_logits_kwargs(model: torch.nn.Module, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward kwargs that restrict the LM head to the answer positions; {} when the model
    cannot (then its logits cover every position, which the readers below also accept)."""
    return {"logits_to_keep": answer_positions(labels)} if keeps_logits(model) else {}


def _answer_targets(labels: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """The next-token target of each logits column: (batch, P) for kept positions, (batch, L − 1)
    for full logits (whose last column predicts nothing)."""
    if positions is None:
        return labels[:, 1:]
    return labels[:, positions + 1]


def _logits_columns(logits: torch.Tensor, labels: torch.Tensor,
                    positions: torch.Tensor | None) -> torch.Tensor:
    """The logits aligned with `_answer_targets`: drop the last column of full logits."""
    if positions is None:
        return logits[:, :labels.shape[1] - 1]
    if logits.shape[1] != positions.numel():
        raise ValueError(f"logits cover {logits.shape[1]} positions, expected {positions.numel()} kept ones")
    return logits


def answer_token_logits(logits: torch.Tensor, labels: torch.Tensor,
                        positions: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every answer token of the batch: its sample index (N,), its fp32 logits (N, V) and its
    target id (N,), from full or kept logits."""
    targets = _answer_targets(labels, positions)
    sample, col = (targets != -100).nonzero(as_tuple=True)
    return sample, _logits_columns(logits, labels, positions)[sample, col].float(), targets[sample, col]


def answer_loss(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy over the batch's answer tokens, in fp32: transformers' causal-LM loss
    (without `num_items_in_batch`), from full or kept logits."""
    _, sel, y = answer_token_logits(logits, labels, positions)
    return F.cross_entropy(sel, y)
