"""The proxy model `compare` gives `STRATEGY@proxy` runs: a smaller tiny model, instruction-tuned
in full on the stream's first dataset exactly like the main model's step 0 (same epochs,
learning rate, batch size, seed).

A random-init proxy would give gradients of noise; a real deployment would name a smaller
instruction-tuned model (e.g. a 7B LLaVA for a 13B one), which this stands in for. It is built
once per stream and then never trained again.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

# Half the width of the main tiny model (hidden 128, CLIP 64 × 2 layers): ~1/4 of its LM weights.
PROXY_SHAPE = {"hidden": 64, "layers": 2, "vision_hidden": 32, "vision_layers": 1}


def build_proxy(stream: str | Path, out: str | Path, multimodal: bool, seed: int = 0) -> Path:
    """Write the tuned proxy model directory `out` (replaced atomically) and return it."""
    import torch

    from adaptinf.data.records import read_records
    from adaptinf.model.encoding import Encoder
    from adaptinf.model.loading import load_base, save_preprocessing
    from adaptinf.model.tiny import build_tiny_model
    from adaptinf.runner import collect
    from adaptinf.training import TrainConfig, train_model

    out = Path(out)
    run, datasets = collect([str(stream)])
    spec = run.resolved_spec()
    first = datasets[0].resolved_spec()
    records, _ = read_records(first.source, dataset=datasets[0].name, image_root=first.image_root)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        raw = build_tiny_model(Path(tmp) / "init", multimodal=multimodal, seed=seed, **PROXY_SHAPE)
        bundle = load_base(str(raw), "float32", torch.device("cpu"))
        for p in bundle.model.parameters():
            p.requires_grad_(True)
        result = train_model(bundle, Encoder(bundle, spec.training.max_length), records,
                             TrainConfig(epochs=spec.model.initial_epochs, batch_size=spec.training.batch_size,
                                         learning_rate=spec.model.initial_learning_rate, seed=seed), progress=False)
        tuned = Path(tmp) / "tuned"
        bundle.model.save_pretrained(tuned)
        save_preprocessing(bundle, tuned)
        shutil.rmtree(out, ignore_errors=True)
        tuned.rename(out)
    log.info("proxy model: %.2fM parameters, tuned on %s (loss %.3f → %.3f) → %s",
             sum(p.numel() for p in bundle.model.parameters()) / 1e6, datasets[0].name, result.losses[0],
             result.losses[-1], out)
    return out
