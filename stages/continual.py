"""The classic continual-learning regimes' part of the train and eval stages.

The strategy's `training_regime` decides (He et al., "Continual Instruction Tuning for Large
Multimodal Models", 2023):

- `continue` (every other strategy): train the previous step's adapter further.
- `ewc`: the same, under an EWC penalty (`adaptinf.training.ewc`). The Fisher accumulated up to
  the previous step is stored beside that step's adapter (`ewc_fisher.safetensors`); a previous
  adapter without one (trained by another regime, e.g. the step 0 that `compare` shares) gets
  it estimated here from that step's training data, with that adapter's weights.
- `expansion`: a new adapter per dataset, from the same seeded initialisation; its routing keys
  (`routing_keys.npy`) are stored beside it, and eval routes each sample to one adapter
  (`adaptinf.evaluation.routing`); an adapter without keys gets them computed at eval.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from adaptinf import layout
from adaptinf.data.pool import load_pool, load_records
from adaptinf.data.records import Record
from adaptinf.evaluation.routing import ROUTING_KEY_FILE, prompt_states, routed_answers, routing_keys
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, attach_adapter, decoder_layers, load_base, resolve_layers
from adaptinf.selection import get_strategy
from adaptinf.training import ewc

from .context import StageContext
from .models import adapter_at, base_source, latest_trained, load_for_step

log = logging.getLogger(__name__)


def regime(ctx: StageContext) -> str:
    return get_strategy(ctx.spec.strategy).training_regime


def _trained_steps(ctx: StageContext, upto: int) -> list[tuple[int, Path]]:
    """(step, local adapter folder) of every step <= upto whose train stage left an adapter."""
    found = ((step, adapter_at(ctx, step)) for step in range(upto + 1))
    return [(step, adapter) for step, adapter in found if adapter is not None]


def _training_records(ctx: StageContext, step: int) -> list[Record]:
    """The records step `step` trained on (its selection, read from its pool's datasets)."""
    selected = ctx.store.read_json(f"{layout.stage_prefix(ctx.run, step, 'cluster-select')}/selection.json")["selected"]
    return load_records(ctx.store, load_pool(ctx.store, ctx.run, step), selected)


def _layer(ctx: StageContext, bundle: ModelBundle) -> int:
    """The decoder layer whose states route (the middle of extract.layers, as for hidden features)."""
    layers = resolve_layers(ctx.spec.extract.layers, len(decoder_layers(bundle.model)))
    return layers[len(layers) // 2]


# ---- train ------------------------------------------------------------------------------

def model_for_training(ctx: StageContext) -> ModelBundle:
    """The model the train stage trains: a fresh adapter for expansion, else the previous one."""
    if regime(ctx) == "expansion":
        return attach_adapter(load_base(base_source(ctx), ctx.spec.model.dtype), ctx.spec.model.lora, None,
                              trainable=True, seed=ctx.spec.seed)
    return load_for_step(ctx, adapter_before=ctx.step, trainable=True)


def _fisher_upto(ctx: StageContext, bundle: ModelBundle, step: int, adapter: Path) -> dict:
    """The Fisher accumulated up to `step`: stored beside its adapter, or estimated now (the model
    must then hold that adapter's weights, as the freshly loaded training model does)."""
    stored = adapter / ewc.FISHER_FILE
    if stored.exists():
        return ewc.load_fisher(stored)
    log.info("ewc: adapter of step %d has no Fisher; estimating it from that step's training data", step)
    return ewc.diagonal_fisher(bundle, Encoder(bundle, ctx.spec.training.max_length), _training_records(ctx, step),
                               ctx.spec.training.batch_size, _fisher_samples(ctx), seed=ctx.spec.seed + step)


def _fisher_samples(ctx: StageContext) -> int:
    return int(ctx.spec.effective_strategy_options()["fisher_samples"])


def penalty(ctx: StageContext, bundle: ModelBundle) -> tuple[ewc.EwcPenalty | None, dict[str, Any]]:
    """EWC's penalty for this step (None for other regimes or without a previous adapter), and
    what to note in the train summary."""
    if regime(ctx) != "ewc":
        return None, {}
    previous = latest_trained(ctx, ctx.step)   # only the latest adapter is needed (and fetched)
    if previous is None:
        return None, {"ewc": "no previous adapter: no penalty"}
    step, adapter = previous
    fisher = _fisher_upto(ctx, bundle, step, adapter)
    lam = float(ctx.spec.effective_strategy_options()["lambda"])
    return ewc.EwcPenalty(bundle.model, fisher, lam), {"ewc": {"lambda": lam, "fisher_upto_step": step}}


def after_training(ctx: StageContext, bundle: ModelBundle, records: list[Record], adapter_dir: Path,
                   penalty: ewc.EwcPenalty | None = None) -> dict[str, Any]:
    """Files stored beside the new adapter: the Fisher accumulated up to this step (ewc: this
    step's, plus the penalty's) or the routing keys (expansion)."""
    kind = regime(ctx)
    encoder = Encoder(bundle, ctx.spec.training.max_length)
    if kind == "ewc":
        fisher = ewc.diagonal_fisher(bundle, encoder, records, ctx.spec.training.batch_size, _fisher_samples(ctx),
                                     seed=ctx.spec.seed + ctx.step)
        ewc.save_fisher(ewc.accumulate(fisher, penalty.fisher if penalty else None), adapter_dir / ewc.FISHER_FILE)
        return {"ewc_fisher_samples": min(len(records), _fisher_samples(ctx))}
    if kind == "expansion":
        states = prompt_states(bundle, encoder, records, _layer(ctx, bundle), ctx.spec.eval.batch_size)
        np.save(adapter_dir / ROUTING_KEY_FILE, routing_keys(states, seed=ctx.spec.seed))
        return {"routing_key_samples": len(records)}
    return {}


# ---- eval -------------------------------------------------------------------------------

def model_for_eval(ctx: StageContext) -> tuple[ModelBundle, Callable[[list[Record]], list[str]] | None, dict]:
    """The model eval scores, the answer function (routed for expansion, else None = plain
    generation) and a routing record that the answer function fills (task → adapter → samples)."""
    if regime(ctx) != "expansion":
        return load_for_step(ctx, adapter_before=ctx.step + 1, trainable=False), None, {}
    from peft import PeftModel
    trained = _trained_steps(ctx, ctx.step)
    bundle = load_base(base_source(ctx), ctx.spec.model.dtype)
    names = [f"step-{s}" for s, _ in trained]
    model = PeftModel.from_pretrained(bundle.model, str(trained[0][1]), adapter_name=names[0], is_trainable=False)
    for name, (_, folder) in zip(names[1:], trained[1:]):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    model.eval()
    bundle.model = model
    encoder = Encoder(bundle, ctx.spec.training.max_length)
    layer = _layer(ctx, bundle)
    keys = [_routing_keys(ctx, bundle, encoder, step, folder, layer) for step, folder in trained]
    routing: dict[str, dict[str, int]] = {}   # eval task → adapter → samples routed there

    def answer(records: list[Record]) -> list[str]:
        preds, routes = routed_answers(bundle, encoder, records, names, keys, layer, ctx.spec.eval.max_new_tokens,
                                       ctx.spec.eval.batch_size)
        task = records[0].dataset.removeprefix("eval:") if records else "?"
        routing[task] = {names[a]: int(n) for a, n in enumerate(np.bincount(routes, minlength=len(names))) if n}
        return preds

    return bundle, answer, routing


def _routing_keys(ctx: StageContext, bundle: ModelBundle, encoder: Encoder, step: int, folder: Path,
                  layer: int) -> np.ndarray:
    stored = folder / ROUTING_KEY_FILE
    if stored.exists():
        return np.load(stored)
    log.info("expansion: adapter of step %d has no routing keys; computing them from that step's training data", step)
    states = prompt_states(bundle, encoder, _training_records(ctx, step), layer, ctx.spec.eval.batch_size)
    return routing_keys(states, seed=ctx.spec.seed)
