"""Labels for progress bars: which step and stage a bar belongs to.

A bar reads `step 2 train: 186/630`, not `train: 186/630`; the prune stage's hidden-state
pass reads `step 2 prune / extract`. The runner (local or a stage pod) sets the label around
each stage; the loops that draw bars ask for their description here.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

_label = ""


@contextlib.contextmanager
def labelled(step: int, stage: str) -> Iterator[None]:
    """Bars drawn inside carry `step <step> <stage>`."""
    global _label
    before, _label = _label, f"step {step} {stage}"
    try:
        yield
    finally:
        _label = before


def desc(name: str) -> str:
    """The description of a bar for the loop `name` (train, eval, extract, ...)."""
    if not _label:
        return name
    return _label if _label.endswith(f" {name}") else f"{_label} / {name}"
