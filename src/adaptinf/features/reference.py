"""What the public reference code did, kept as a yardstick for tests and benchmarks: batch
size 1, every layer's LoRA trainable, a full backward per sample, then read the chosen
layers' `.grad` and project."""
from __future__ import annotations

import numpy as np
import torch

from ..data.records import Record
from ..model.encoding import Encoder
from ..model.loading import ModelBundle, decoder_layers
from .extract import _model_inputs, _per_sample_loss
from .grads import LoraGradCapture
from .projection import RademacherProjector, l2_normalise


def reference_grads(bundle: ModelBundle, encoder: Encoder, records: list[Record], layers: list[int],
                    projector: RademacherProjector | None = None, all_layers_trainable: bool = True) -> np.ndarray:
    """(n, dim) raw per-sample gradients — or projected and normalised if a projector is given."""
    model = bundle.model
    dtype = next(model.parameters()).dtype
    model.eval()
    chosen = LoraGradCapture([decoder_layers(model)[i] for i in layers]).parameters()
    for name, p in model.named_parameters():
        p.requires_grad_(all_layers_trainable and "lora_" in name)
    for p in chosen:
        p.requires_grad_(True)
    rows = []
    for rec in records:
        model.zero_grad(set_to_none=True)
        batch = encoder.collate([encoder.encode(rec)])
        out = model(**_model_inputs(batch, bundle.device, dtype))
        _per_sample_loss(out.logits, batch["labels"].to(bundle.device)).sum().backward()
        g = torch.cat([p.grad.float().flatten() for p in chosen])[None]
        rows.append(l2_normalise(projector(g)) if projector is not None else g)
    model.zero_grad(set_to_none=True)
    return torch.cat(rows).detach().cpu().numpy()
