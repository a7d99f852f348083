"""Adapt-∞: lifelong instruction tuning by dynamic data selection.

The public API is what this module exports; everything else is internal and may move.

    import adaptinf
    run, datasets = adaptinf.collect(["demo/"])            # LifelongRun + InstructionDatasets
    summary = adaptinf.run_local(run, datasets, "work/")    # the whole loop, locally
    adaptinf.get_strategy("lite-adapt-inf").select(feats, adaptinf.SelectionContext(budget=100))

Names are imported on first use (PEP 562), so `import adaptinf` stays light: the operator image,
which has no torch, imports the spec models from here too.
"""
from __future__ import annotations

import importlib as _importlib
from pathlib import Path as _Path
from typing import Any as _Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    # the two resources and their spec models
    "Resource": "adaptinf.spec", "LifelongRunSpec": "adaptinf.spec", "InstructionDatasetSpec": "adaptinf.spec",
    "SpecError": "adaptinf.spec", "load_resources": "adaptinf.spec", "parse_resource": "adaptinf.spec",
    "STRATEGIES": "adaptinf.spec",
    # running without a cluster
    "collect": "adaptinf.runner.resources", "run_local": "adaptinf.runner.local",
    "CompareConfig": "adaptinf.runner.compare", "compare": "adaptinf.runner.compare",
    # the registries: selection strategies, scorers and training regimes
    "Strategy": "adaptinf.selection", "SelectionContext": "adaptinf.selection", "PoolFeatures": "adaptinf.selection",
    "SelectionResult": "adaptinf.selection", "get_strategy": "adaptinf.selection", "register_strategy": "adaptinf.selection",
    "Scorer": "adaptinf.scorers.base", "get_scorer": "adaptinf.scorers.base", "register_scorer": "adaptinf.scorers.base",
    "Regime": "adaptinf.training.regimes", "get_regime": "adaptinf.training.regimes",
    "register_regime": "adaptinf.training.regimes",
    # the artifact store
    "Store": "adaptinf.store", "LocalStore": "adaptinf.store", "S3Store": "adaptinf.store", "open_store": "adaptinf.store",
    "StoreError": "adaptinf.store",
    # the paper's metrics
    "relative_gain": "adaptinf.metrics", "forgetting_rate": "adaptinf.metrics", "average_accuracy": "adaptinf.metrics",
}
_RENAMED = {"register_strategy": "register", "register_scorer": "register"}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> _Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'adaptinf' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


def _add_source_checkout_folders() -> None:
    """In a source checkout, let `adaptinf.operator` / `adaptinf.stages` reach the top-level folders.

    Those folders have no `__init__.py` on purpose: a regular package named `operator` at the
    repository root would shadow the standard library's whenever Python runs from there. As
    namespace folders they are found as sub-packages of `adaptinf` only through its `__path__`;
    setuptools' editable finder cannot resolve a namespace sub-package of a regular package, so
    the checkout root is added here. An installed wheel already holds them inside `adaptinf/`.
    """
    root = _Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "operator" / "main.py").is_file():
        __path__.append(str(root))  # noqa: F821 - the package's own search path


_add_source_checkout_folders()
