"""The interference repair pass: after a step's training, find the pool samples whose answer loss
rose most and train once more on them, inside the step's budget (docs/options.md §12, with what
it measured: on SmolLM2 it did not reduce forgetting and cost learning, so it is off by default).

Not the paper's method. Why it exists: on the SmolLM2 stream the forgetting that selection leaves
is interference — learning the new skill raises the loss of an old skill's samples that were not
selected (their answers pick up the new skill's tokens), and the loss rise measured on the pool
tracked the eval drop seed by seed (`tools/loss-rise.py`). Selection cannot see it coming (a
gradient-cosine predictor did not separate the skill); after training it is a forward pass away.

The pass, with R = the step's repair slots (`spec.repair_slots`): selection picks T − R; after
training on them, the answer NLL of (a seeded sample of) the other pool samples is compared
with the NLL before training; up to R samples that rose by more than `minRise` nats, plus
enough of the step's own selection to make 2R, are trained on for one epoch. So a step sees at
most T distinct samples and (T − R) × epochs + 2R ≤ T × epochs sample passes.

`placement: interleaved` checks after the first epoch instead, and the risen samples (no fill)
join the remaining epochs under the step's one learning-rate schedule (`training.LaterRows`):
(T − R) × epochs + R × (epochs − 1) sample passes. Why it exists: the `after` pass's fresh
warm-up at the full learning rate, on a handful of rows after the schedule had decayed, was
measured to knock back the newest skill (docs/comparison.md); this placement has no burst.
It is the epoch-grained form of replaying the samples an update interferes with most (as in
Aljundi et al.'s maximally interfered retrieval, which picks them per batch by a virtual step).
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.records import Record
from ..model.answer_logits import answer_logits_kwargs
from ..model.encoding import Encoder
from ..model.loading import ModelBundle
from ..scorers import token_stats


@dataclass
class RepairPlan:
    checked: list[Record]           # the pool samples whose loss is compared
    before: np.ndarray              # their answer NLL before the step's training
    seconds: float


def checked_uids(members: list[str], selected: set[str], limit: int, seed: int) -> list[str]:
    """The pool samples not selected this step, a seeded sample of `limit` of them at most
    (in pool order)."""
    rest = [u for u in members if u not in selected]
    if len(rest) <= limit:
        return rest
    keep = set(random.Random(seed).sample(rest, limit))
    return [u for u in rest if u in keep]


@torch.no_grad()
def answer_nll(bundle: ModelBundle, encoder: Encoder, records: list[Record], batch_size: int) -> np.ndarray:
    """Mean answer-token NLL of each record (the loss the step trains), with no parameter touched
    (extract's pass freezes parameters for its gradients; this one runs between training passes)."""
    model = bundle.model
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    encoded = [encoder.encode(r) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded[i].input_ids))  # little padding
    out = np.zeros(len(records), np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = encoder.collate([encoded[i] for i in idx])
        labels = batch.pop("labels").to(bundle.device)
        inputs = {k: v.to(bundle.device) for k, v in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        keep = answer_logits_kwargs(model, labels)
        stats = token_stats(model(**inputs, use_cache=False, **keep).logits, labels, keep.get("logits_to_keep"))  # fp32
        out[idx] = stats.per_sample_mean(stats.nll).cpu().numpy()
    model.train(was_training)
    return out


def plan(bundle: ModelBundle, encoder: Encoder, checked: list[Record], batch_size: int) -> RepairPlan:
    """Before the step's training: the checked samples' loss now."""
    start = time.perf_counter()
    before = answer_nll(bundle, encoder, checked, batch_size) if checked else np.zeros(0)
    return RepairPlan(checked, before, time.perf_counter() - start)


def repair_set(plan_: RepairPlan, after: np.ndarray, slots: int, min_rise: float) -> list[int]:
    """Indices into `plan_.checked` of at most `slots` samples whose loss rose by more than
    `min_rise`, the largest rise first (ties: pool order)."""
    rise = after - plan_.before
    order = np.argsort(-rise, kind="stable")
    return [int(i) for i in order[:slots] if rise[i] > min_rise]


def risen_records(plan_: RepairPlan, after: np.ndarray, slots: int, min_rise: float) -> tuple[list[Record], dict[str, Any]]:
    """The interfered samples (at most `slots`, the largest rise first) and the report: what was
    checked, what rose, what is repaired by skill."""
    rise = after - plan_.before
    repaired = [plan_.checked[i] for i in repair_set(plan_, after, slots, min_rise)]
    report = {
        "slots": slots, "checked": len(plan_.checked), "rose": int((rise > min_rise).sum()),
        "repaired": len(repaired),
        "repaired_by_skill": dict(Counter(r.skill or "-" for r in repaired)),
        "mean_rise_by_skill": _mean_by_skill(plan_.checked, rise),
        "repaired_uids": [r.uid for r in repaired],
    }
    return repaired, report


def with_replay(repaired: list[Record], report: dict[str, Any], trained: list[Record], slots: int,
                seed: int) -> tuple[list[Record], dict[str, Any]]:
    """The `after` pass's 2R records (the interfered samples, then the step's own selection to
    fill) and the report."""
    fill = random.Random(seed).sample(trained, min(len(trained), 2 * slots - len(repaired)))
    return repaired + fill, {**report, "replayed": len(fill)}


def _mean_by_skill(records: list[Record], rise: np.ndarray) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for r, v in zip(records, rise):
        sums.setdefault(r.skill or "-", []).append(float(v))
    return {s: round(sum(v) / len(v), 4) for s, v in sorted(sums.items())}
