"""The per-step table printed by `adaptinf run-local`."""
from __future__ import annotations

from typing import Any


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if pct else f"{v:.3f}"
    return str(v)


def header(skills: list[str]) -> str:
    cols = ["step", "dataset", "pool", "sel", "k", "pruned", "avg_acc", "forget%", "forget%(taught)"] + skills + ["sec(x/c/t/e/p)"]
    return " | ".join(cols)


def row(step: dict[str, Any], skills: list[str]) -> str:
    if step.get("skipped"):  # a dataset with no usable record: a recorded step, not a blank
        return f"{step['step']} | {step.get('dataset', '-')} | skipped: {step.get('reason', '')}"
    s = step.get("seconds", {})
    secs = "/".join(f"{s.get(k, 0):.0f}" for k in ("extract", "cluster-select", "train", "eval", "prune"))
    cells = [step["step"], step["dataset"], step.get("pool_size"), step.get("selected"), step.get("k"),
             step.get("pruned"), _fmt(step.get("avg_acc")), _fmt(step.get("forgetting_rate"), pct=True),
             _fmt(step.get("forgetting_rate_taught"), pct=True)]
    cells += [_fmt(step.get("skills", {}).get(k)) for k in skills] + [secs]
    return " | ".join(str(c) for c in cells)
