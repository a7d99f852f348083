"""The fused extraction pass over a list of records.

One forward per batch gives the logits (→ perplexity, EL2N, entropy), the chosen layer's hidden
states (→ mean-pooled features) and, through one batched backward, per-sample LoRA gradients of
the chosen layer(s) (→ random projection → L2 normalisation). Image grounding adds one
image-free forward, without grad, for the samples that have an image.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Record
from ..model.encoding import Encoder
from ..model.loading import ModelBundle, decoder_layers
from ..scorers import get_scorer, token_stats
from .grads import LoraGradCapture
from .projection import RademacherProjector, l2_normalise

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    layers: list[int]                 # decoder-layer indices whose LoRA gradients are taken
    projection_dim: int = 8192
    batch_size: int = 16
    seed: int = 0
    grads: bool = True
    hidden: bool = True
    scorers: tuple[str, ...] = ("perplexity", "image-grounding", "el2n", "entropy")


@dataclass
class Features:
    grads: np.ndarray | None = None                 # (n, k) float32, unit rows
    hidden: np.ndarray | None = None                # (n, h) float32
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    grad_dim: int = 0                               # gradient dimension before projection


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
    out = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return ((hidden * m).sum(1) / m.sum(1).clamp_min(1)).float()


def prepare_model(bundle: ModelBundle, cfg: ExtractConfig) -> LoraGradCapture | None:
    """Freeze everything but the chosen layers' LoRA weights; return their gradient capture."""
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    if not cfg.grads:
        return None
    layers = decoder_layers(bundle.model)
    capture = LoraGradCapture([layers[i] for i in cfg.layers])
    for p in capture.parameters():
        p.requires_grad_(True)
    return capture


def extract_features(bundle: ModelBundle, encoder: Encoder, records: list[Record], cfg: ExtractConfig,
                     progress: bool = True) -> Features:
    model, device = bundle.model, bundle.device
    dtype = next(model.parameters()).dtype
    model.eval()  # no dropout: gradients and scores are deterministic per sample
    capture = prepare_model(bundle, cfg)
    scorers = [get_scorer(s) for s in cfg.scorers]
    need_text_pass = bundle.multimodal and any(s.needs_text_only_pass for s in scorers)
    projector = None
    if capture is not None:
        k = cfg.projection_dim
        if k > capture.dim:
            log.warning("extract.projectionDim %d exceeds the gradient dimension %d: projecting to %d",
                        k, capture.dim, capture.dim)
            k = capture.dim
        projector = RademacherProjector(capture.dim, k, seed=cfg.seed, device=device)
    hidden_layer = cfg.layers[len(cfg.layers) // 2] if cfg.layers else len(decoder_layers(model)) // 2

    grads, hiddens = [], []
    scores: dict[str, list[np.ndarray]] = {s.name: [] for s in scorers}
    batches = range(0, len(records), cfg.batch_size)
    for start in tqdm(batches, desc="extract", unit="batch", disable=not progress):
        chunk = records[start:start + cfg.batch_size]
        batch = encoder.collate([encoder.encode(r) for r in chunk])
        labels = batch["labels"].to(device)
        inputs = _model_inputs(batch, device, dtype)
        with torch.set_grad_enabled(capture is not None):
            if capture is not None:
                with capture:
                    out = model(**inputs, output_hidden_states=cfg.hidden)
                    stats = token_stats(out.logits, labels)
                    per_sample = _per_sample_loss(out.logits, labels)
                    g = capture.per_sample_grads(per_sample.sum())
                grads.append(l2_normalise(projector(g.detach())).cpu().numpy())
            else:
                out = model(**inputs, output_hidden_states=cfg.hidden)
                stats = token_stats(out.logits, labels)
        if cfg.hidden:
            hiddens.append(_mean_pool(out.hidden_states[hidden_layer + 1].detach(), inputs["attention_mask"]).cpu().numpy())
        text_stats = None
        has_image = torch.tensor([r.image is not None for r in chunk])
        if need_text_pass and has_image.any():
            text_batch = encoder.collate([encoder.encode(r, with_image=False) for r in chunk])
            with torch.no_grad():
                text_out = model(**_model_inputs(text_batch, device, dtype))
            text_stats = token_stats(text_out.logits.detach(), text_batch["labels"].to(device))
        stats = _detach(stats)
        for s in scorers:
            scores[s.name].append(s.score(stats, text_stats, has_image).cpu().numpy())
        del out
    return Features(
        grads=np.concatenate(grads).astype(np.float32) if grads else None,
        hidden=np.concatenate(hiddens).astype(np.float32) if hiddens else None,
        scores={k: np.concatenate(v).astype(np.float64) for k, v in scores.items()},
        grad_dim=capture.dim if capture is not None else 0)


def _per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean answer-token cross-entropy of each sample (the loss the paper differentiates)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    tok = torch.nn.functional.cross_entropy(shift_logits.transpose(1, 2), shift_labels,
                                            ignore_index=-100, reduction="none")
    mask = (shift_labels != -100).float()
    return (tok * mask).sum(1) / mask.sum(1).clamp_min(1)


def _detach(stats):
    for name in ("nll", "el2n", "entropy"):
        setattr(stats, name, getattr(stats, name).detach())
    return stats
