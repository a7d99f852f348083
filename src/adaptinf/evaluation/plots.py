"""Per-skill score over time, the paper's Figure 3 style, drawn so that a user can read it.

- One panel per skill (small multiples): skills that sit at the same score (often 0) no longer
  hide each other, and each panel's y-axis names the skill's own metric (exact match, IoU and
  BLEU are not one "score").
- The x-axis shows the dataset of each step (`0 · basics`), not bare step numbers.
- Where several lines share a panel (one per strategy in `adaptinf compare`), markers are
  open and shrink from line to line, so points that coincide show as concentric rings.
"""
from __future__ import annotations

import math
from typing import Any
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on pods and CI
import matplotlib.pyplot as plt  # noqa: E402

METRIC_NAMES = {"exact_match": "exact match", "iou": "IoU", "bleu": "BLEU"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_COLUMNS = 4


def metric_label(metric: str | None) -> str:
    return METRIC_NAMES.get(metric or "", metric or "score")


def step_label(step: int, dataset: str | None, run: str = "") -> str:
    """`2 · boxes` for step 2 of dataset `skewed-02-boxes` in run `skewed` (the run's name and
    the step number the demo datasets carry are dropped: the label must fit under a tick)."""
    if not dataset:
        return str(step)
    name = dataset.removeprefix(f"{run}-") if run else dataset
    head, sep, tail = name.partition("-")
    if sep and head.isdigit():
        name = tail
    return f"{step} · {name}"


def _grid(n: int) -> tuple[Any, Any]:
    cols = min(MAX_COLUMNS, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.7 * rows + 0.6), squeeze=False, sharex=True)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def skill_panels(series: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]],
                 metrics: Mapping[str, str] | None = None, datasets: Mapping[int, str] | None = None,
                 title: str = "", run: str = "") -> Any:
    """A figure with one panel per skill and one line per series.

    `series`: name → [(step, {skill: score})]; `metrics`: skill → metric name;
    `datasets`: step → dataset name (the x tick labels)."""
    metrics, datasets = metrics or {}, datasets or {}
    skills = sorted({k for points in series.values() for _, scores in points for k in scores})
    steps = sorted({t for points in series.values() for t, _ in points})
    fig, axes = _grid(len(skills))
    many = len(series) > 1
    for ax, skill in zip(axes.flat, skills):
        for i, (name, points) in enumerate(series.items()):
            xs = [t for t, scores in points if skill in scores]
            ys = [scores[skill] for _, scores in points if skill in scores]
            ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], markersize=max(3.0, 8.0 - 1.2 * i) if many else 5,
                    markerfacecolor="none" if many else None, linewidth=1.2, label=name)
        ax.set_title(f"{skill}", fontsize=10)
        ax.set_ylabel(metric_label(metrics.get(skill)), fontsize=8)
        ax.set_ylim(-0.04, 1.04)
        ax.set_xticks(steps)
        ax.set_xticklabels([step_label(t, datasets.get(t), run) for t in steps], rotation=30, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelbottom=True)  # also under panels with none below them
        ax.grid(alpha=0.3)
    if many:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, 0.995), frameon=False)
    fig.supxlabel("step · dataset", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if many else 0.95))
    fig.suptitle(title or "per-skill score over time", fontsize=11, y=0.94 if many else 0.99)
    return fig


def skill_curves(history: list[dict[str, float]], steps: list[int] | None = None, title: str = "",
                 metrics: Mapping[str, str] | None = None, datasets: Mapping[int, str] | None = None,
                 run: str = "") -> Any:
    """One run's per-skill scores (after each step) as one panel per skill."""
    steps = steps if steps is not None else list(range(len(history)))
    return skill_panels({run or "run": list(zip(steps, history))}, metrics, datasets, title, run)


def close(fig: Any) -> None:
    plt.close(fig)
