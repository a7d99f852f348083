"""The local backend end to end on the quick demo stream: summary.json, pool manifests and
MLflow runs of a reduced lifelong run (3 steps of Lite-Adapt-∞ on CPU)."""
from __future__ import annotations

import json
import logging

import pytest

from adaptinf import layout
from adaptinf.data.pool import load_pool
from adaptinf.runner import collect, run_local
from adaptinf.store import LocalStore

pytestmark = pytest.mark.slow

STEPS = 3


# An HF token in the run's environment (as a Secret provides it on a cluster): it must reach no
# MLflow param, tag, artifact, store file or log line (test_the_hf_token_is_never_written).
HF_TOKEN = "hf_" + "x7Kq2" * 8
LOG_LINES: list[str] = []   # what the fixture's run logged


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def finished_run(demo_quick, tmp_path_factory):
    run, datasets = collect([demo_quick])
    workdir = tmp_path_factory.mktemp("work")
    rows = []
    lines, root = _Lines(), logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HF_TOKEN", HF_TOKEN)
            summary = run_local(run, datasets[:STEPS], workdir, progress=False, on_step=rows.append)
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    LOG_LINES[:] = lines.lines
    return run, datasets[:STEPS], workdir, summary, rows


def _lines(path) -> int:
    return sum(1 for line in open(path) if line.strip())


def test_summary_follows_the_contract(finished_run):
    run, datasets, workdir, summary, rows = finished_run
    on_disk = json.loads((workdir / run.name / "summary.json").read_text())
    assert on_disk == summary and summary["run"] == "demo" and summary["strategy"] == "lite-adapt-inf"
    steps = summary["steps"]
    assert [s["step"] for s in steps] == list(range(STEPS)) and rows == steps
    assert [s["dataset"] for s in steps] == [d.name for d in datasets]
    T, D = run.spec.train_budget, run.spec.pool_budget
    sizes = [_lines(d.resolved_spec().source) for d in datasets]
    # The candidate pool is last step's pool plus the whole new dataset; after prune it fits D.
    assert steps[0]["candidate_pool"] == sizes[0]
    for prev, cur, n in zip(steps, steps[1:], sizes[1:]):
        assert cur["candidate_pool"] == prev["pool_size"] + n
    for s in steps:
        assert s["pool_size"] == min(s["candidate_pool"], D)
        assert s["pruned"] == s["candidate_pool"] - s["pool_size"]
    assert steps[0]["selected"] == sizes[0]  # initial instruction tuning on the first dataset
    assert all(s["selected"] == T for s in steps[1:])
    suite = {t.skill for t in run.spec.eval.suite}
    for s in steps:
        # Every skill, also those absent from later datasets, is measured after every step.
        assert set(s["skills"]) == suite
        assert all(0.0 <= v <= 1.0 for v in s["skills"].values())
        assert s["avg_acc"] == pytest.approx(sum(s["skills"].values()) / len(suite))
        assert s["forgetting_rate"] >= 0.0
        assert set(s["seconds"]) == set(layout.STAGES) and all(v >= 0 for v in s["seconds"].values())
        assert s["k"] >= run.spec.clustering.k_min
    # Forgetting as defined in docs/method.md §11 (S×T denominator), recomputed from the per-step
    # scores, and the variant over taught pairs (previous score > 0) only.
    drops = [max(a[k] - b[k], 0) / a[k] * 100 for a, b in zip([s["skills"] for s in steps],
             [s["skills"] for s in steps[1:]]) for k in a if a[k] > 0]
    assert summary["final"]["forgetting_rate"] == pytest.approx(sum(drops) / (len(suite) * (STEPS - 1)))
    assert summary["final"]["forgetting_rate_taught"] == pytest.approx(sum(drops) / len(drops) if drops else 0.0)
    assert steps[-1]["forgetting_rate"] == pytest.approx(summary["final"]["forgetting_rate"])
    assert summary["final"]["avg_acc"] == pytest.approx(steps[-1]["avg_acc"])


def test_pool_manifests_record_every_step_and_pruned_sample(finished_run):
    run, datasets, workdir, summary, _ = finished_run
    store = LocalStore(workdir)
    pools = [load_pool(store, run.name, t) for t in range(STEPS)]
    for pool, row in zip(pools, summary["steps"]):
        assert len(pool.members) == row["pool_size"] and len(set(pool.members)) == len(pool.members)
    last = pools[-1]
    assert [s.name for s in last.sources] == [d.name for d in datasets]
    assert len(last.pruned) == sum(s["pruned"] for s in summary["steps"]) > 0
    pruned = {p.uid for p in last.pruned}
    assert not pruned & set(last.members)
    # Each pruned sample names its cluster and its most similar sample that was kept at the time.
    assert all(p.reason and p.cluster is not None and p.nearest not in (None, p.uid) for p in last.pruned)
    # Selections only ever name pool members of their step.
    for t in range(1, STEPS):
        sel = store.read_json(f"{layout.stage_prefix(run.name, t, 'cluster-select')}/selection.json")
        candidates = set(pools[t - 1].members) | {u for u in sel["selected"] if u.startswith(datasets[t].name)}
        assert set(sel["selected"]) <= candidates
        assert len(sel["report"]["clusters"]) == sel["report"]["k"]


def test_mlflow_parent_and_child_runs(finished_run):
    from mlflow.tracking import MlflowClient
    run, _, workdir, summary, _ = finished_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(run.spec.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`adaptinf.run` = '{run.name}'")
    parents = [r for r in runs if r.data.tags["adaptinf.step"] == "parent"]
    children = sorted((r for r in runs if r.data.tags["adaptinf.step"] != "parent"),
                      key=lambda r: int(r.data.tags["adaptinf.step"]))
    assert len(parents) == 1 and len(children) == STEPS
    parent = parents[0]
    assert parent.data.params["trainBudget"] == str(run.spec.train_budget)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    history = client.get_metric_history(parent.info.run_id, "acc.colour")
    assert [m.step for m in history] == list(range(STEPS))
    assert [m.value for m in history] == pytest.approx([s["skills"]["colour"] for s in summary["steps"]])
    child = children[1]
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"selection_report.json", "skill_scores.png", "adapter", "eval_tasks.json"} <= names
    assert any(a.path.endswith("adapter_config.json") for a in client.list_artifacts(child.info.run_id, "adapter"))
    report = json.loads(open(client.download_artifacts(child.info.run_id, "selection_report.json")).read())
    assert report["k"] == summary["steps"][1]["k"] and report["selected"] == run.spec.train_budget
    # Every metric's step is the time step; the per-epoch losses have keys of their own.
    for key, value in (("candidate_pool_size", summary["steps"][1]["candidate_pool"]),
                       ("pool_after_prune", summary["steps"][1]["pool_size"])):
        assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, key)] == [(1, value)]
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")] == [1]
    epochs = client.get_metric_history(child.info.run_id, "train_loss_by_epoch")
    assert sorted(m.step for m in epochs) == list(range(run.spec.training.epochs))
    assert run.spec.model.initial_tuning == "full"  # the demo's: step 0 logs its initial tuning too
    first = client.get_metric_history(children[0].info.run_id, "initial_tuning_loss")
    assert [m.step for m in first] == [0]
    assert all(c["scorer"] in run.spec.scorers for c in report["clusters"] if c["scorer"])


def test_rerun_is_a_no_op(finished_run):
    """Finished stages are not run again: same summary, no new MLflow runs."""
    from mlflow.tracking import MlflowClient
    run, datasets, workdir, summary, _ = finished_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(run.spec.mlflow.experiment)
    before = len(client.search_runs([exp.experiment_id]))
    rows = []
    again = run_local(run, datasets, workdir, progress=False, on_step=rows.append)
    assert again["steps"] == summary["steps"]
    assert rows == summary["steps"]  # each step's own row (before: the last row once per step)
    assert len(client.search_runs([exp.experiment_id])) == before


def test_run_local_command_prints_the_step_table(demo_quick, tmp_path, capsys):
    """The quick start's command itself: one table row per step, the final line, where things are."""
    import logging

    from adaptinf.cli import main
    files = [str(demo_quick / "lifelongrun.yaml"), *map(str, sorted((demo_quick / "datasets").glob("*.yaml"))[:2])]
    level = logging.getLogger("adaptinf").level
    try:
        assert main(["run-local", *files, "--workdir", str(tmp_path), "--no-mlflow", "--no-progress"]) == 0
    finally:
        logging.getLogger("adaptinf").setLevel(level)   # the command quiets the library's logs
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("step | dataset"))
    rows = [line.split(" | ") for line in out[header + 1:header + 3]]
    assert [(r[0], r[1]) for r in rows] == [("0", "demo-00-basics"), ("1", "demo-01-spatial")]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert float(rows[1][6]) == pytest.approx(summary["steps"][1]["avg_acc"], abs=5e-4)
    assert any(line.startswith("final: avg_acc") for line in out)
    assert f"summary: {tmp_path / 'demo' / 'summary.json'}" in out
    # Third-party INFO lines (matplotlib's font cache on the first plot) stay out of the table.
    assert logging.getLogger("matplotlib.font_manager").getEffectiveLevel() >= logging.WARNING


def test_multitask_trains_once_on_all_data_at_the_last_step(demo_quick, tmp_path):
    """multitask "in one go": step 0 (initial tuning), then the middle step only joins the pool,
    and the last step trains once on the union of every dataset and is the only later eval."""
    run, datasets = collect([demo_quick])
    datasets = datasets[:STEPS]
    summary = run_local(run, datasets, tmp_path, strategy="multitask", tracking=False, progress=False)
    assert summary["joint"] is True and [s["step"] for s in summary["steps"]] == [0, STEPS - 1]
    last = summary["steps"][-1]
    assert last["selected"] == last["candidate_pool"] == sum(_lines(d.resolved_spec().source) for d in datasets)
    store = LocalStore(tmp_path)
    for t in range(1, STEPS - 1):   # joined: ingested and in the pool, never trained or evaluated
        assert store.is_committed(layout.stage_prefix(run.name, t, "ingest"))
        assert not store.is_committed(layout.stage_prefix(run.name, t, "train"))
        assert not store.is_committed(layout.stage_prefix(run.name, t, "eval"))
        assert len(load_pool(store, run.name, t).members) == sum(_lines(d.resolved_spec().source)
                                                                 for d in datasets[:t + 1])
    # The one training continued step 0's adapter on everything, for the spec's epochs.
    train = store.read_marker(layout.stage_prefix(run.name, STEPS - 1, "train"))["summary"]
    assert train["samples"] == last["selected"] and len(train["loss"]) == run.spec.training.epochs
    from adaptinf.runner import report
    seq = {"steps": [summary["steps"][0]], "run": "demo"}
    figures = report.run_figures(summary, seq)
    assert figures["forgetting_rate"] is None and figures["forgetting_rate_taught"] is None
    assert [t for t, _ in report.curve(summary)] == [0, STEPS - 1]


def _first_text_eval(run, workdir, step: int) -> tuple[str, str]:
    """The first prompt of the text-only eval task and what the step's eval answered to it."""
    task = next(t for t in run.resolved_spec().eval.suite if t.skill == "arithmetic")
    first = json.loads(open(task.path).readline())
    metrics = LocalStore(workdir).read_json(f"{layout.stage_prefix(run.name, step, 'eval')}/metrics.json")
    return first["conversations"][0]["value"], metrics["tasks"]["arithmetic"]["examples"][0]["pred"]


def test_adapters_are_registered_under_the_run_name(finished_run):
    """One registry version per step, tagged with its step, dataset and base; `current` is the
    newest, and its pyfunc model answers as the step's own eval did."""
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient
    run, datasets, workdir, summary, _ = finished_run
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    versions = sorted(client.search_model_versions(f"name = '{run.name}'"), key=lambda v: int(v.version))
    assert [v.tags["adaptinf.step"] for v in versions] == [str(t) for t in range(STEPS)]
    assert [v.tags["adaptinf.dataset"] for v in versions] == [d.name for d in datasets]
    base = LocalStore(workdir).uri(f"{run.name}/base")   # the demo's initially tuned base
    assert all(v.tags["adaptinf.base"] == base and "adaptinf.revision" not in v.tags for v in versions)
    current = client.get_model_version_by_alias(run.name, "current")
    assert current.version == versions[-1].version
    children = {r.data.tags["adaptinf.step"]: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name(run.spec.mlflow.experiment).experiment_id],
        filter_string=f"tags.`adaptinf.run` = '{run.name}'")}
    assert [v.run_id for v in versions] == [children[str(t)] for t in range(STEPS)]
    prompt, answered = _first_text_eval(run, workdir, STEPS - 1)
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{run.name}@current")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.predict([prompt]) == [answered]


def test_the_hf_token_is_never_written(finished_run):
    """Not in the MLflow store (params, tags, metrics: the sqlite file), its artifacts (the
    registered models too), the run's store files, summary.json or the log."""
    _, _, workdir, summary, _ = finished_run
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any(p.name == "MLmodel" for p in files)
    assert [p for p in files if HF_TOKEN.encode() in p.read_bytes()] == []
    assert HF_TOKEN not in json.dumps(summary)
    assert LOG_LINES and not [line for line in LOG_LINES if HF_TOKEN in line]
