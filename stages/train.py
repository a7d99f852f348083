"""Stage 3, train: LoRA on the selected subset, continuing the previous step's adapter.

Step 0 with `model.initialTuning: full` first trains every weight of the base on the first
dataset (a tiny model starts from random init) and stores the result as the run's base; a
fresh adapter is then trained on the same data, so that later steps have a trained model to
forget and a non-zero LoRA B to take gradients through.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from adaptinf.data.pool import load_records
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import load_base, save_preprocessing
from adaptinf.tracking.model_registry import log_adapter_model, register_step_model, version_tags
from adaptinf.training import TrainConfig, distributed, train_model

from . import continual
from .cluster_select import initial_tuning_step
from .context import StageContext
from .ingest import candidate_pool
from .models import base_identity, base_prefix, record_base
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def _train_config(ctx: StageContext, epochs: int | None = None, lr: float | None = None) -> TrainConfig:
    t = ctx.spec.training
    return TrainConfig(epochs=epochs or t.epochs, batch_size=t.batch_size, learning_rate=lr or t.learning_rate,
                       weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio,
                       gradient_accumulation=t.gradient_accumulation, mixed_precision=t.mixed_precision,
                       seed=t.seed + ctx.step)


def _initial_tuning(ctx: StageContext, records) -> dict[str, Any]:
    """Full-parameter tuning of the base; stored once as `<run>/base`."""
    m = ctx.spec.model
    if ctx.store.is_committed(base_prefix(ctx.run)):
        return {}
    bundle = load_base(m.base, m.dtype)
    for p in bundle.model.parameters():
        p.requires_grad_(True)
    result = train_model(bundle, Encoder(bundle, ctx.spec.training.max_length), records,
                         _train_config(ctx, m.initial_epochs, m.initial_learning_rate), progress=ctx.progress)
    if distributed.is_main():
        with tempfile.TemporaryDirectory() as tmp:
            bundle.model.save_pretrained(tmp)
            save_preprocessing(bundle, tmp)  # AutoProcessor/AutoTokenizer load the stored base
            ctx.store.upload_dir(tmp, base_prefix(ctx.run), {"from": m.base, "epochs": m.initial_epochs})
    distributed.barrier()  # the other processes load this base next
    return {"initial_loss": result.losses, "initial_seconds": result.seconds}


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    pool = candidate_pool(ctx)
    selected = ctx.store.read_json(f"{ctx.prefix('cluster-select')}/selection.json")["selected"]
    records = load_records(ctx.store, pool, selected)
    summary: dict[str, Any] = {"samples": len(records)}
    if initial_tuning_step(ctx) and ctx.spec.model.initial_tuning == "full":
        summary.update(_initial_tuning(ctx, records))
    bundle = continual.model_for_training(ctx)    # the previous adapter, or a new one (expansion)
    penalty, notes = continual.penalty(ctx, bundle)  # EWC's, else None
    summary.update(notes)
    epochs = ctx.spec.model.initial_epochs if initial_tuning_step(ctx) and ctx.spec.model.initial_tuning == "lora" else None
    result = train_model(bundle, Encoder(bundle, ctx.spec.training.max_length), records,
                         _train_config(ctx, epochs), progress=ctx.progress, penalty=penalty)
    summary.update(loss=result.losses, seconds=result.seconds)
    if not distributed.is_main():
        return summary
    with tempfile.TemporaryDirectory() as tmp:
        bundle.model.save_pretrained(tmp)
        base, revision = base_identity(ctx)
        record_base(Path(tmp), base, revision)
        summary.update(continual.after_training(ctx, bundle, records, Path(tmp), penalty))  # Fisher / routing keys
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                ctx.store.write_bytes(f"{prefix}/adapter/{path.relative_to(tmp).as_posix()}", path.read_bytes())
        child = ctx.tracker.step_id(ctx.step, ctx.dataset)
        ctx.tracker.log_artifacts(child, tmp, "adapter")
        _log_model(ctx, child, Path(tmp), base, revision)
    # Every metric's step is the time step; the per-epoch curves have keys of their own
    # (their step is the epoch), and step 0's full initial tuning is logged too.
    for epoch, loss in enumerate(result.losses):
        ctx.tracker.log_metrics(child, {"train_loss_by_epoch": loss}, epoch)
    for epoch, loss in enumerate(summary.get("initial_loss") or []):
        ctx.tracker.log_metrics(child, {"initial_tuning_loss_by_epoch": loss}, epoch)
    final = {"train_loss": result.losses[-1]} if result.losses else {}
    if summary.get("initial_loss"):
        final["initial_tuning_loss"] = summary["initial_loss"][-1]
    ctx.tracker.log_metrics(child, {**final, "train_seconds": result.seconds, "train_samples": len(records)},
                            ctx.step)
    return summary


def _log_model(ctx: StageContext, child: str | None, adapter: Path, base: str, revision: str | None) -> None:
    """The adapter as an MLflow model of the step's run, and (`mlflow.model: register`) the run's
    registered model's newest version."""
    mode = ctx.spec.mlflow.model
    if child is None or mode == "none":
        return
    settings = {"dtype": ctx.spec.model.dtype, "max_length": ctx.spec.training.max_length,
                "max_new_tokens": ctx.spec.eval.max_new_tokens}
    if log_adapter_model(ctx.tracker, child, adapter, settings) and mode == "register":
        version = register_step_model(ctx.tracker, child, version_tags(ctx.step, ctx.dataset, base, revision))
        log.info("registered %s version %s (step %d)", ctx.run, version, ctx.step)


def run(ctx: StageContext) -> dict[str, Any]:
    return run_idempotent("train", ctx, _body)
