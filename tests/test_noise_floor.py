"""The forgetting noise floor (runner/noise_floor.py): the forgetting rate eval sampling alone
gives a run that forgets nothing."""
from __future__ import annotations

import pytest

from adaptinf.runner import report
from adaptinf.runner.noise_floor import forgets_nothing, forgetting_noise_floor


def test_a_run_that_forgets_nothing_keeps_each_skill_at_its_best_so_far():
    history = [{"a": 0.5}, {"a": 0.3, "b": 0.2}, {"a": 0.6, "b": 0.1}]
    assert forgets_nothing(history) == [{"a": 0.5}, {"a": 0.5, "b": 0.2}, {"a": 0.6, "b": 0.2}]


def test_the_floor_matches_the_exact_expectation_of_a_small_case():
    """One skill at p = 0.5 on one record, two steps: the score falls 1 → 0 with probability 1/4,
    a 100% drop over S × T = 1 pair, so the expected rate is 25%."""
    floor = forgetting_noise_floor([{"a": 0.5}, {"a": 0.5}], {"a": 1}, draws=20_000)
    assert floor == pytest.approx(25.0, abs=1.0)


def test_the_floor_shrinks_with_more_eval_records_and_vanishes_for_certain_scores():
    history = [{"a": 0.8, "b": 0.1}, {"a": 0.8, "b": 0.1}, {"a": 0.8, "b": 0.1}]
    small = forgetting_noise_floor(history, {"a": 50, "b": 50})
    large = forgetting_noise_floor(history, {"a": 5000, "b": 5000})
    assert small > 3 * large > 0
    assert forgetting_noise_floor([{"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0}], {"a": 50, "b": 50}) == 0.0


def test_unknown_eval_counts_or_a_single_step_give_no_floor():
    assert forgetting_noise_floor([{"a": 0.5}, {"a": 0.5}], {}) is None
    assert forgetting_noise_floor([{"a": 0.5}], {"a": 50}) is None


def _summary(strategy: str, scores: list[dict[str, float]]) -> dict:
    return {"run": "r", "strategy": strategy,
            "steps": [{"step": t, "skills": s, "selected": 10, "seconds": {"train": 1.0}} for t, s in enumerate(scores)]}


def test_the_comparison_table_shows_the_floor_next_to_the_forgetting_rate():
    scores = [{"a": 0.5, "b": 0.9}, {"a": 0.4, "b": 0.9}]
    summaries = {"sequential": {0: _summary("sequential", scores)}, "random": {0: _summary("random", scores)}}
    rows = report.build_table(summaries, {"a": 50, "b": 50})
    assert all(r["forgetting_floor"] > 0 for r in rows)
    md = report.table_markdown(rows)
    assert "forgetting noise floor %" in md and "no forgetting this eval can see" in md
    assert all(r["forgetting_floor"] is None for r in report.build_table(summaries))
