"""Routing for the model-expansion regime: one LoRA adapter per dataset, one adapter per input.

He et al. ("Continual Instruction Tuning for Large Multimodal Models", 2023) compare model
expansion — new parameters per task — with regularisation and replay; at test time an input
must be sent to one expert without knowing its task. The rule here: each adapter's keys are
`KEYS_PER_ADAPTER` k-means centroids of the base model's mean-pooled hidden states of its
step's training *prompts* (the extract layer, adapters off); an input goes to the adapter that
owns the key nearest (Euclidean) to its own prompt state. Prompts only, because at answer time
the answer is not there; the base model, because the router must run before any adapter is
chosen. Several keys rather than one mean because a dataset is a mix of skills: on the quick
demo stream one mean per adapter sent 71% of eval samples to an adapter trained on their skill,
8 centroids per adapter 100% (docs/options.md).
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from ..data.records import Record
from ..model.encoding import Encoder
from ..model.loading import ModelBundle
from ..model.partial_forward import layer_output
from .generate import generate_answers

ROUTING_KEY_FILE = "routing_keys.npy"   # (keys, hidden) float32, stored beside each adapter
KEYS_PER_ADAPTER = 8


def routing_keys(states: np.ndarray, count: int = KEYS_PER_ADAPTER, seed: int = 0) -> np.ndarray:
    """(min(count, n), h) k-means centroids of one adapter's training prompt states."""
    from ..clustering import kmeans
    states = np.asarray(states, np.float32)
    return kmeans(states, min(count, len(states)), seed=seed)[1]


def nearest_key(states: np.ndarray, keys: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
    """(n,) for each row of `states` (n, h): the owner of its nearest row of `keys` (m, h)
    (`owners` (m,); default: the key's own index)."""
    states, keys = np.asarray(states, np.float64), np.asarray(keys, np.float64)
    d2 = (states ** 2).sum(1)[:, None] - 2 * states @ keys.T + (keys ** 2).sum(1)[None, :]
    nearest = d2.argmin(1)
    return nearest if owners is None else np.asarray(owners)[nearest]


def _adapters_off(model: Any):
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


@torch.no_grad()
def prompt_states(bundle: ModelBundle, encoder: Encoder, records: list[Record], layer: int,
                  batch_size: int = 32) -> np.ndarray:
    """(n, h) float32 mean-pooled hidden states (output of decoder layer `layer`) of each record's
    prompt for its last answer, computed by the base model with every adapter disabled."""
    model = bundle.model
    dtype = next(model.parameters()).dtype
    out = []
    with _adapters_off(model):
        for start in range(0, len(records), batch_size):
            batch = encoder.collate([encoder.encode(r, include_answer=False) for r in records[start:start + batch_size]])
            inputs = {k: v.to(bundle.device) for k, v in batch.items() if k != "labels"}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            hidden = layer_output(model, layer, inputs)   # the layers above never run
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden.float() * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def routed_answers(bundle: ModelBundle, encoder: Encoder, records: list[Record], adapters: list[str],
                   keys: list[np.ndarray], layer: int, max_new_tokens: int, batch_size: int = 32,
                   progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Each record answered by the adapter it is routed to (`keys[a]`: adapter a's keys); also
    returns the routes (indices into `adapters`). `bundle.model` is a PeftModel holding every
    named adapter."""
    owners = np.concatenate([np.full(len(k), a) for a, k in enumerate(keys)])
    routes = nearest_key(prompt_states(bundle, encoder, records, layer, batch_size), np.concatenate(keys), owners)
    answers: list[str] = [""] * len(records)
    for a, name in enumerate(adapters):
        idx = np.flatnonzero(routes == a)
        if idx.size == 0:
            continue
        bundle.model.set_adapter(name)
        preds = generate_answers(bundle, encoder, [records[i] for i in idx], max_new_tokens, batch_size, progress)
        for i, p in zip(idx, preds):
            answers[i] = p
    return answers, routes
