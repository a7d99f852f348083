"""Strategy variants for `adaptinf compare`: `STRATEGY@VARIANT` runs a strategy with a few spec
fields overridden, so that options of the extract stage can sit in the same table.

- `@zero-order`: `extract.gradientSource: zero-order` (forward-only gradient estimates).
- `@proxy`: `extract.proxyModel` = the stream's smaller proxy model (`proxy.py` builds it).
- `@backprop`: the defaults, spelled out (the same run as the plain strategy name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SEPARATOR = "@"
VARIANTS = ("backprop", "zero-order", "proxy")
PROXY_DIR = "proxy-model"   # inside the compare stream folder


def split(name: str) -> tuple[str, str | None]:
    """"lite-adapt-inf@proxy" → ("lite-adapt-inf", "proxy"); a plain name → (name, None)."""
    strategy, sep, variant = name.partition(SEPARATOR)
    if sep and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} in {name!r}; known: {', '.join(VARIANTS)}")
    return strategy, (variant if sep else None)


def needs_proxy(names: tuple[str, ...] | list[str]) -> bool:
    return any(split(n)[1] == "proxy" for n in names)


def apply(run: Any, name: str, stream: str | Path) -> tuple[Any, str]:
    """(the run with the variant's overrides, the strategy to run) for a variant name."""
    strategy, variant = split(name)
    if variant is None:
        return run, strategy
    run = run.model_copy(deep=True)
    extract = run.spec.extract
    if variant == "zero-order":
        extract.gradient_source = "zero-order"
    elif variant == "proxy":
        extract.proxy_model = str(Path(stream) / PROXY_DIR)
    return run, strategy
