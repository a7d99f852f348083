"""Stage 3, train: LoRA on the selected subset, as the strategy's training regime says.

The regime (`adaptinf.training.regimes`) picks the model — by default the previous step's
adapter, continued — and may add a loss penalty (ewc) and files beside the new adapter (ewc's
Fisher, expansion's routing keys). Step 0 with `model.initialTuning: full` first trains every
weight of the base on the first dataset and stores it as the run's base
(`adaptinf.training.initial`); `lora` trains the first adapter for `model.initialEpochs`. With
`training.repair` on (off by default), the rows a step's training raised the loss of most get a
one-epoch repair pass after it, or join its remaining epochs (`adaptinf.training.repair`).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from adaptinf.data.pool import PoolManifest, load_records
from adaptinf.data.records import Record
from adaptinf.model.checkpoints import base_identity, record_base, write_folder
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle
from adaptinf.tracking.model_registry import log_adapter_model, register_step_model, version_tags
from adaptinf.spec import repair_slots
from adaptinf.spec_base import SpecError
from adaptinf.training import LaterRows, TrainResult, distributed, repair, train_model
from adaptinf.training.initial import step_config, tune_base
from adaptinf.training.loop import TrainConfig
from adaptinf.training.regimes import Regime, regime_for_run

from .cluster_select import initial_tuning_step
from .context import StageContext
from .ingest import candidate_pool
from .runtime import run_idempotent

log = logging.getLogger(__name__)


def _body(ctx: StageContext, prefix: str) -> dict[str, Any]:
    pool = candidate_pool(ctx)
    selected = ctx.store.read_json(f"{ctx.prefix('cluster-select')}/selection.json")["selected"]
    records = load_records(ctx.store, pool, selected)
    summary: dict[str, Any] = {"samples": len(records)}
    first, initial = initial_tuning_step(ctx), ctx.spec.model.initial_tuning
    if first and initial == "full":
        summary.update(tune_base(ctx, records, progress=ctx.progress))
    regime = regime_for_run(ctx.spec)
    bundle = regime.training_model(ctx)
    summary.update(regime.before_train(ctx, bundle))
    config = step_config(ctx, ctx.spec.model.initial_epochs if first and initial == "lora" else None)
    encoder = Encoder(bundle, ctx.spec.training.max_length)
    slots = 0 if first else repair_slots(ctx.spec)
    if slots and regime.name == "expansion":   # the spec refuses it; a strategy override must too
        raise SpecError("training.repair.fraction: the expansion strategy trains a new adapter per step; "
                        "set it to 0 for this run")
    check = _plan_repair(ctx, bundle, encoder, pool, set(selected)) if slots else None
    interleaved: dict[str, Any] = {}   # the interleaved placement's report, filled after epoch 1
    later = LaterRows(slots, lambda: _risen(ctx, bundle, encoder, check, slots, interleaved)) \
        if check is not None and ctx.spec.training.repair.placement == "interleaved" else None
    result = train_model(bundle, encoder, records, config, progress=ctx.progress, penalty=regime.loss_penalty(),
                         later=later)
    summary.update(loss=result.losses, seconds=result.seconds)
    if later is not None:
        summary["repair"] = interleaved
    elif check is not None:
        summary["repair"] = _repair(ctx, bundle, encoder, check, records, config, slots, regime)
    if not distributed.is_main():
        return summary
    with tempfile.TemporaryDirectory() as tmp:
        bundle.model.save_pretrained(tmp)
        base, revision = base_identity(ctx)
        record_base(Path(tmp), base, revision)
        summary.update(regime.after_train(ctx, bundle, records, Path(tmp)))
        write_folder(ctx.store, f"{prefix}/adapter", Path(tmp))
        child = ctx.tracker.step_id(ctx.step, ctx.dataset)
        ctx.tracker.log_artifacts(child, tmp, "adapter")
        _log_model(ctx, child, Path(tmp), base, revision)
    _log_losses(ctx, child, result, summary)
    return summary


def _plan_repair(ctx: StageContext, bundle: ModelBundle, encoder: Encoder, pool: PoolManifest,
                 selected: set[str]) -> repair.RepairPlan:
    """Before training: a seeded sample of the rows not selected, and their loss now."""
    uids = repair.checked_uids(pool.members, selected, ctx.spec.training.repair.max_checked, ctx.spec.seed + ctx.step)
    return repair.plan(bundle, encoder, load_records(ctx.store, pool, uids), ctx.spec.extract.batch_size)


def _second_check(ctx: StageContext, bundle: ModelBundle, encoder: Encoder, check: repair.RepairPlan,
                  slots: int) -> tuple[list[Record], dict[str, Any]]:
    """The checked samples' loss again, after (some of) the training: the ones it raised most, as
    one choice for every training process, and the report with both checks' seconds."""
    start = time.perf_counter()
    after = repair.answer_nll(bundle, encoder, check.checked, ctx.spec.extract.batch_size)
    _, found = repair.risen_records(check, after, slots, ctx.spec.training.repair.min_rise)
    found = distributed.from_main(found)   # float noise must not give two processes different data
    by_uid = {row.uid: row for row in check.checked}
    found["check_seconds"] = check.seconds + time.perf_counter() - start
    return [by_uid[u] for u in found["repaired_uids"]], found


def _risen(ctx: StageContext, bundle: ModelBundle, encoder: Encoder, check: repair.RepairPlan, slots: int,
           report: dict[str, Any]) -> list[Record]:
    """After the first epoch (the interleaved placement): the samples whose loss it raised, which
    join the remaining epochs; `report` gets what was found."""
    rows, found = _second_check(ctx, bundle, encoder, check, slots)
    report.update(found, placement="interleaved")
    log.info("repair (interleaved): %d of %d checked samples rose by > %.2f nats after epoch 1; %d join the "
             "remaining epochs", found["rose"], found["checked"], ctx.spec.training.repair.min_rise, found["repaired"])
    return rows


def _repair(ctx: StageContext, bundle: ModelBundle, encoder: Encoder, check: repair.RepairPlan,
            trained: list[Record], config: TrainConfig, slots: int, regime: Regime) -> dict[str, Any]:
    """The interference repair pass (adaptinf.training.repair): one epoch over the samples whose
    loss the training raised, filled with the step's own selection."""
    repaired, found = _second_check(ctx, bundle, encoder, check, slots)
    batch, report = repair.with_replay(repaired, found, trained, slots, ctx.spec.seed + ctx.step)
    result = train_model(bundle, encoder, batch, replace(config, epochs=1), progress=ctx.progress,
                         penalty=regime.loss_penalty())
    log.info("repair pass: %d of %d checked samples rose by > %.2f nats; trained on %d repaired + %d replayed",
             report["rose"], report["checked"], ctx.spec.training.repair.min_rise, report["repaired"],
             report["replayed"])
    return {**report, "loss": result.losses, "seconds": result.seconds}


def _log_losses(ctx: StageContext, child: str | None, result: TrainResult, summary: dict[str, Any]) -> None:
    """Every metric's step is the time step; the per-epoch curves have keys of their own (their
    step is the epoch), and step 0's full initial tuning is logged too."""
    for epoch, loss in enumerate(result.losses):
        ctx.tracker.log_metrics(child, {"train_loss_by_epoch": loss}, epoch)
    for epoch, loss in enumerate(summary.get("initial_loss") or []):
        ctx.tracker.log_metrics(child, {"initial_tuning_loss_by_epoch": loss}, epoch)
    final = {"train_loss": result.losses[-1]} if result.losses else {}
    if summary.get("initial_loss"):
        final["initial_tuning_loss"] = summary["initial_loss"][-1]
    ctx.tracker.log_metrics(child, {**final, "train_seconds": result.seconds, "train_samples": result.samples},
                            ctx.step)


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
