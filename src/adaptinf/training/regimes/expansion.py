"""`expansion`: a new adapter per dataset, from the same seeded initialisation, each routed to
at eval (`adaptinf.evaluation.routing`).

Its routing keys (`routing_keys.npy`) are stored beside each adapter; eval loads every adapter
and routes each sample to one of them; an adapter without keys (e.g. the step 0 that `compare`
shares) gets them computed at eval from that step's training data.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from adaptinf.data.records import Record
from adaptinf.evaluation.routing import ROUTING_KEY_FILE, prompt_states, routed_answers, routing_keys
from adaptinf.model.checkpoints import RunStep, base_source, fresh_adapter, trained_steps
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, decoder_layers, load_base, resolve_layers

from .base import EvalModel, Regime, register_regime, training_records

log = logging.getLogger(__name__)


def _layer(ctx: RunStep, bundle: ModelBundle) -> int:
    """The decoder layer whose states route (the middle of extract.layers, as for hidden features)."""
    layers = resolve_layers(ctx.spec.extract.layers, len(decoder_layers(bundle.model)))
    return layers[len(layers) // 2]


def _routing_keys(ctx: RunStep, bundle: ModelBundle, encoder: Encoder, step: int, folder: Path,
                  layer: int) -> np.ndarray:
    stored = folder / ROUTING_KEY_FILE
    if stored.exists():
        return np.load(stored)
    log.info("expansion: adapter of step %d has no routing keys; computing them from that step's training data", step)
    states = prompt_states(bundle, encoder, training_records(ctx, step), layer, ctx.spec.eval.batch_size)
    return routing_keys(states, seed=ctx.spec.seed)


@register_regime
class Expansion(Regime):
    name = "expansion"

    def training_model(self, ctx: RunStep) -> ModelBundle:
        return fresh_adapter(ctx, trainable=True)

    def after_train(self, ctx: RunStep, bundle: ModelBundle, records: list[Record],
                    adapter_dir: Path) -> dict[str, Any]:
        """The routing keys of this step's adapter, from its training prompts."""
        encoder = Encoder(bundle, ctx.spec.training.max_length)
        states = prompt_states(bundle, encoder, records, _layer(ctx, bundle), ctx.spec.eval.batch_size)
        np.save(adapter_dir / ROUTING_KEY_FILE, routing_keys(states, seed=ctx.spec.seed))
        return {"routing_key_samples": len(records)}

    def eval_model(self, ctx: RunStep) -> EvalModel:
        """Base + every adapter so far; the answer function routes each sample to one adapter and
        records the routing (eval task → adapter → samples routed there)."""
        from peft import PeftModel
        trained = trained_steps(ctx, ctx.step)
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
        routing: dict[str, dict[str, int]] = {}

        def answer(records: list[Record]) -> list[str]:
            preds, routes = routed_answers(bundle, encoder, records, names, keys, layer, ctx.spec.eval.max_new_tokens,
                                           ctx.spec.eval.batch_size)
            task = records[0].dataset.removeprefix("eval:") if records else "?"
            routing[task] = {names[a]: int(n) for a, n in enumerate(np.bincount(routes, minlength=len(names))) if n}
            return preds

        return EvalModel(bundle, answer, routing)
