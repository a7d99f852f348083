"""Per-skill accuracy over time, the paper's Figure 3 style (one line per skill)."""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on pods and CI
import matplotlib.pyplot as plt  # noqa: E402


def skill_curves(history: list[dict[str, float]], steps: list[int] | None = None, title: str = "") -> Any:
    """A figure of each skill's score (y, 0..1) after each step (x)."""
    steps = steps if steps is not None else list(range(len(history)))
    skills = sorted({s for h in history for s in h})
    fig, ax = plt.subplots(figsize=(7, 4))
    for skill in skills:
        xs = [t for t, h in zip(steps, history) if skill in h]
        ax.plot(xs, [h[skill] for h in history if skill in h], marker="o", label=skill)
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.set_title(title or "per-skill score over time")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def close(fig: Any) -> None:
    plt.close(fig)
