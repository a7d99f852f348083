"""Hub loading settings: the run's revision of its base, the model cache, the token.

Torch-free, so that a stage sets them before it imports the model code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import path_like
from ..spec_base import SpecError

# The environment variable the operator sets when the chart mounts a model cache volume.
CACHE_ENV = "ADAPTINF_MODEL_CACHE"


@dataclass
class HubSettings:
    """How this process loads hub models: the run's `model.revision` for its `model.base` (stages
    reach load_base through helpers that do not carry the spec) and the cache folder for all.
    The token is huggingface_hub's own `HF_TOKEN` variable: it never passes through adaptinf."""
    revisions: dict[str, str] = field(default_factory=dict)
    cache_dir: str | None = None

    def cache(self) -> str | None:
        return self.cache_dir or os.environ.get(CACHE_ENV) or None


HUB = HubSettings()


def configure_hub(base: str, revision: str | None, cache_dir: str | None) -> None:
    """Set the run's hub settings (each stage does before loading a model)."""
    if revision:
        HUB.revisions[base] = revision
    else:
        HUB.revisions.pop(base, None)
    HUB.cache_dir = cache_dir


def is_local_name(name: str) -> bool:
    """A name that can only be a path or a store URI, or an existing folder: not a hub id."""
    return path_like(name) or Path(name).expanduser().exists()


def hub_kwargs(source: str, revision: str | None = None) -> dict[str, str]:
    """The from_pretrained keywords for `source`: its revision and the cache, for a hub id only."""
    if is_local_name(source):
        if revision:
            raise SpecError(f"model {source!r} is a local path: a revision pins a hub id only")
        return {}
    kwargs = {}
    if revision := revision or HUB.revisions.get(source):
        kwargs["revision"] = revision
    if cache := HUB.cache():
        kwargs["cache_dir"] = str(Path(cache) / "hub")
    return kwargs
