"""The training-regime interface: how the train and eval stages use a strategy's selection.

A strategy names its regime in `Strategy.training_regime` ("continue" unless it says otherwise);
the stages look it up with `regime_for_run(spec)` (which also turns `continue` into `ewc` when
`training.ewc.lambda` is set) and call only the hooks of `Regime`, in this order (train on every training process, eval in the one eval process):

    train: training_model → before_train → train_model(penalty=loss_penalty()) → after_train
    eval:  eval_model

A regime is one module of this package: a `Regime` subclass with a literal `name`, decorated
with `@register_regime`; the package imports every module, so adding a regime is adding a file.
Like a torchtune recipe's or a PEFT method's, the hooks are only what the existing regimes need;
one instance serves one stage run, so `before_train` may keep state for `loss_penalty` and
`after_train`. The regimes are those He et al. compare ("Continual Instruction Tuning for Large
Multimodal Models", 2023); docs/options.md §4–§5 describe them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from adaptinf import layout
from adaptinf.data.pool import load_pool, load_records
from adaptinf.data.records import Record
from adaptinf.model.checkpoints import RunStep, load_for_step
from adaptinf.model.loading import ModelBundle

Answer = Callable[[list[Record]], list[str]]


@dataclass
class EvalModel:
    """What eval scores: the model, an answer function (None: plain generation) and a record
    the answer function fills as it runs (written to `eval/metrics.json` when not empty)."""
    bundle: ModelBundle
    answer: Answer | None = None
    routing: dict[str, dict[str, int]] = field(default_factory=dict)


class Regime:
    """The hooks, each doing what plain continual LoRA does (the `continue` regime)."""
    name: ClassVar[str] = ""

    def training_model(self, ctx: RunStep) -> ModelBundle:
        """The model the train stage trains: the previous step's adapter (or a fresh one)."""
        return load_for_step(ctx, adapter_before=ctx.step, trainable=True)

    def before_train(self, ctx: RunStep, bundle: ModelBundle) -> dict[str, Any]:
        """Called with the model about to be trained; returns notes for the train summary."""
        return {}

    def loss_penalty(self) -> Callable[[], torch.Tensor] | None:
        """Added to every batch's loss (set up by before_train); None: the task loss alone."""
        return None

    def after_train(self, ctx: RunStep, bundle: ModelBundle, records: list[Record],
                    adapter_dir: Path) -> dict[str, Any]:
        """Writes what this regime stores beside the new adapter into `adapter_dir` (main process
        only, before the upload); returns notes for the train summary."""
        return {}

    def eval_model(self, ctx: RunStep) -> EvalModel:
        """The model after this step: base + the adapter this step trained."""
        return EvalModel(load_for_step(ctx, adapter_before=ctx.step + 1, trainable=False))

    def __repr__(self) -> str:
        return f"<training regime {self.name}>"


_REGISTRY: dict[str, type[Regime]] = {}


def register_regime(cls: type[Regime]) -> type[Regime]:
    """Class decorator adding a regime to the registry under `cls.name`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"training regime {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_regimes() -> list[str]:
    """Registered regime names, sorted."""
    return sorted(_REGISTRY)


def get_regime(name: str) -> Regime:
    """A fresh instance of the named regime."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown training regime {name!r}; known: {', '.join(available_regimes())}") from None


def training_records(ctx: RunStep, step: int) -> list[Record]:
    """The records step `step` trained on (its selection, read from its pool's datasets)."""
    selected = ctx.store.read_json(f"{layout.stage_prefix(ctx.run, step, 'cluster-select')}/selection.json")["selected"]
    return load_records(ctx.store, load_pool(ctx.store, ctx.run, step), selected)
