"""The interference repair pass (`training.repair`, adaptinf.training.repair): which samples it
checks and repairs, that its loss equals extract's, that it stays inside the step's budget, and
that a run with it records what it did and counts its checks as selection time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from adaptinf import layout
from adaptinf.data.records import Record
from adaptinf.features.extract import ExtractConfig, extract_features
from adaptinf.history import stage_seconds
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import load_base
from adaptinf.runner import collect, report, run_local, variants
from adaptinf.spec import SpecError, parse_resource, repair_slots, selection_budget
from adaptinf.store import LocalStore
from adaptinf.training import LaterRows, TrainConfig, repair, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parent.parent


def _rec(i: int, skill: str = "s") -> Record:
    return Record(id=str(i), conversations=(("human", f"q{i}"), ("gpt", f"a{i}")), skill=skill, dataset="d")


# ---- the choice alone --------------------------------------------------------------------------

def test_checked_uids_leave_out_the_selection_and_sample_by_seed_in_pool_order():
    members = [f"d/{i}" for i in range(10)]
    assert repair.checked_uids(members, {"d/1", "d/4"}, 100, 0) == [m for m in members if m not in {"d/1", "d/4"}]
    some = repair.checked_uids(members, {"d/1"}, 4, 7)
    assert len(some) == 4 and "d/1" not in some and some == sorted(some, key=members.index)
    assert some == repair.checked_uids(members, {"d/1"}, 4, 7)
    assert len({tuple(repair.checked_uids(members, set(), 4, s)) for s in range(6)}) > 1


def test_repair_takes_the_largest_rises_above_the_threshold_then_fills_from_the_selection():
    checked = [_rec(i, "old" if i < 3 else "other") for i in range(6)]
    plan = repair.RepairPlan(checked, before=np.zeros(6), seconds=0.0)
    after = np.array([0.5, 0.05, 0.9, -0.2, 0.3, 0.1])     # 0.1 is not above min_rise 0.1
    assert repair.repair_set(plan, after, 2, 0.1) == [2, 0]
    assert repair.repair_set(plan, after, 5, 0.1) == [2, 0, 4]
    trained = [_rec(100 + i, "new") for i in range(10)]
    batch, report = repair.with_replay(*repair.risen_records(plan, after, 2, 0.1), trained, 2, seed=0)
    assert [r.id for r in batch[:2]] == ["2", "0"] and len(batch) == 4
    assert all(r.skill == "new" for r in batch[2:])
    assert report["rose"] == 3 and report["repaired"] == 2 and report["replayed"] == 2
    assert report["repaired_by_skill"] == {"old": 2}
    assert report["mean_rise_by_skill"] == {"old": pytest.approx(0.4833, abs=1e-4), "other": pytest.approx(0.0667, abs=1e-4)}
    # Nothing rose: the pass replays the selection alone, still 2R samples.
    none, report = repair.with_replay(*repair.risen_records(plan, np.full(6, -1.0), 2, 0.1), trained, 2, seed=0)
    assert len(none) == 4 and report["repaired"] == 0 and all(r.skill == "new" for r in none)


def test_answer_nll_is_extracts_loss_and_leaves_parameters_as_they_were(tiny_model_dir):
    bundle = load_base(str(tiny_model_dir), dtype="float32")
    encoder = Encoder(bundle, 128)
    records = [_rec(i) for i in range(7)]
    flags = [p.requires_grad for p in bundle.model.parameters()]
    nll = repair.answer_nll(bundle, encoder, records, batch_size=3)
    assert [p.requires_grad for p in bundle.model.parameters()] == flags
    feats = extract_features(bundle, encoder, records, ExtractConfig(layers=[], grads=False, hidden=False,
                                                                     scorers=("perplexity",)), progress=False)
    np.testing.assert_allclose(nll, np.log(feats.scores["perplexity"]), rtol=1e-5)


# ---- the spec and the variant ------------------------------------------------------------------

def _run(strategy: str = "lite-adapt-inf", **repair_fields) -> dict:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "r"},
            "spec": {"model": {"base": "m"}, "strategy": strategy, "trainBudget": 80, "storage": {"uri": "s"},
                     "training": {"repair": repair_fields}}}


def test_repair_is_off_by_default_and_takes_its_share_of_t():
    off = parse_resource(_run()).spec
    assert repair_slots(off) == 0 and selection_budget(off) == 80
    on = parse_resource(_run(fraction=0.1)).spec
    assert repair_slots(on) == 8 and selection_budget(on) == 72
    assert on.to_dict()["training"]["repair"] == {"fraction": 0.1, "minRise": 0.1, "maxChecked": 2000,
                                                   "placement": "after"}


@pytest.mark.parametrize("strategy, fields, message", [
    ("expansion", {"fraction": 0.1}, "spec.training.repair.fraction: the expansion strategy trains a new adapter"),
    ("lite-adapt-inf", {"fraction": 0.6}, "spec.training.repair.fraction: Input should be less than or equal to 0.5"),
    ("lite-adapt-inf", {"minRise": 0}, "spec.training.repair.minRise: Input should be greater than 0"),
    ("lite-adapt-inf", {"placement": "before"}, "spec.training.repair.placement: Input should be 'after' or 'interleaved'"),
])
def test_bad_repair_settings_name_the_field(strategy, fields, message):
    with pytest.raises(SpecError) as err:
        parse_resource(_run(strategy, **fields))
    assert message in str(err.value)


def test_repair_variant_sets_the_fraction_and_refuses_expansion(demo_quick):
    run, _ = collect([demo_quick])
    with_repair, strategy = variants.apply(run, "lite-adapt-inf@repair", "stream")
    assert strategy == "lite-adapt-inf" and with_repair.spec.training.repair.fraction == variants.REPAIR_FRACTION
    assert run.spec.training.repair.fraction == 0
    with pytest.raises(ValidationError, match="the expansion strategy trains a new adapter per step"):
        variants.validated(run, "expansion@repair", "stream")
    variants.validated(run, "lite-adapt-inf@repair", "stream")
    assert with_repair.spec.training.repair.placement == "after"
    interleaved, _ = variants.apply(run, "lite-adapt-inf@repair-interleaved", "stream")
    assert interleaved.spec.training.repair.placement == "interleaved"
    assert interleaved.spec.training.repair.fraction == variants.REPAIR_FRACTION
    one_epoch = run.model_copy(deep=True)
    one_epoch.spec.training.epochs = 1
    with pytest.raises(ValidationError, match="adds the risen samples to the epochs after"):
        variants.validated(one_epoch, "lite-adapt-inf@repair-interleaved", "stream")


def test_interleaved_repair_needs_a_second_epoch():
    spec = _run(fraction=0.1, placement="interleaved")
    spec["spec"]["training"]["epochs"] = 1
    with pytest.raises(SpecError) as err:
        parse_resource(spec)
    assert "spec.training.repair.placement: interleaved adds the risen samples" in str(err.value)
    assert "needs training.epochs >= 2" in str(err.value)
    spec["spec"]["training"]["repair"]["fraction"] = 0   # off: nothing to interleave, nothing refused
    assert parse_resource(spec).spec.training.epochs == 1


# ---- rows added to the later epochs (training.LaterRows) ---------------------------------------

def test_later_rows_join_the_epochs_after_the_first_under_one_schedule(tiny_model_dir):
    bundle = load_base(str(tiny_model_dir), dtype="float32")
    bundle.model.requires_grad_(True)
    encoder = Encoder(bundle, 64)
    cfg = TrainConfig(epochs=3, batch_size=2, learning_rate=1e-3, warmup_ratio=0.0)
    plain = train_model(bundle, encoder, [_rec(i) for i in range(5)], cfg, progress=False)
    assert plain.samples == 5 and plain.optimizer_steps == 3 * 3
    calls: list[bool] = []
    before = [q.detach().clone() for q in bundle.model.parameters()]

    def rows() -> list[Record]:   # called once the first epoch has moved the weights
        calls.append(any(not torch.equal(a, q) for a, q in zip(before, bundle.model.parameters())))
        return [_rec(100 + i, "old") for i in range(3)]   # one more than the slots: cut to 2

    later = LaterRows(slots=2, rows=rows)
    result = train_model(bundle, encoder, [_rec(i) for i in range(5)], cfg, progress=False, later=later)
    assert calls == [True]
    assert result.samples == 7
    assert result.optimizer_steps == 3 + 4 * 2   # ceil(5/2) once, then ceil(7/2) twice
    assert len(result.losses) == 3
    # No rows found: the later epochs stay the selection alone (the schedule ends a step early).
    none = train_model(bundle, encoder, [_rec(i) for i in range(5)], cfg, progress=False,
                       later=LaterRows(slots=2, rows=list))
    assert none.samples == 5 and none.optimizer_steps == 9


# ---- a run with it -----------------------------------------------------------------------------

def _repaired(demo_quick: Path, work: Path, placement: str) -> Path:
    run, datasets = collect([demo_quick])
    run = run.model_copy(deep=True)
    run.spec.training.epochs = 2
    run.spec.training.repair.fraction = 0.25
    run.spec.training.repair.min_rise = 1e-6
    run.spec.training.repair.placement = placement
    run.spec.eval.suite = run.spec.eval.suite[:1]
    run_local(run, datasets[:2], work, progress=False, tracking=False)
    return work


@pytest.fixture(scope="module")
def repaired_run(demo_quick, tmp_path_factory) -> Path:
    return _repaired(demo_quick, tmp_path_factory.mktemp("repair"), "after")


@pytest.fixture(scope="module")
def interleaved_run(demo_quick, tmp_path_factory) -> Path:
    return _repaired(demo_quick, tmp_path_factory.mktemp("repair-interleaved"), "interleaved")


def _stage(work: Path, step: int, stage: str, name: str) -> dict:
    return json.loads((work / layout.stage_prefix("demo", step, stage) / name).read_text())


@pytest.mark.slow
def test_a_run_selects_t_less_r_and_repairs_inside_the_budget(repaired_run, demo_quick):
    run, _ = collect([demo_quick])
    t = run.spec.train_budget
    slots = round(0.25 * t)
    # Step 0 of the quick stream tunes the base on the whole first dataset: no repair there.
    assert "repair" not in _stage(repaired_run, 0, "train", "_COMMITTED.json")["summary"]
    for step in (1,):
        selected = _stage(repaired_run, step, "cluster-select", "selection.json")["selected"]
        assert len(selected) <= t - slots
        summary = _stage(repaired_run, step, "train", "_COMMITTED.json")["summary"]
        rep = summary["repair"]
        assert rep["slots"] == slots and rep["repaired"] + rep["replayed"] == min(2 * slots, rep["repaired"] + len(selected))
        assert rep["repaired"] <= slots and not set(rep["repaired_uids"]) & set(selected)
        assert len(rep["loss"]) == 1 and rep["check_seconds"] > 0
        # At most T distinct samples, at most T × epochs sample passes.
        assert len(selected) + rep["repaired"] <= t
        assert len(selected) * 2 + rep["repaired"] + rep["replayed"] <= t * 2
    store = LocalStore(repaired_run)
    marker = _stage(repaired_run, 1, "train", "_COMMITTED.json")
    seconds = stage_seconds(store, "demo", 1)
    check = marker["summary"]["repair"]["check_seconds"]
    assert seconds["repair-check"] == pytest.approx(check, abs=1e-3)
    assert seconds["train"] == pytest.approx(marker["seconds"] - check, abs=1e-2)


@pytest.mark.slow
def test_interleaved_repair_adds_the_risen_rows_to_the_second_epoch(interleaved_run, demo_quick):
    run, _ = collect([demo_quick])
    t, slots = run.spec.train_budget, round(0.25 * run.spec.train_budget)
    selected = _stage(interleaved_run, 1, "cluster-select", "selection.json")["selected"]
    summary = _stage(interleaved_run, 1, "train", "_COMMITTED.json")["summary"]
    rep = summary["repair"]
    assert rep["placement"] == "interleaved" and rep["slots"] == slots and "replayed" not in rep
    assert 0 < rep["repaired"] <= slots and not set(rep["repaired_uids"]) & set(selected)
    # One training, its second epoch over the selection and the repaired rows: at most T distinct
    # samples and (T − R) × 2 + R passes.
    assert len(summary["loss"]) == 2 and summary["samples"] == len(selected)
    assert len(selected) + rep["repaired"] <= t
    seconds = stage_seconds(LocalStore(interleaved_run), "demo", 1)
    assert seconds["repair-check"] == pytest.approx(rep["check_seconds"], abs=1e-3) and rep["check_seconds"] > 0


@pytest.mark.slow
def test_loss_rise_tool_reports_each_skill_of_a_stored_step(repaired_run):
    out = repaired_run / "rise.npy"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "loss-rise.py"), str(repaired_run), "demo", "1",
                           "--model", str(repaired_run / "demo" / "base"), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "ADAPTINF_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    shard_uids = json.loads((repaired_run / layout.shard_prefix("demo", 1, 0, 1) / "uids.json").read_text())
    before, after = np.load(out)
    assert before.shape == after.shape == (len(shard_uids),)
    # The selected rows were trained on: their loss fell on average.
    selected = set(_stage(repaired_run, 1, "cluster-select", "selection.json")["selected"])
    chosen = np.array([u in selected for u in shard_uids])
    assert (after - before)[chosen].mean() < 0
    lines = done.stdout.splitlines()
    assert lines[0].startswith("skill") and any(" True " in line for line in lines[1:])


def test_the_table_counts_the_repair_checks_as_selection_and_says_so():
    def summary(strategy: str, seconds: dict[str, float]) -> dict:
        scores = [{"a": 0.5}, {"a": 0.6}]
        return {"run": "demo", "strategy": strategy,
                "steps": [{"step": t, "skills": s, "selected": 10, "seconds": seconds} for t, s in enumerate(scores)]}
    runs = {"sequential": {0: summary("sequential", {"train": 2.0})},
            "x": {0: summary("x", {"extract": 1.0, "prune": 1.0, "train": 4.0})},
            "x@repair": {0: summary("x@repair", {"extract": 1.0, "prune": 1.0, "repair-check": 2.0, "train": 4.0})}}
    rows = {r["strategy"]: r for r in report.build_table(runs)}
    assert rows["x"]["selection_train_ratio"] == pytest.approx(0.5)
    assert rows["x@repair"]["selection_train_ratio"] == pytest.approx(1.0)
    md = report.table_markdown(list(rows.values()))
    assert "counts the repair pass's loss checks" in md and "x@repair 2.0 s" in md and "x 0.0" not in md
    assert "count the selection only, not the up to R repaired rows" in md
