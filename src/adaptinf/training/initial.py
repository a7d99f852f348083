"""The initial instruction tuning (`model.initialTuning: full`): every weight of the base trained
on the first dataset, stored once as the run's base (`<run>/base`).

A tiny model starts from random init; later steps then have a trained model to forget, and the
adapter trained next on the same data a non-zero LoRA B to take gradients through.
"""
from __future__ import annotations

import tempfile
from typing import Any

from adaptinf.data.records import Record
from adaptinf.model.checkpoints import RunStep, base_prefix
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import load_base, save_preprocessing

from . import distributed
from .loop import TrainConfig, train_model


def step_config(ctx: RunStep, epochs: int | None = None, learning_rate: float | None = None) -> TrainConfig:
    """`spec.training` for this step (its seed offset by the step), epochs / rate overridable."""
    t = ctx.spec.training
    return TrainConfig(epochs=epochs or t.epochs, batch_size=t.batch_size,
                       learning_rate=learning_rate or t.learning_rate, weight_decay=t.weight_decay,
                       warmup_ratio=t.warmup_ratio, gradient_accumulation=t.gradient_accumulation,
                       mixed_precision=t.mixed_precision, seed=t.seed + ctx.step)


def tune_base(ctx: RunStep, records: list[Record], progress: bool = True) -> dict[str, Any]:
    """Full-parameter tuning of the base, once per run; returns notes for the train summary
    ({} when the base was already stored)."""
    m = ctx.spec.model
    if ctx.store.is_committed(base_prefix(ctx.run)):
        return {}
    bundle = load_base(m.base, m.dtype)
    for p in bundle.model.parameters():
        p.requires_grad_(True)
    result = train_model(bundle, Encoder(bundle, ctx.spec.training.max_length), records,
                         step_config(ctx, m.initial_epochs, m.initial_learning_rate), progress=progress)
    if distributed.is_main():
        with tempfile.TemporaryDirectory() as tmp:
            bundle.model.save_pretrained(tmp)
            save_preprocessing(bundle, tmp)  # AutoProcessor/AutoTokenizer load the stored base
            ctx.store.upload_dir(tmp, base_prefix(ctx.run), {"from": m.base, "epochs": m.initial_epochs})
    distributed.barrier()  # the other processes load this base next
    return {"initial_loss": result.losses, "initial_seconds": result.seconds}
