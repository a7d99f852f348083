"""Supervised fine-tuning on a list of records with accelerate: LoRA (an adapter continued
from the previous step) or full-parameter (the initial instruction tuning of a tiny model)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..data.records import Record
from ..model.answer_logits import answer_loss, answer_positions, keeps_logits
from ..model.encoding import Encoder
from ..model.loading import ModelBundle
from .. import progress as progress_label

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    gradient_accumulation: int = 1
    mixed_precision: str = "auto"   # auto = bf16 on a GPU that supports it, none on CPU
    seed: int = 0


@dataclass
class LaterRows:
    """Rows that join every epoch after the first (training.repair's `interleaved` placement):
    `rows()` is called once, after the first epoch, and may return up to `slots` records; the one
    learning-rate schedule is sized for `slots` up front, so fewer rows end it slightly early."""
    slots: int
    rows: Callable[[], list[Record]]


@dataclass
class TrainResult:
    samples: int
    optimizer_steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)   # mean loss per epoch

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def _batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], keep_logits: bool) -> torch.Tensor:
    """The batch's mean answer-token loss; with the LM head applied at the answer positions only
    when the model allows it (`answer_logits`: the same loss, without the full logits)."""
    if not keep_logits:
        return model(**batch).loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    positions = answer_positions(batch["labels"])
    logits = model(**inputs, logits_to_keep=positions, use_cache=False).logits
    return answer_loss(logits, batch["labels"], positions)


def _mixed_precision(name: str) -> str:
    if name == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return name


def _optimizer_steps(rows: int, cfg: TrainConfig) -> int:
    """Optimizer steps of one epoch over `rows` records."""
    return math.ceil(math.ceil(rows / cfg.batch_size) / cfg.gradient_accumulation)


def train_model(bundle: ModelBundle, encoder: Encoder, records: list[Record], cfg: TrainConfig,
                progress: bool = True, penalty: Callable[[], torch.Tensor] | None = None,
                later: LaterRows | None = None) -> TrainResult:
    """Train the parameters of `bundle.model` that require grad; returns loss per epoch.

    `penalty()`, if given, is added to every batch's loss (e.g. EWC, `training/ewc.py`); the
    losses reported are the task loss alone. `later`, if given, adds rows to the epochs after the
    first (`LaterRows`); `TrainResult.samples` counts them."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    if not records:
        return TrainResult(0, 0, 0.0)
    start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision),
                              gradient_accumulation_steps=cfg.gradient_accumulation,
                              cpu=not torch.cuda.is_available(),
                              # LLaVA reads the vision tower's penultimate layer: the last one
                              # gets no gradient, which plain DDP treats as an error.
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    encoded = [encoder.encode(r) for r in records]
    gen = torch.Generator().manual_seed(cfg.seed)

    def loader_of(rows: list) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(rows, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                           collate_fn=encoder.collate)

    loader = loader_of(encoded)
    model = bundle.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("nothing to train: no parameter requires grad")
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    slots = later.slots if later is not None else 0
    total = _optimizer_steps(len(records), cfg) + _optimizer_steps(len(records) + slots, cfg) * (cfg.epochs - 1)
    warmup = int(cfg.warmup_ratio * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    keep_logits = keeps_logits(model)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    model.train()
    losses, steps, extra = [], 0, 0
    bar = tqdm(total=len(loader) * cfg.epochs, desc=progress_label.desc("train"), unit="batch",
               disable=not progress or not accelerator.is_local_main_process)
    for epoch in range(cfg.epochs):
        if epoch == 1 and later is not None:
            added = later.rows()[:later.slots]
            extra = len(added)
            if added:
                loader = accelerator.prepare(loader_of(encoded + [encoder.encode(r) for r in added]))
                bar.total = len(loader) * (cfg.epochs - 1) + bar.n
        epoch_loss, n = 0.0, 0
        for batch in loader:
            with accelerator.accumulate(model):
                if "pixel_values" in batch:
                    batch["pixel_values"] = batch["pixel_values"].to(next(model.parameters()).dtype)
                loss = _batch_loss(model, batch, keep_logits)
                accelerator.backward(loss + penalty() if penalty is not None else loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                    steps += 1
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            value = accelerator.reduce(loss.detach(), "mean").item()  # all processes' mean
            epoch_loss += value
            n += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
        losses.append(epoch_loss / max(1, n))
    bar.close()
    model.eval()
    bundle.model = accelerator.unwrap_model(model)
    result = TrainResult(len(records) + extra, steps, time.perf_counter() - start, losses)
    log.info("trained on %d samples, %d epochs, loss %.4f → %.4f in %.1fs", len(records), cfg.epochs,
             losses[0], losses[-1], result.seconds)
    return result
