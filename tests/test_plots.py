"""The PNGs a user reads: one panel per skill, the skill's metric on its axis, dataset names on
the x-axis, and coinciding series still distinguishable."""
from __future__ import annotations

from adaptinf.evaluation.plots import close, skill_curves, step_label
from adaptinf.runner.report import plot_strategies

HISTORY = [{"colour": 0.8, "code": 0.0, "box": 0.0}, {"colour": 0.7, "code": 0.0, "box": 0.1}]
METRICS = {"colour": "exact_match", "code": "exact_match", "box": "iou"}
DATASETS = {0: "skewed-00-basics", 1: "skewed-01-codes"}


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison]


def test_one_panel_per_skill_with_its_metric_and_dataset_ticks():
    fig = skill_curves(HISTORY, [0, 1], "run: per-skill score", metrics=METRICS, datasets=DATASETS, run="skewed")
    try:
        panels = {ax.get_title(): ax for ax in _panels(fig)}
        # Two skills at 0 (code, box) no longer draw on top of each other: each has its own panel.
        assert set(panels) == {"box", "code", "colour"}
        assert panels["box"].get_ylabel() == "IoU" and panels["colour"].get_ylabel() == "exact match"
        for ax in panels.values():
            assert [t.get_text() for t in ax.get_xticklabels()] == ["0 · basics", "1 · codes"]
        assert list(panels["box"].lines[0].get_ydata()) == [0.0, 0.1]
    finally:
        close(fig)


def test_step_label_keeps_user_names():
    assert step_label(3, "my-data-2026", run="prod") == "3 · my-data-2026"
    assert step_label(2, "prod-02-boxes", run="prod") == "2 · boxes"
    assert step_label(4, None) == "4"


def _summary(scores):
    return {"run": "skewed", "steps": [{"step": t, "dataset": DATASETS[t], "skills": s} for t, s in enumerate(scores)]}


def test_compare_plot_one_line_per_strategy_legend_clear_of_axis_label():
    same = _summary(HISTORY)
    other = _summary([{"colour": 1.0, "code": 0.2, "box": 0.0}, {"colour": 1.0, "code": 0.4, "box": 0.0}])
    fig = plot_strategies({"random": {0: same, 1: same}, "lite-adapt-inf": {0: same}, "sequential": {0: other}}, METRICS)
    try:
        panels = {ax.get_title(): ax for ax in _panels(fig)}
        assert set(panels) == {"box", "code", "colour"}
        box = panels["box"]
        assert [line.get_label() for line in box.lines] == ["random", "lite-adapt-inf", "sequential"]
        # random and lite coincide: open markers of different sizes keep both visible.
        sizes = [line.get_markersize() for line in box.lines]
        assert len(set(sizes)) == 3 and all(line.get_markerfacecolor() == "none" for line in box.lines)
        fig.canvas.draw()
        legend = fig.legends[0].get_window_extent()
        xlabel = fig._supxlabel.get_window_extent()
        assert legend.y0 > xlabel.y1      # the legend sits at the top, the axis label at the bottom
        assert legend.y0 > max(ax.get_window_extent().y1 for ax in panels.values())
    finally:
        close(fig)
