"""`adaptinf compare`: the table's figures as defined (PAPER_NOTES §7) and a --quick run end to end."""
from __future__ import annotations

import json

import pytest

from adaptinf.metrics import best_per_skill, forgetting_rate, relative_gain
from adaptinf.runner import report


def _summary(strategy: str, scores: list[dict[str, float]]) -> dict:
    return {"run": "demo", "strategy": strategy,
            "steps": [{"step": t, "skills": s, "selected": 10, "seconds": {"train": 1.0}} for t, s in enumerate(scores)]}


SEQ = {0: _summary("sequential", [{"a": 0.8, "b": 0.0}, {"a": 0.4, "b": 0.5}, {"a": 0.2, "b": 1.0}]),
       1: _summary("sequential", [{"a": 0.6, "b": 0.2}, {"a": 0.6, "b": 0.4}, {"a": 0.3, "b": 0.8}])}
RND = {0: _summary("random", [{"a": 0.8, "b": 0.0}, {"a": 0.8, "b": 0.5}, {"a": 0.4, "b": 0.5}]),
       1: _summary("random", [{"a": 0.6, "b": 0.2}, {"a": 0.6, "b": 0.2}, {"a": 0.6, "b": 0.4}])}


def test_table_by_hand():
    rows = {r["strategy"]: r for r in report.build_table({"sequential": SEQ, "random": RND})}
    # seed 0: final a 0.4 / best 0.8, b 0.5 / 1.0 → 50%; seed 1: 0.6/0.6, 0.4/0.8 → 75%
    assert rows["random"]["per_seed"]["0"]["relative_gain"] == pytest.approx(50.0)
    assert rows["random"]["per_seed"]["1"]["relative_gain"] == pytest.approx(75.0)
    assert rows["random"]["relative_gain"] == pytest.approx(62.5)
    assert rows["random"]["relative_gain_std"] == pytest.approx(17.677669, rel=1e-6)  # sample std of 50, 75
    # forgetting, seed 0: a drops 0.8→0.8 (0), 0.8→0.4 (50%); b 0.5→0.5 (0); b at step 0 is 0
    # (nothing to forget). Paper: S×T = 2 skills × 2 steps; taught pairs only: the 3 with P > 0.
    assert rows["random"]["per_seed"]["0"]["forgetting_rate"] == pytest.approx(50.0 / 4)
    assert rows["random"]["per_seed"]["0"]["forgetting_rate_taught"] == pytest.approx(50.0 / 3)
    assert rows["random"]["avg_acc"] == pytest.approx(((0.4 + 0.5) / 2 + (0.6 + 0.4) / 2) / 2)
    assert rows["sequential"]["per_seed"]["0"]["relative_gain"] == pytest.approx((0.2 / 0.8 + 1.0) / 2 * 100)
    assert rows["random"]["trained_samples"] == 20  # steps ≥ 1 only: step 0 is shared by all


# Same step 0 per seed as SEQ/RND (compare shares it), better later steps.
BETTER = {0: _summary("better", [{"a": 0.8, "b": 0.0}, {"a": 0.8, "b": 0.6}, {"a": 0.6, "b": 0.8}]),
          1: _summary("better", [{"a": 0.6, "b": 0.2}, {"a": 0.6, "b": 0.4}, {"a": 0.6, "b": 0.8}])}


def test_paired_difference_to_random_with_bootstrap_interval():
    rows = {r["strategy"]: r for r in report.build_table({"sequential": SEQ, "random": RND, "better": BETTER})}
    b = rows["better"]
    # relative gain: seed 0 (0.6/0.8 + 0.8/1.0)/2 = 77.5 vs random 50 -> +27.5;
    # seed 1 (0.6/0.6 + 0.8/0.8)/2 = 100 vs 75 -> +25. Exact bootstrap of (27.5, 25): its means are
    # 25, 26.25, 27.5 with probabilities 1/4, 1/2, 1/4, so the 95% interval is [25, 27.5].
    assert b["relative_gain_vs_random"] == pytest.approx(26.25)
    assert b["relative_gain_vs_random_ci"] == pytest.approx([25.0, 27.5])
    # avg acc: seed 0 0.7 vs 0.45, seed 1 0.7 vs 0.5 -> +0.25, +0.2
    assert b["avg_acc_vs_random"] == pytest.approx(0.225)
    assert b["avg_acc_vs_random_ci"] == pytest.approx([0.2, 0.25])
    # forgetting (S×T = 4): better seed 0 a 0.8→0.6 = 25% -> 6.25 vs random 12.5 -> −6.25;
    # seed 1: no drop (0) vs random a 0 %, b 0.2→0.2→0.4: 0 -> 0.
    assert b["forgetting_rate_vs_random"] == pytest.approx(-6.25 / 2)
    assert b["forgetting_rate_vs_random_ci"] == pytest.approx([-6.25, 0.0])
    assert b["paired_seeds"] == 2 and "relative_gain_vs_random" not in rows["random"]
    md = report.table_markdown(list(rows.values()))
    assert "| better | +26.2 [+25.0, +27.5] | -3.1 [-6.2, +0.0] | +22.5 [+20.0, +25.0] | 2 |" in md
    assert "forgetting % (taught pairs only)" in md


def test_paired_needs_a_shared_step_0():
    other = {0: _summary("x", [{"a": 0.1, "b": 0.0}, {"a": 0.8, "b": 0.6}]), 1: BETTER[1]}
    with pytest.raises(ValueError, match="step 0"):
        report.build_table({"sequential": SEQ, "random": RND, "x": other})
    # Without a random run there is nothing to pair with, and the table says so.
    rows = report.build_table({"sequential": SEQ, "better": BETTER})
    assert "relative_gain_vs_random" not in rows[0]
    assert "no 'random' run" in report.table_markdown(rows)


def test_table_needs_sequential_for_every_seed():
    with pytest.raises(ValueError, match="sequential"):
        report.build_table({"random": RND})
    with pytest.raises(ValueError, match="seed"):
        report.build_table({"sequential": {0: SEQ[0]}, "random": RND})


def test_unknown_strategy_is_rejected(tmp_path):
    from adaptinf.runner.compare import CompareConfig
    with pytest.raises(ValueError, match="no-such"):
        CompareConfig(out=tmp_path, strategies=("no-such",))
    assert CompareConfig(out=tmp_path, strategies=("random",)).strategies[0] == "sequential"


@pytest.mark.slow
def test_quick_compare_end_to_end(tmp_path):
    from mlflow.tracking import MlflowClient

    from adaptinf.cli import main
    out = tmp_path / "cmp"
    assert main(["compare", "--out", str(out), "--quick", "--seeds", "2", "--strategies", "random,lite-adapt-inf",
                 "--jobs", "2", "--no-progress"]) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "table.json").read_text())}
    assert set(rows) == {"sequential", "random", "lite-adapt-inf"}
    for r in rows.values():
        assert r["seeds"] == [0, 1]
        assert 0 <= r["avg_acc"] <= 1 and r["forgetting_rate"] >= 0 and r["relative_gain"] >= 0
    # Recompute one figure from the runs' own summary.json files, as defined in adaptinf.metrics.
    for seed in (0, 1):
        seq = json.loads((out / "runs" / "sequential" / f"seed-{seed}" / "demo" / "summary.json").read_text())
        lite = json.loads((out / "runs" / "lite-adapt-inf" / f"seed-{seed}" / "demo" / "summary.json").read_text())
        hist = [s["skills"] for s in lite["steps"]]
        assert len(hist) == 5
        expected = relative_gain(hist[-1], best_per_skill([s["skills"] for s in seq["steps"]]))
        assert rows["lite-adapt-inf"]["per_seed"][str(seed)]["relative_gain"] == pytest.approx(expected)
        assert rows["lite-adapt-inf"]["per_seed"][str(seed)]["forgetting_rate"] == pytest.approx(forgetting_rate(hist))
        # Every strategy of a seed starts from the same step 0; T samples at every later step.
        assert lite["steps"][0]["skills"] == seq["steps"][0]["skills"]
        assert all(s["selected"] == lite["steps"][1]["selected"] for s in lite["steps"][1:])
    md = (out / "table.md").read_text()
    assert all(f"| {name} |" in md for name in rows) and "NMI" in md
    assert (out / "skills_over_time.png").stat().st_size > 10_000
    meta = json.loads((out / "meta.json").read_text())
    quality = meta["cluster_quality"]["lite-adapt-inf"]
    assert [q["step"] for q in quality] == [1, 2, 3, 4] and all(0 <= q["nmi"] <= 1 for q in quality)
    for strategy, mix in meta["skill_mix"].items():
        assert sum(mix["selected"].values()) == pytest.approx(1) and sum(mix["pool"].values()) == pytest.approx(1)
        assert set(mix["selected"]) <= set(mix["pool"])   # nothing selected from outside the pool
    assert "Share of each skill" in md
    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    parent = client.get_run(meta["mlflow_run_id"])
    assert parent.data.metrics["lite-adapt-inf.relative_gain"] == pytest.approx(rows["lite-adapt-inf"]["relative_gain"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 6
    history = client.get_metric_history(children[0].info.run_id, "avg_acc")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
