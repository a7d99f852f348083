"""Check a run's inputs before spending compute on it.

Before, a model path typo surfaced as a hub lookup's `HFValidationError`, `layers: [999]` and a
bad `targetModules` only inside extract or train, and a missing eval file only after extract and
training of the first step. Each is a user mistake with one fix, so it is reported as one line
naming the field, before the first stage runs. Datasets are not checked here: a dataset without
a usable record is a skipped step by design (its report says why), not a reason to stop the run.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from adaptinf.spec import LifelongRunSpec, Resource, SpecError

log = logging.getLogger(__name__)


def looks_local(name: str) -> bool:
    """A name that can only be a path: a hub id is `name` or `org/name`."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def model_problem(name: str, origin: Resource | None, field: str) -> str | None:
    """None if `name` is an existing local model, an s3:// URI, or a hub id (checked when loaded)."""
    from pathlib import Path
    if name.startswith("s3://") or Path(name).expanduser().exists():
        return None
    if looks_local(name):
        return f"{field}: local path {name} does not exist"
    return None


def _config(name: str, revision: str | None = None) -> Any | None:
    from transformers import AutoConfig

    from adaptinf.model.hub import hub_kwargs
    return AutoConfig.from_pretrained(name, **hub_kwargs(name, revision))


def revision_problem(spec: LifelongRunSpec) -> str | None:
    """A revision on a base that resolved to a local folder (the spec check sees only names that
    cannot be hub ids; `model` next to the YAML can be either until it is resolved)."""
    from adaptinf.model.hub import is_local_name
    if spec.model.revision and is_local_name(spec.model.base):
        return (f"model.revision: model.base {spec.model.base} is a local folder, not a hub id; a revision "
                f"pins a hub model only (drop model.revision, or name the hub id)")
    return None


def _n_layers(config: Any) -> int | None:
    text = getattr(config, "text_config", None) or config
    return getattr(text, "num_hidden_layers", None)


def _module_names(config: Any) -> list[str] | None:
    """Module names of the model built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForCausalLM
    try:
        with torch.device("meta"):
            if getattr(config, "vision_config", None) is not None:
                from transformers import AutoModelForImageTextToText
                model = AutoModelForImageTextToText.from_config(config)
            else:
                model = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # an architecture that cannot be built this way: train will tell
        log.debug("preflight: cannot build %s on the meta device: %s", type(config).__name__, err)
        return None
    return [n for n, _ in model.named_modules()]


def model_checks(spec: LifelongRunSpec, config: Any) -> list[str]:
    """The model's family, `extract.layers` and `model.lora.targetModules` against its architecture."""
    from adaptinf.model.loading import lora_target_modules, resolve_layers
    from adaptinf.model.vision import family_class
    if getattr(config, "vision_config", None) is not None:
        try:
            family_class(config, spec.model.base)
        except SpecError as err:
            return [f"model.base: {err}"]
    problems = []
    n_layers = _n_layers(config)
    if n_layers is not None:
        try:
            resolve_layers(spec.extract.layers, n_layers)
        except ValueError as err:
            problems.append(str(err))
    names = _module_names(config)
    if names is not None:
        multimodal = getattr(config, "vision_config", None) is not None
        pattern = lora_target_modules(spec.model.lora, multimodal)
        if not any(re.fullmatch(pattern, n) for n in names):
            problems.append(f"model.lora.targetModules: {pattern!r} matches no module of the model "
                            f"(names look like {names[len(names) // 2]!r})")
    return problems


def eval_problems(spec: LifelongRunSpec) -> list[str]:
    from pathlib import Path

    from adaptinf.store import StoreError, StoreUnavailable, open_store
    problems = []
    for i, task in enumerate(spec.eval.suite):
        if task.path.startswith("s3://"):
            bucket, _, key = task.path.rpartition("/")
            try:
                missing = not open_store(bucket).exists(key)
            except StoreUnavailable:
                raise  # S3 is down: the stage is retried, the spec is not wrong
            except StoreError as err:
                problems.append(f"eval.suite[{i}].path ({task.skill}): {err}")
                continue
        else:
            missing = not Path(task.path).is_file()
        if missing:
            problems.append(f"eval.suite[{i}].path ({task.skill}): {task.path} does not exist")
    return problems


def check_inputs(run: Resource, spec: LifelongRunSpec) -> None:
    """Raise SpecError listing every problem found; return if there is none."""
    base = model_problem(spec.model.base, run, "model.base")
    problems = [p for p in (base, model_problem(spec.extract.proxy_model, run, "extract.proxyModel")
                            if spec.extract.proxy_model else None) if p]
    problems += eval_problems(spec)
    if (revision := revision_problem(spec)) is not None:
        problems.append(revision)
    elif base is None and not spec.model.base.startswith("s3://"):
        try:
            config = _config(spec.model.base, spec.model.revision)
        except (OSError, ValueError) as err:
            where = run.resolve(spec.model.base) if run.origin else spec.model.base
            problems.append(f"model.base: {spec.model.base!r} is not a local path ({where} does not exist) "
                            f"and could not be loaded from the Hugging Face hub: {str(err).splitlines()[0]}")
        else:
            problems += model_checks(spec, config)
    if problems:
        raise SpecError(f"LifelongRun {run.name!r} cannot start:\n  " + "\n  ".join(problems))
