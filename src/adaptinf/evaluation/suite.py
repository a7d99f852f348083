"""Per-skill evaluation on held-out sets: P_s = mean of the skill's tasks' metric."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable

from ..data.records import Record, read_records
from ..metrics import score
from ..model.encoding import Encoder
from ..model.loading import ModelBundle
from ..spec import EvalSpec
from .generate import generate_answers

log = logging.getLogger(__name__)


@dataclass
class SuiteResult:
    skills: dict[str, float]      # skill → score in [0, 1]
    tasks: dict[str, dict]        # task name → {skill, metric, score, n, examples}
    skipped: list[str]            # notes on tasks not scored (e.g. image tasks for a text-only model)


def evaluate_suite(bundle: ModelBundle, encoder: Encoder, spec: EvalSpec, progress: bool = False,
                   answer: Callable[[list[Record]], list[str]] | None = None) -> SuiteResult:
    """Score every task; `answer(records)` replaces plain generation (e.g. routed to an adapter
    per sample in the model-expansion regime)."""
    tasks: dict[str, dict] = {}
    by_skill: dict[str, list[float]] = {}
    skipped: list[str] = []
    for task in spec.suite:
        name = task.name or task.skill
        records, report = read_records(task.path, dataset=f"eval:{name}", image_root=task.image_root)
        if report.rejected:
            log.warning("eval set %s: %d bad records skipped", task.path, len(report.rejected))
        if not records:
            raise ValueError(f"eval task {name!r}: no usable record in {task.path}")
        if not bundle.multimodal:
            records = [r for r in records if r.image is None]
            if not records:
                skipped.append(f"{name}: every sample has an image and the model has no vision tower")
                continue
        if spec.max_samples:
            records = records[:spec.max_samples]
        preds = answer(records) if answer is not None else \
            generate_answers(bundle, encoder, records, spec.max_new_tokens, spec.batch_size, progress)
        refs = [r.conversations[-1][1] for r in records]
        values = [score(task.metric, p, r) for p, r in zip(preds, refs)]
        value = sum(values) / len(values)
        tasks[name] = {"skill": task.skill, "metric": task.metric, "score": value, "n": len(values),
                       "examples": [{"pred": p, "ref": r} for p, r in list(zip(preds, refs))[:3]]}
        by_skill.setdefault(task.skill, []).append(value)
    return SuiteResult({s: sum(v) / len(v) for s, v in by_skill.items()}, tasks, skipped)
