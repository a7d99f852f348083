"""Refresh policies for the trained model's features (`extract.refresh`, stages/refresh.py):
every-step recomputes everything as before; every-n-steps reuses exactly the samples whose
features are younger than N steps and records each row's step; fraction recomputes a
cluster-stratified share of the old pool, the same draw every time; a step retried after a crash
mid-extract ends exactly as an uninterrupted one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from adaptinf import layout
from adaptinf.runner import collect, report, run_local, variants
from adaptinf.spec import SpecError, parse_resource
from adaptinf.store import LocalStore
from adaptinf.stages.refresh import stratified_draw


# ---- the draw alone ---------------------------------------------------------------------------

def test_stratified_draw_takes_each_clusters_share_stalest_first():
    strata = np.array([0] * 10 + [1] * 6 + [2] * 4)
    origin = np.array([3] * 5 + [1] * 5 + [2] * 6 + [1, 2, 3, 3])
    chosen = stratified_draw(strata, origin, 0.5, (0, 2, 7))
    assert len(chosen) == 10
    assert np.bincount(strata[chosen], minlength=3).tolist() == [5, 3, 2]
    assert set(chosen[strata[chosen] == 0]) == set(range(5, 10))      # the five computed at step 1
    assert {16, 17} == set(chosen[strata[chosen] == 2])                # step 1, then step 2
    again = stratified_draw(strata, origin, 0.5, (0, 2, 7))
    assert np.array_equal(chosen, again)


def test_stratified_draw_rounds_by_largest_remainders_and_breaks_ties_by_seed():
    strata = np.array([0] * 5 + [1] * 3 + [2] * 2)
    origin = np.zeros(10, dtype=int)
    chosen = stratified_draw(strata, origin, 0.3, (0, 1, 7))
    # 3 of 10: exact shares 1.5, 0.9, 0.6 → floors 1, 0, 0; the remainders .9 and .6 get the rest.
    assert np.bincount(strata[chosen], minlength=3).tolist() == [1, 1, 1]
    draws = {tuple(stratified_draw(strata, origin, 0.3, (seed, 1, 7))) for seed in range(8)}
    assert len(draws) > 1                                             # equal staleness: the seed decides
    assert stratified_draw(strata, origin, 0.01, (0, 1, 7)).size == 0  # 0.1 samples round to none


# ---- the spec and the compare variants ---------------------------------------------------------

def _run(extract: dict) -> dict:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "r"},
            "spec": {"model": {"base": "m"}, "trainBudget": 4, "storage": {"uri": "s"}, "extract": extract}}


@pytest.mark.parametrize("extract, message", [
    ({"refresh": "every-n-steps"}, "spec.extract.refreshEvery: required with extract.refresh: every-n-steps"),
    ({"refresh": "fraction"}, "spec.extract.refreshFraction: required with extract.refresh: fraction"),
    ({"refreshEvery": 3}, "spec.extract.refreshEvery: only read with extract.refresh: every-n-steps"),
    ({"refresh": "every-n-steps", "refreshEvery": 2, "refreshFraction": 0.5},
     "spec.extract.refreshFraction: only read with extract.refresh: fraction"),
    ({"refresh": "every-n-steps", "refreshEvery": 1}, "spec.extract.refreshEvery: Input should be greater"),
    ({"refresh": "fraction", "refreshFraction": 1.0}, "spec.extract.refreshFraction: Input should be less"),
    ({"refresh": "fraction", "refreshFraction": 0.2, "proxyModel": "p"}, "spec.extract.refresh: fraction is a policy"),
    ({"refresh": "every-n-steps", "refreshEvery": 2, "reuseFeatures": False}, "spec.extract.reuseFeatures: false"),
])
def test_refresh_fields_are_checked_with_the_field_named(extract, message):
    with pytest.raises(SpecError) as err:
        parse_resource(_run(extract))
    assert message in str(err.value)


def test_default_spec_records_no_refresh_parameter():
    spec = parse_resource(_run({})).spec.to_dict()["extract"]
    assert spec["refresh"] == "every-step" and "refreshEvery" not in spec and "refreshFraction" not in spec


def test_refresh_variants_set_the_policy(demo_quick):
    run, _ = collect([demo_quick])
    every, strategy = variants.apply(run, "lite-adapt-inf@refresh-every-3", "stream")
    assert strategy == "lite-adapt-inf"
    assert (every.spec.extract.refresh, every.spec.extract.refresh_every) == ("every-n-steps", 3)
    part, _ = variants.apply(run, "lite-adapt-inf@refresh-fraction-25", "stream")
    assert (part.spec.extract.refresh, part.spec.extract.refresh_fraction) == ("fraction", 0.25)
    assert run.spec.extract.refresh == "every-step"                   # the stream's run is untouched
    for bad in ("refresh-every-1", "refresh-fraction-0", "refresh-fraction-100", "refresh-sometimes"):
        with pytest.raises(ValueError, match=bad):
            variants.split(f"lite-adapt-inf@{bad}")


def test_variants_combine_left_to_right(demo_quick):
    run, _ = collect([demo_quick])
    name = "lite-adapt-inf@refresh-every-2+last-layer+prune-extract"
    assert variants.split(name) == ("lite-adapt-inf", "refresh-every-2+last-layer+prune-extract")
    cheap, strategy = variants.apply(run, name, "stream")
    assert strategy == "lite-adapt-inf"
    assert (cheap.spec.extract.refresh, cheap.spec.extract.refresh_every) == ("every-n-steps", 2)
    assert cheap.spec.extract.layers == ["last"] and cheap.spec.prune.hidden_states == "extract"
    assert run.spec.extract.layers == ["middle"] and run.spec.prune.hidden_states == "after-train"
    assert variants.validated(run, name, "stream").extract.layers == ["last"]
    assert variants.needs_proxy(["random", "lite-adapt-inf@last-layer+proxy"])
    assert not variants.needs_proxy([name])
    with pytest.raises(ValueError, match="'gpu' in 'lite-adapt-inf@last-layer\\+gpu'"):
        variants.split("lite-adapt-inf@last-layer+gpu")
    with pytest.raises(ValueError, match="twice"):
        variants.split("lite-adapt-inf@last-layer+last-layer")
    # Two refresh policies at once are refused by the spec's own rule, naming the field.
    with pytest.raises(ValidationError, match="refreshEvery"):
        variants.validated(run, "lite-adapt-inf@refresh-every-2+refresh-fraction-25", "stream")
    # Its figures reach MLflow under a name MLflow accepts.
    from mlflow.utils.validation import _validate_metric_name
    from adaptinf.runner.compare import metric_prefix
    assert metric_prefix(name) == "lite-adapt-inf/refresh-every-2/last-layer/prune-extract"
    _validate_metric_name(metric_prefix(name) + ".relative_gain")


def _summary(strategy: str, scores: list[dict[str, float]], seconds: dict[str, float]) -> dict:
    return {"run": "demo", "strategy": strategy,
            "steps": [{"step": t, "skills": s, "selected": 10, "seconds": seconds} for t, s in enumerate(scores)]}


def test_a_variant_is_paired_with_its_plain_strategy():
    step0 = [{"a": 0.8, "b": 0.0}, {"a": 0.6, "b": 0.2}]
    seq = {i: _summary("sequential", [step0[i], {"a": 0.4, "b": 1.0}], {"train": 2.0}) for i in (0, 1)}
    plain = {i: _summary("x", [step0[i], {"a": 0.8, "b": 1.0}],
                         {"extract": 3.0, "cluster-select": 1.0, "prune": 1.0, "train": 2.0}) for i in (0, 1)}
    cheap = {0: _summary("x@v", [step0[0], {"a": 0.4, "b": 1.0}],
                         {"extract": 0.5, "cluster-select": 0.5, "prune": 0.0, "train": 2.0}),
             1: _summary("x@v", [step0[1], {"a": 0.8, "b": 0.6}],
                         {"extract": 0.5, "cluster-select": 0.5, "prune": 0.0, "train": 2.0})}
    rows = {r["strategy"]: r for r in report.build_table({"sequential": seq, "x": plain, "x@v": cheap})}
    assert rows["x"]["selection_train_ratio"] == pytest.approx(2.5)   # (3 + 1 + 1) / 2
    assert rows["x@v"]["selection_train_ratio"] == pytest.approx(0.5)
    # relative gain against sequential's best per skill, seed 0 (a 0.8, b 1.0): x 100, x@v
    # (0.4/0.8 + 1)/2 = 75 → −25; seed 1 (a 0.6, b 1.0): x (0.8/0.6 + 1)/2, x@v (0.8/0.6 + 0.6)/2 → −20.
    got = rows["x@v"]["vs_plain"]
    assert got["strategy"] == "x" and got["seeds"] == 2
    assert got["relative_gain"]["diff"] == pytest.approx(-22.5)
    assert got["relative_gain"]["ci"] == pytest.approx([-25.0, -20.0])
    assert "vs_plain" not in rows["x"]
    md = report.table_markdown(list(rows.values()))
    assert "| x@v | -22.5 [-25.0, -20.0] |" in md and "| 0.50 | 2.50 | 2 |" in md


# ---- runs on the quick demo stream --------------------------------------------------------------

slow = pytest.mark.slow
STEPS = 4


def _spec(demo_quick: Path, **extract):
    run, datasets = collect([demo_quick])
    run = run.model_copy(deep=True)
    for k, v in extract.items():
        setattr(run.spec.extract, k, v)
    run.spec.training.epochs = 1                    # extract and selection are what is checked
    run.spec.eval.suite = run.spec.eval.suite[:1]
    return run, datasets[:STEPS]


def _shard(workdir: Path, step: int) -> Path:
    return workdir / layout.shard_prefix("demo", step, 0, 1)


def _marker(workdir: Path, step: int) -> dict:
    return json.loads((_shard(workdir, step) / "_COMMITTED.json").read_text())["summary"]


def _uids(workdir: Path, step: int) -> list[str]:
    return json.loads((_shard(workdir, step) / "uids.json").read_text())


def _origin(workdir: Path, step: int) -> dict[str, int]:
    return dict(zip(_uids(workdir, step), np.load(_shard(workdir, step) / "origin.npy").tolist()))


def _selection(workdir: Path, step: int) -> dict:
    return json.loads((workdir / layout.stage_prefix("demo", step, "cluster-select") / "selection.json").read_text())


def _new(workdir: Path, step: int) -> set[str]:
    dataset = json.loads((workdir / layout.inputs_key("demo", step)).read_text())["dataset"]
    return {u for u in _uids(workdir, step) if u.split("/", 1)[0] == dataset}


@pytest.fixture(scope="module")
def every_step(demo_quick, tmp_path_factory):
    work = tmp_path_factory.mktemp("every-step")
    run, datasets = _spec(demo_quick)
    run_local(run, datasets[:2], work, progress=False, tracking=False)
    return work


@pytest.fixture(scope="module")
def every_two(demo_quick, tmp_path_factory):
    work = tmp_path_factory.mktemp("every-2")
    run, datasets = _spec(demo_quick, refresh="every-n-steps", refresh_every=2)
    run_local(run, datasets, work, progress=False, tracking=False)
    return work


@pytest.fixture(scope="module")
def fraction(demo_quick, tmp_path_factory):
    work = tmp_path_factory.mktemp("fraction")
    run, datasets = _spec(demo_quick, refresh="fraction", refresh_fraction=0.25)
    run_local(run, datasets[:3], work, progress=False, tracking=False)
    return work


@slow
def test_every_step_computes_everything_and_records_no_staleness(every_step, every_two):
    for step in (0, 1):
        summary = _marker(every_step, step)
        assert summary["features_computed"] == summary["samples"] and summary["features_reused"] == 0
        assert not {"feature_key", "refresh", "features_refreshed"} & set(summary)
        assert not (_shard(every_step, step) / "origin.npy").exists()
        features = _selection(every_step, step)["report"]["features"]
        assert set(features) == {"computed", "reused", "computed_at_step"}
    # Step 1 of a policy run computes everything too (step 0 predates the initial tuning), and
    # selects exactly what every-step selects.
    assert _marker(every_two, 1)["features_reused"] == 0
    assert _selection(every_two, 1)["selected"] == _selection(every_step, 1)["selected"]
    for name in ("grads.npy", "hidden.npy"):
        np.testing.assert_allclose(np.load(_shard(every_two, 1) / name), np.load(_shard(every_step, 1) / name),
                                   rtol=1e-6, atol=1e-7, err_msg=name)


@slow
def test_every_n_steps_reuses_exactly_the_features_younger_than_n(every_two):
    assert set(_origin(every_two, 1).values()) == {1}
    for step in (2, 3):
        before, now = _origin(every_two, step - 1), _origin(every_two, step)
        new = _new(every_two, step)
        expect_reused = {u for u in now if u not in new and step - before[u] < 2}
        reused = {u for u, s in now.items() if s < step}
        assert reused == expect_reused and reused
        assert all(now[u] == before[u] for u in reused)                # the step that computed it
        summary = _marker(every_two, step)
        assert summary["features_reused"] == len(reused)
        assert summary["features_refreshed"] == len(set(now) - new - reused)
        assert summary["refresh"] == {"policy": "every-n-steps", "every": 2}
        features = _selection(every_two, step)["report"]["features"]
        assert features["reused"] == len(reused) and features["refreshed"] == summary["features_refreshed"]
        ages = {str(step - s): sum(v == s for v in now.values()) for s in set(now.values())}
        assert features["age_steps"] == ages
        selected = _selection(every_two, step)["selected"]
        assert sum(features["selected_computed_at_step"].values()) == len(selected)
    # At step 3 the samples computed at step 1 are two steps old: all recomputed.
    assert _marker(every_two, 3)["features_refreshed"] > 0 and min(_origin(every_two, 3).values()) == 2


@slow
def test_fraction_recomputes_a_stratified_share_of_the_old_pool(fraction):
    step = 2
    now, new = _origin(fraction, step), _new(fraction, step)
    old = [u for u in _uids(fraction, step) if u not in new]
    refreshed = {u for u in old if now[u] == step}
    assert len(refreshed) == int(0.25 * len(old) + 0.5)
    # Spread over step 1's clusters in proportion to their sizes (floor or ceil of the share).
    labels = dict(zip(_uids(fraction, 1),
                      np.load(fraction / layout.stage_prefix("demo", 1, "cluster-select") / "labels.npy").tolist()))
    for c in set(labels.values()):
        members = [u for u in old if labels.get(u) == c]
        share = len(members) * len(refreshed) / len(old)
        assert int(np.floor(share)) <= sum(u in refreshed for u in members) <= int(np.ceil(share))
    assert _marker(fraction, step)["features_refreshed"] == len(refreshed)
    assert _marker(fraction, step)["refresh"] == {"policy": "fraction", "fraction": 0.25}


@slow
def test_fraction_draw_is_the_same_when_a_crashed_step_is_resumed(fraction, demo_quick, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(fraction, work)
    run, datasets = _spec(demo_quick, refresh="fraction", refresh_fraction=0.25)
    import adaptinf.stages.extract as extract_stage
    real, calls = extract_stage._merge, []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:     # after this step's features are computed, before they are written
            raise RuntimeError("killed mid-extract")
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_stage, "_merge", crash_once)
    with pytest.raises(RuntimeError, match="killed"):
        run_local(run, datasets[:3], work, progress=False, tracking=False, restart_from=2)
    assert not LocalStore(work).is_committed(layout.shard_prefix("demo", 2, 0, 1))
    run_local(run, datasets[:3], work, progress=False, tracking=False)
    assert _origin(work, 2) == _origin(fraction, 2)
    assert _selection(work, 2)["selected"] == _selection(fraction, 2)["selected"]
    np.testing.assert_allclose(np.load(_shard(work, 2) / "grads.npy"), np.load(_shard(fraction, 2) / "grads.npy"),
                               rtol=1e-5, atol=1e-6)
