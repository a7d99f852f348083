"""The stream a comparison runs on: the user's LifelongRun + InstructionDatasets, or the demo's.

`adaptinf compare PATHS...` takes what `run-local` takes (YAML files and/or folders) and runs
every strategy on that run's model and data; without paths it writes the synthetic demo stream.
The size flags override the run's spec for every strategy alike:

- `trainBudget` (T) and `poolBudget` (D);
- the number of steps (the first N datasets in step order);
- `eval.maxSamples` (the eval suite's records per task, in file order, so every strategy and
  seed is scored on the same records).

`load_stream` validates everything once, in the parent process, so a bad input is one clear
`SpecError` naming the file or field before any worker starts; the workers re-read the same
files with `configured`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adaptinf.runner.resources import collect
from adaptinf.spec import LifelongRunSpec, Resource, SpecError


@dataclass(frozen=True)
class StreamSource:
    """Where the run and its datasets come from, and the size overrides (None: the spec's)."""
    inputs: tuple[str, ...]
    train_budget: int | None = None
    pool_budget: int | None = None
    steps: int | None = None
    eval_samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "inputs": list(self.inputs)}


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise SpecError(f"{name} must be at least 1, got {value}")


def configured(src: StreamSource) -> tuple[Resource, list[Resource]]:
    """The run with the overrides applied, and its datasets (the first `steps` of them)."""
    run, datasets = collect(list(src.inputs))
    where = f"{run.origin or run.name}"
    spec = run.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    if src.train_budget is not None:
        spec["trainBudget"] = src.train_budget
    if src.pool_budget is not None:
        spec["poolBudget"] = src.pool_budget
    if src.eval_samples is not None:
        spec.setdefault("eval", {})["maxSamples"] = src.eval_samples
    try:
        new_spec = LifelongRunSpec.model_validate(spec)
    except ValidationError as err:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in err.errors())
        raise SpecError(f"{where}: with the compare overrides: {detail}") from None
    run = run.model_copy(update={"spec": new_spec})
    if src.steps is not None:
        if src.steps > len(datasets):
            raise SpecError(f"--steps {src.steps}: run {run.name!r} has only {len(datasets)} dataset(s)")
        datasets = datasets[:src.steps]
    return run, datasets


def load_stream(src: StreamSource) -> tuple[Resource, list[Resource]]:
    """`configured`, plus the checks a comparison needs; every problem is a SpecError."""
    for name in ("train_budget", "pool_budget", "steps", "eval_samples"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(src, name))
    run, datasets = configured(src)
    spec = run.resolved_spec()
    if not spec.eval.suite:
        raise SpecError(f"{run.origin or run.name}: spec.eval.suite is empty: a comparison needs per-skill scores")
    for task in spec.eval.suite:
        if "://" not in task.path and not Path(task.path).is_file():
            raise SpecError(f"{run.origin or run.name}: spec.eval.suite[{task.skill}].path: no such file {task.path}")
    for ds in datasets:
        source = ds.resolved_spec().source
        if "://" not in source and not Path(source).is_file():
            raise SpecError(f"{ds.origin or ds.name}: spec.source: no such file {source}")
    if len(datasets) < 2:
        raise SpecError(f"run {run.name!r}: a comparison needs at least 2 datasets (step 0 and one more), "
                        f"got {len(datasets)}")
    base = spec.model.base
    if "://" not in base and Path(base).is_absolute() and not Path(base).exists():
        raise SpecError(f"{run.origin or run.name}: spec.model.base: no such folder {base}")
    if "://" not in base and Path(base).exists() and not (Path(base) / "config.json").is_file():
        raise SpecError(f"{run.origin or run.name}: spec.model.base: {base} has no config.json")
    return run, datasets


def model_is_multimodal(run: Resource) -> bool | None:
    """Whether the run's (local) base model has a vision tower; None if it cannot be told here."""
    config = Path(run.resolved_spec().model.base) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("vision_config") is not None
