"""A tiny model with a LoRA adapter whose B is non-zero, as after training, so both halves of
the LoRA gradient are live (peft starts B at zero): shared by the feature and family tests."""
from __future__ import annotations

from pathlib import Path

import torch

from adaptinf.model.loading import ModelBundle, attach_adapter, load_base
from adaptinf.spec import LoraSpec


def live_lora_bundle(model_dir: Path, dtype: str = "float32", trainable: bool = False) -> ModelBundle:
    bundle = attach_adapter(load_base(str(model_dir), dtype, torch.device("cpu")), LoraSpec(rank=4), None,
                            trainable=trainable)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return bundle
