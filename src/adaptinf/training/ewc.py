"""Elastic weight consolidation on the LoRA weights (Kirkpatrick et al., PNAS 2017), the
regularisation regime He et al. compare in "Continual Instruction Tuning for Large Multimodal
Models" (2023).

Training step t adds to the loss

    (λ / 2) Σ_j F_j (θ_j − θ*_j)²

over every LoRA weight θ_j (A and B of every adapted linear), where θ* is the adapter the step
starts from (the previous step's) and F is the diagonal empirical Fisher of the earlier steps'
training data, accumulated online (Schwarz et al. 2018, γ = 1: F_≤t = F_t + F_≤t−1), so the
penalty protects every earlier step, not only the last. F_t is the mean over step t's training
samples of the squared per-sample gradient of the sample's mean answer-token NLL, taken at the
weights trained on it; the per-sample gradients come from the same batched hooks as the
extract stage's (`features/grads.py`), over every decoder layer. Weights trained in full next
to the adapter (`modulesToSave`, e.g. LLaVA's projector) are not penalised.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.records import Record
from ..features.grads import LoraGradCapture
from ..features.zero_order import answer_nll
from ..model.answer_logits import answer_logits_kwargs
from ..model.encoding import Encoder
from ..model.loading import ModelBundle, decoder_layers
from ..strategy_options import STRATEGY_OPTIONS

log = logging.getLogger(__name__)

FISHER_FILE = "ewc_fisher.safetensors"   # stored beside the adapter it was estimated with
# The `ewc` strategy's options `lambda` and `fisher_samples` (spec.strategyOptions): their
# defaults, and why, are in adaptinf.strategy_options.
DEFAULT_LAMBDA: float = STRATEGY_OPTIONS["ewc"]["lambda"].default
DEFAULT_MAX_SAMPLES: int = STRATEGY_OPTIONS["ewc"]["fisher_samples"].default


def _subset(records: list[Record], max_samples: int, seed: int) -> list[Record]:
    if len(records) <= max_samples:
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_samples, replace=False))
    return [records[i] for i in keep]


def diagonal_fisher(bundle: ModelBundle, encoder: Encoder, records: list[Record], batch_size: int = 16,
                    max_samples: int = DEFAULT_MAX_SAMPLES, seed: int = 0) -> dict[str, torch.Tensor]:
    """Parameter name → mean squared per-sample gradient (float32, on CPU) of every LoRA weight."""
    model = bundle.model
    names = {id(p): n for n, p in model.named_parameters()}
    capture = LoraGradCapture(decoder_layers(model))
    params = capture.parameters()
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it predicts
    sums = torch.zeros(capture.dim, dtype=torch.float64)
    records = _subset(records, max_samples, seed)
    try:
        for start in range(0, len(records), batch_size):
            batch = encoder.collate([encoder.encode(r) for r in records[start:start + batch_size]])
            inputs = {k: v.to(bundle.device) for k, v in batch.items() if k != "labels"}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
            labels = batch["labels"].to(bundle.device)
            keep = answer_logits_kwargs(model, labels)
            with capture:
                logits = model(**inputs, use_cache=False, **keep).logits
                g = capture.per_sample_grads(answer_nll(logits, labels, keep.get("logits_to_keep")).sum())
            sums += (g.double() ** 2).sum(0).cpu()
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    mean = (sums / max(1, len(records))).float()
    out, offset = {}, 0
    for p in params:
        out[names[id(p)]] = mean[offset:offset + p.numel()].view(p.shape).clone()
        offset += p.numel()
    return out


def accumulate(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """F_≤t = F_t + F_≤t−1 (online EWC with γ = 1); weights only one of them has keep their value."""
    if not old:
        return dict(new)
    return {k: new.get(k, 0) + old.get(k, 0) for k in sorted(set(new) | set(old))}


def save_fisher(fisher: dict[str, torch.Tensor], path: str | Path) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in fisher.items()}, str(path))


def load_fisher(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


class EwcPenalty:
    """`penalty()` = (λ/2) Σ F (θ − θ*)², θ* = the weights when this object was made."""

    def __init__(self, model: torch.nn.Module, fisher: dict[str, torch.Tensor], lam: float = DEFAULT_LAMBDA):
        params = dict(model.named_parameters())
        unknown = sorted(set(fisher) - set(params))
        if unknown:
            raise ValueError(f"EWC Fisher names weights the model does not have, e.g. {unknown[:2]}")
        self.lam, self.fisher = lam, fisher
        self.terms = [(params[n], params[n].detach().clone(), f.to(params[n].device, params[n].dtype))
                      for n, f in sorted(fisher.items())]

    def __call__(self) -> torch.Tensor:
        total = sum(((p - anchor) ** 2 * f).sum() for p, anchor, f in self.terms)
        return 0.5 * self.lam * total
