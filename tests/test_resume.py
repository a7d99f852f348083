"""Resuming a workdir follows what the user asked, or refuses; an all-rejected dataset is a
recorded, skipped step on every run; one run per workdir at a time."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adaptinf import layout
from adaptinf.cli import main as cli
from adaptinf.runner import collect, run_local
from adaptinf.runner.lock import LOCK_NAME, workdir_lock
from adaptinf.runner.resume import ResumeRefused
from adaptinf.store import LocalStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv(q: str, a: str) -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.fixture
def bad_stream(demo_quick, tmp_path):
    """The demo LifelongRun with two datasets of its own: `bad` (every record rejected) and `good`."""
    run = yaml.safe_load((demo_quick / "lifelongrun.yaml").read_text())
    run["spec"]["model"]["base"] = str(demo_quick / "model")
    run["spec"]["eval"]["suite"] = run["spec"]["eval"]["suite"][:1]
    for task in run["spec"]["eval"]["suite"]:
        task["path"], task["imageRoot"] = str(demo_quick / task["path"]), str(demo_quick)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    for name in ("bad", "good"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset", "metadata": {"name": name},
            "spec": {"run": run["metadata"]["name"], "source": f"{name}.jsonl"}}))
    bad = [{"id": f"b{i}", "conversations": conv("q", " ")} for i in range(3)]  # empty answers
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    good = [{"id": f"g{i}", "conversations": conv(f"{i}+1?", str(i + 1))} for i in range(6)]
    (tmp_path / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    return tmp_path


def files(root: Path, *names: str) -> list[str]:
    return [str(root / "run.yaml"), *(str(root / f"{n}.yaml") for n in names)]


def test_all_rejected_dataset_is_a_skipped_step_on_every_run_until_fixed(bad_stream, capsys):
    work = bad_stream / "work"
    run, datasets = collect(files(bad_stream, "bad"))
    rows: list[dict] = []
    # Before: StoreError ".../summary.json does not exist" on the first run.
    first = run_local(run, datasets, work, tracking=False, progress=False, on_step=rows.append)
    assert first["steps"] == [] and [f["step"] for f in first["failed_steps"]] == [0]
    assert rows == [{**first["failed_steps"][0], "skipped": True}]
    # Before: the second run trained step 0 over the (empty) old pool and reported it as a step.
    again = run_local(run, datasets, work, tracking=False, progress=False)
    assert again["steps"] == [] and [f["step"] for f in again["failed_steps"]] == [0]
    store = LocalStore(work)
    assert not store.exists(layout.pool_key(run.name, 0))
    assert not store.is_committed(layout.stage_prefix(run.name, 0, "train"))

    # The source fixed in place: the same step now takes the fixed data.
    shutil.copy(bad_stream / "good.jsonl", bad_stream / "bad.jsonl")
    fixed = run_local(run, datasets, work, tracking=False, progress=False)
    assert [r["step"] for r in fixed["steps"]] == [0] and fixed["failed_steps"] == []
    assert store.read_marker(layout.stage_prefix(run.name, 0, "ingest"))["summary"] == {"accepted": 6, "rejected": 0}
    assert len(store.read_json(layout.pool_key(run.name, 0))["members"]) == 6

    # A re-run prints each step's own row from summary.json (before: the last row once per step).
    capsys.readouterr()
    assert cli(["run-local", *files(bad_stream, "bad"), "--workdir", str(work), "--no-mlflow", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("step | dataset"))
    assert out[header + 1].split(" | ")[:3] == ["0", "bad", "6"]


def test_a_fixed_source_is_not_slipped_in_behind_later_steps(bad_stream):
    """Step 0 skipped (all rejected), step 1 built over the pool without it; then step 0's source
    is fixed. Before: the next run trained step 0 on the fixed data behind step 1 (whose pool and
    adapter lack it) while summary.json looked like an uninterrupted run."""
    work = bad_stream / "work"
    run, datasets = collect(files(bad_stream, "bad", "good"))
    first = run_local(run, datasets, work, tracking=False, progress=False)
    assert [r["step"] for r in first["steps"]] == [1] and [f["step"] for f in first["failed_steps"]] == [0]
    store = LocalStore(work)
    pool_1 = store.read_json(layout.pool_key(run.name, 1))

    shutil.copy(bad_stream / "good.jsonl", bad_stream / "bad.jsonl")
    again = run_local(run, datasets, work, tracking=False, progress=False)
    assert again["steps"] == first["steps"] and [f["step"] for f in again["failed_steps"]] == [0]
    assert not store.exists(layout.pool_key(run.name, 0))
    assert not store.is_committed(layout.stage_prefix(run.name, 0, "train"))
    assert store.read_json(layout.pool_key(run.name, 1)) == pool_1

    # The way the message names: run again from step 0; step 1's pool then holds step 0's data.
    redone = run_local(run, datasets, work, tracking=False, progress=False, restart_from=0)
    assert [r["step"] for r in redone["steps"]] == [0, 1] and redone["failed_steps"] == []
    members = store.read_json(layout.pool_key(run.name, 1))["members"]
    assert {m.split("/")[0] for m in members} == {"bad", "good"}


def test_a_different_request_is_refused_naming_the_fields_and_the_ways_out(bad_stream, capsys):
    work = bad_stream / "work"
    args = ["run-local", *files(bad_stream, "bad"), "--workdir", str(work), "--no-mlflow", "--no-progress"]
    assert cli(args) == 0  # step 0 recorded (skipped: every record is bad)
    capsys.readouterr()

    # --strategy on the command line: before, it printed "strategy random" and ran the old one.
    assert cli(args + ["--strategy", "random"]) == 2
    out, err = capsys.readouterr()
    assert "strategy random" not in out and "Traceback" not in err
    assert "step 0: run.strategy: 'lite-adapt-inf' in the workdir, 'random' requested" in err
    assert "--continue-anyway" in err and "--restart-from 0" in err

    # An edited YAML: before, the step's inputs.json won without a word.
    spec = yaml.safe_load((bad_stream / "bad.yaml").read_text())
    spec["spec"]["source"] = "good.jsonl"
    (bad_stream / "bad.yaml").write_text(yaml.safe_dump(spec))
    run, datasets = collect(files(bad_stream, "bad"))
    with pytest.raises(ResumeRefused, match=r"dataset\.source: '.*bad\.jsonl' in the workdir, '.*good\.jsonl'"):
        run_local(run, datasets, work, tracking=False, progress=False)

    # Continue anyway: the started step keeps its recorded spec (still the bad source, still skipped).
    kept = run_local(run, datasets, work, tracking=False, progress=False, continue_anyway=True)
    assert [f["step"] for f in kept["failed_steps"]] == [0]
    # Restart from step 0: the step is redone with the requested spec (the good source).
    redone = run_local(run, datasets, work, tracking=False, progress=False, restart_from=0, strategy="random")
    assert [r["step"] for r in redone["steps"]] == [0] and redone["strategy"] == "random"
    inputs = LocalStore(work).read_json(layout.inputs_key(run.name, 0))
    assert inputs["run_spec"]["strategy"] == "random" and inputs["dataset_spec"]["source"].endswith("good.jsonl")
    # And now the same request resumes without a word.
    assert run_local(run, datasets, work, tracking=False, progress=False, strategy="random")["steps"] == redone["steps"]


def test_a_workdir_from_before_a_new_spec_field_resumes(bad_stream):
    """A field added in a later version (strategyOptions) is absent from older inputs.json files:
    it counts as its default, so the workdir resumes instead of being refused."""
    work = bad_stream / "work"
    run, datasets = collect(files(bad_stream, "bad"))
    run_local(run, datasets, work, tracking=False, progress=False)
    store = LocalStore(work)
    inputs = store.read_json(layout.inputs_key(run.name, 0))
    assert inputs["run_spec"].pop("strategyOptions") == {}
    store.write_json(layout.inputs_key(run.name, 0), inputs)
    again = run_local(run, datasets, work, tracking=False, progress=False)
    assert [f["step"] for f in again["failed_steps"]] == [0]
    # A real difference is still one.
    with pytest.raises(ResumeRefused, match=r"run\.strategyOptions\.fraction: None in the workdir, 0\.5"):
        run_local(run.model_copy(update={"spec": run.spec.model_copy(
            update={"strategy": "replay", "strategy_options": {"fraction": 0.5}})}),
            datasets, work, tracking=False, progress=False)


def test_a_second_run_on_a_locked_workdir_says_who_holds_it(bad_stream, capsys):
    work = bad_stream / "work"
    args = ["run-local", *files(bad_stream, "bad"), "--workdir", str(work), "--no-mlflow", "--no-progress"]
    with workdir_lock(work):
        assert cli(args) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started " in err and "Traceback" not in err
    assert not (work / "demo").exists()  # the refused run wrote nothing


def test_the_lock_of_a_dead_process_is_taken_over(bad_stream):
    work = bad_stream / "work"
    work.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (work / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0}))
    run, datasets = collect(files(bad_stream, "bad"))
    assert run_local(run, datasets, work, tracking=False, progress=False)["failed_steps"]
    assert (work / LOCK_NAME).read_text() == ""  # released


def test_parent_mlflow_run_is_failed_when_the_run_stops_on_an_exception(bad_stream, monkeypatch):
    from mlflow.tracking import MlflowClient

    import adaptinf.stages.registry as registry
    work = bad_stream / "work"
    run, datasets = collect(files(bad_stream, "good"))

    def crashing(name):
        def stage(ctx):
            ctx.tracker.step_id(ctx.step, ctx.dataset)  # the parent and the step's child exist
            raise RuntimeError("boom")
        return stage

    monkeypatch.setattr(registry, "stage_function", crashing)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError, match="boom"):
        run_local(run, datasets, work, progress=False)
    parent = json.loads((work / run.name / "mlflow.json").read_text())["parent_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    assert client.get_run(parent).info.status == "FAILED"


def test_the_refusal_lists_each_difference_once_and_suite_entries_by_index():
    """An edited run spec differs at every started step: one line for all of them (before: one
    line per step, and '…' once per step past the limit); a moved eval file names its entry."""
    from adaptinf.runner.resume import MAX_LISTED, differences, refusal
    suite = [{"skill": "a", "path": "old/a.jsonl"}, {"skill": "b", "path": "old/b.jsonl"}]
    moved = [{"skill": "a", "path": "old/a.jsonl"}, {"skill": "b", "path": "new/b.jsonl"}]
    assert differences({"eval": {"suite": suite}}, {"eval": {"suite": moved}}) == [
        "eval.suite[1].path: 'old/b.jsonl' in the workdir, 'new/b.jsonl' requested"]
    text = refusal("W", "demo", {0: ["run.seed: 0 in the workdir, 3 requested"],
                                 1: ["run.seed: 0 in the workdir, 3 requested"],
                                 3: ["run.seed: 0 in the workdir, 3 requested", "dataset: 'x' in the workdir, 'y' requested"]})
    assert "  steps 0, 1, 3: run.seed: 0 in the workdir, 3 requested" in text.splitlines()
    assert "  step 3: dataset: 'x' in the workdir, 'y' requested" in text.splitlines()
    assert "--restart-from 0" in text
    many = {s: [f"run.f{i}: 0 in the workdir, 1 requested" for i in range(MAX_LISTED + 2)] for s in range(3)}
    lines = refusal("W", "demo", many).splitlines()
    assert sum(line.startswith("  steps 0-2: ") for line in lines) == MAX_LISTED
    assert [line for line in lines if "…" in line] == ["  … and 2 more"]
