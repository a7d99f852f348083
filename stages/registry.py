"""The five stages of a lifelong step, each `run(ctx)` against the artifact store.

Import name `adaptinf.stages` (the folder is `stages/`, mapped in pyproject.toml). `stages/` and
`operator/` deliberately have no `__init__.py`: from the repository root, a folder with one would
be imported as the top-level `operator` and shadow the standard library's (`collections` imports
it). Without one they are namespace packages, which Python only uses when no regular module of
that name exists anywhere on sys.path, so `adaptinf.stages` and `adaptinf.operator` still import.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from adaptinf.layout import STAGES

from .context import StageContext, StageError, build_context


def stage_function(name: str) -> Callable[[StageContext], dict[str, Any]]:
    """The `run` function of a stage (imported lazily: each pulls in torch)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    from . import cluster_select, evaluate, extract, prune, train
    return {"extract": extract.run, "cluster-select": cluster_select.run, "train": train.run,
            "eval": evaluate.run, "prune": prune.run}[name]


__all__ = ["STAGES", "StageContext", "StageError", "build_context", "stage_function"]
