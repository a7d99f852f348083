"""Which weights a stage starts from: the run's base (the initially tuned one once step 0 has
made it) and the adapter left by the latest finished step before a given one."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Protocol

from adaptinf import layout
from adaptinf.model.loading import ModelBundle, attach_adapter, load_base, materialise
from adaptinf.spec import LifelongRunSpec
from adaptinf.store import Store

BASE_GROUP = "base"


class RunStep(Protocol):
    """What these functions read of a step: its run, spec, number and store (a stage's
    `StageContext` is one)."""
    run: str
    spec: LifelongRunSpec
    step: int
    store: Store


def base_prefix(run: str) -> str:
    return f"{run}/{BASE_GROUP}"


def _local_copy(store: Store, prefix: str) -> Path:
    """A local directory holding a committed group (the store's own path when it is local)."""
    local = store.local_path(prefix)
    if local is not None:
        return local
    dest = Path(tempfile.mkdtemp(prefix="adaptinf-")) / prefix.replace("/", "_")
    return store.download_dir(prefix, dest)


def base_source(ctx: RunStep) -> str:
    prefix = base_prefix(ctx.run)
    if ctx.store.is_committed(prefix):
        return str(_local_copy(ctx.store, prefix))
    return ctx.spec.model.base


def base_identity(ctx: RunStep) -> tuple[str, str | None]:
    """The base this run's adapters apply to, named so that it can be found outside this pod, and
    its revision: the run's tuned base in the store (its URI; no revision), else `model.base` as
    the spec gives it with `model.revision`."""
    prefix = base_prefix(ctx.run)
    if ctx.store.is_committed(prefix):
        return ctx.store.uri(prefix), None
    return ctx.spec.model.base, ctx.spec.model.revision


def record_base(folder: Path, base: str, revision: str | None = None) -> None:
    """Point every adapter_config.json under `folder` at `base` and its `revision` (peft loads the
    base at that revision): peft writes the path it loaded the base from, a temporary copy
    inside the stage pod."""
    for path in folder.rglob("adapter_config.json"):
        config = json.loads(path.read_text())
        config["base_model_name_or_path"] = base
        config["revision"] = revision
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_folder(store: Store, prefix: str, folder: Path) -> None:
    """Every file below `folder` written under `prefix` (uncommitted: the stage's marker seals it)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.write_bytes(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def adapter_prefix(ctx: RunStep, step: int) -> str:
    return f"{layout.stage_prefix(ctx.run, step, 'train')}/adapter"


def adapter_at(ctx: RunStep, step: int) -> Path | None:
    """The local folder of the adapter step `step` trained, if its train stage finished with one."""
    prefix = layout.stage_prefix(ctx.run, step, "train")
    if not ctx.store.is_committed(prefix):
        return None
    adapter = _local_copy(ctx.store, prefix) / "adapter"
    return adapter if (adapter / "adapter_config.json").exists() else None


def trained_steps(ctx: RunStep, upto: int) -> list[tuple[int, Path]]:
    """(step, local adapter folder) of every step <= upto whose train stage left an adapter."""
    found = ((step, adapter_at(ctx, step)) for step in range(upto + 1))
    return [(step, adapter) for step, adapter in found if adapter is not None]


def latest_trained(ctx: RunStep, before: int) -> tuple[int, Path] | None:
    """(step, adapter) of the latest step < `before` that trained one; only that one is fetched."""
    for step in range(before - 1, -1, -1):
        adapter = adapter_at(ctx, step)
        if adapter is not None:
            return step, adapter
    return None


def latest_adapter(ctx: RunStep, before: int) -> Path | None:
    """The adapter of the latest step < `before` whose train stage finished."""
    found = latest_trained(ctx, before)
    return found[1] if found else None


def load_proxy(ctx: RunStep) -> ModelBundle:
    """`extract.proxyModel` with a LoRA adapter for its gradients (extract only; never trained).

    The proxy is loaded by the same code as the base. A folder holding a PEFT adapter (its
    `adapter_config.json` names the base) is loaded as that base plus that adapter. Any other
    model gets a fresh adapter seeded by `spec.seed`, the same at every step: peft starts B at
    zero, so the gradient w.r.t. A is zero and the one w.r.t. B is Σ_t g_t (A x_t)ᵀ = (Σ_t g_t
    x_tᵀ) Aᵀ — the full weight gradient of each adapted linear, sketched by the random A. The
    proxy stays fixed across steps, as a smaller instruction-tuned model would be used.
    """
    if not ctx.spec.extract.proxy_model:   # extract only calls this when one is set
        raise ValueError("extract.proxyModel is not set: there is no proxy model to load")
    source = materialise(ctx.spec.extract.proxy_model)
    adapter = Path(source) / "adapter_config.json"
    if adapter.exists():
        base = json.loads(adapter.read_text())["base_model_name_or_path"]
        bundle = load_base(base, ctx.spec.model.dtype)
        return attach_adapter(bundle, ctx.spec.model.lora, source, trainable=False)
    bundle = load_base(source, ctx.spec.model.dtype)
    return attach_adapter(bundle, ctx.spec.model.lora, None, trainable=False, seed=ctx.spec.seed)


def load_for_step(ctx: RunStep, adapter_before: int, trainable: bool) -> ModelBundle:
    """Base + the adapter of the latest finished step before `adapter_before` (or a fresh one)."""
    bundle = load_base(base_source(ctx), ctx.spec.model.dtype)
    adapter = latest_adapter(ctx, adapter_before)
    return attach_adapter(bundle, ctx.spec.model.lora, adapter, trainable=trainable, seed=ctx.spec.seed)


def fresh_adapter(ctx: RunStep, trainable: bool) -> ModelBundle:
    """Base + a new adapter from the run's seeded initialisation (the same at every step)."""
    bundle = load_base(base_source(ctx), ctx.spec.model.dtype)
    return attach_adapter(bundle, ctx.spec.model.lora, None, trainable=trainable, seed=ctx.spec.seed)
