"""What the public reference code did, kept as a yardstick for tests and benchmarks.

The Adapt-∞ code (a LLaVA fork built on LESS) computed gradient features one sample at a time:
batch size 1, every layer's LoRA weights trainable, a full `loss.backward()` through all layers
per sample, then the chosen layer's `.grad` flattened and projected — LESS projects every
`project_interval` = 16 samples. Scores came from that sample's forward, image grounding from
one more image-free forward.

`reference_extract` does exactly that and returns the same `Features` as the fused
`extract_features`, so tests can check equality and `bench/extract.py` can time both on the same
model and data. It differs from the original only where the original was wrong (docs/method.md §15):
the loss is the answer-token mean, perplexity is exp(mean NLL), and the projection is the same
seeded fp32 Rademacher matrix as the fused path (the original projected in fp16).
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.records import Record
from ..model.encoding import Encoder
from ..model.loading import ModelBundle, decoder_layers
from ..scorers import get_scorer, token_stats
from .extract import ExtractConfig, Features, _mean_pool, _model_inputs, _per_sample_loss, hidden_layer_index
from .grads import LoraGradCapture
from .projection import RademacherProjector, l2_normalise
from .. import progress as progress_label

LESS_PROJECT_INTERVAL = 16  # LESS's `project_interval`: gradients are projected 16 at a time


def _chosen_parameters(model: torch.nn.Module, layers: list[int], all_layers_trainable: bool) -> list[torch.nn.Parameter]:
    """Mark the LoRA weights trainable as the reference did; return the chosen layers' ones in
    the order `LoraGradCapture.parameters()` (and so the fused path) concatenates them."""
    chosen = LoraGradCapture([decoder_layers(model)[i] for i in layers]).parameters()
    for name, p in model.named_parameters():
        p.requires_grad_(all_layers_trainable and "lora_" in name)
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def _sample_grad(model: torch.nn.Module, chosen: list[torch.nn.Parameter], inputs: dict, labels: torch.Tensor,
                 output_hidden_states: bool):
    """One forward + full backward of one sample; (its flat fp32 gradient, the model output)."""
    model.zero_grad(set_to_none=True)
    out = model(**inputs, output_hidden_states=output_hidden_states)
    _per_sample_loss(out.logits, labels).sum().backward()
    return torch.cat([p.grad.float().flatten() for p in chosen]), out


def reference_grads(bundle: ModelBundle, encoder: Encoder, records: list[Record], layers: list[int],
                    projector: RademacherProjector | None = None, all_layers_trainable: bool = True) -> np.ndarray:
    """(n, dim) raw per-sample gradients — or projected and normalised if a projector is given."""
    model = bundle.model
    dtype = next(model.parameters()).dtype
    model.eval()
    chosen = _chosen_parameters(model, layers, all_layers_trainable)
    rows = []
    for rec in records:
        batch = encoder.collate([encoder.encode(rec)])
        g, _ = _sample_grad(model, chosen, _model_inputs(batch, bundle.device, dtype),
                            batch["labels"].to(bundle.device), output_hidden_states=False)
        g = g[None]
        rows.append(l2_normalise(projector(g)) if projector is not None else g)
    model.zero_grad(set_to_none=True)
    return torch.cat(rows).detach().cpu().numpy()


def reference_extract(bundle: ModelBundle, encoder: Encoder, records: list[Record], cfg: ExtractConfig,
                      project_interval: int = LESS_PROJECT_INTERVAL, progress: bool = False) -> Features:
    """The whole extraction (gradients, hidden states, scores) the reference way: one sample at
    a time with a full backward through every layer's LoRA. `cfg.batch_size` is ignored."""
    model, device = bundle.model, bundle.device
    dtype = next(model.parameters()).dtype
    model.eval()
    scorers = [get_scorer(s) for s in cfg.scorers]
    need_text_pass = bundle.multimodal and any(s.needs_text_only_pass for s in scorers)
    chosen: list[torch.nn.Parameter] = []
    if cfg.grads:
        chosen = _chosen_parameters(model, cfg.layers, all_layers_trainable=True)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    projector = None
    if cfg.grads:
        dim = sum(p.numel() for p in chosen)
        projector = RademacherProjector(dim, min(cfg.projection_dim, dim), seed=cfg.seed, device=device)
    hidden_layer = hidden_layer_index(model, cfg)

    grads: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    hiddens: list[np.ndarray] = []
    scores: dict[str, list[np.ndarray]] = {s.name: [] for s in scorers}

    def flush() -> None:
        if pending:
            grads.append(l2_normalise(projector(torch.stack(pending))).cpu())
            pending.clear()

    for rec in tqdm(records, desc=progress_label.desc("reference extract"), unit="sample", disable=not progress):
        batch = encoder.collate([encoder.encode(rec)])
        labels = batch["labels"].to(device)
        inputs = _model_inputs(batch, device, dtype)
        if cfg.grads:
            g, out = _sample_grad(model, chosen, inputs, labels, cfg.hidden)
            pending.append(g)
            if len(pending) == project_interval:
                flush()
        else:
            with torch.no_grad():
                out = model(**inputs, output_hidden_states=cfg.hidden)
        if cfg.hidden:
            hiddens.append(_mean_pool(out.hidden_states[hidden_layer + 1].detach(), inputs["attention_mask"]).cpu().numpy())
        stats = token_stats(out.logits.detach(), labels)
        text_stats = None
        has_image = torch.tensor([rec.image is not None])
        if need_text_pass and rec.image is not None:
            text_batch = encoder.collate([encoder.encode(rec, with_image=False)])
            with torch.no_grad():
                text_out = model(**_model_inputs(text_batch, device, dtype))
            text_stats = token_stats(text_out.logits, text_batch["labels"].to(device))
        for s in scorers:
            scores[s.name].append(s.score(stats, text_stats, has_image).cpu().numpy())
        del out
    flush()
    model.zero_grad(set_to_none=True)
    return Features(
        grads=torch.cat(grads).numpy().astype(np.float32) if grads else None,
        hidden=np.concatenate(hiddens).astype(np.float32) if hiddens else None,
        scores={k: np.concatenate(v).astype(np.float64) for k, v in scores.items()},
        grad_dim=projector.in_dim if projector is not None else 0)
