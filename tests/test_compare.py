"""`adaptinf compare`: the table's figures as defined (docs/method.md §11) and a --quick run end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptinf import layout
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


def test_no_relative_gain_without_a_positive_sequential_score():
    seq = {0: _summary("sequential", [{"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0}])}
    rnd = {0: _summary("random", [{"a": 0.0, "b": 0.0}, {"a": 0.5, "b": 0.0}])}
    rows = {r["strategy"]: r for r in report.build_table({"sequential": seq, "random": rnd})}
    assert rows["random"]["relative_gain"] is None and rows["random"]["avg_acc"] == pytest.approx(0.25)
    assert "| random | – |" in report.table_markdown(list(rows.values()))


def test_table_needs_sequential_for_every_seed():
    with pytest.raises(ValueError, match="sequential"):
        report.build_table({"random": RND})
    with pytest.raises(ValueError, match="seed"):
        report.build_table({"sequential": {0: SEQ[0]}, "random": RND})


def _runs(strategy: str, seeds: range, shift: float) -> dict[int, dict]:
    """Seeded runs whose scores differ per seed and strategy; step 0 shared per seed."""
    out = {}
    for seed in seeds:
        start = {"a": 0.5 + 0.05 * seed, "b": 0.1}
        steps = [start, {"a": 0.4 + shift, "b": 0.3 + 0.07 * seed}, {"a": 0.3 + shift / 2, "b": 0.5 + shift + 0.03 * seed}]
        run = _summary(strategy, steps)
        for step in run["steps"][1:]:
            step["seconds"] = {"extract": 2.0 + seed, "prune": 1.0, "train": 3.0 + shift * seed}
        out[seed] = run
    return out


def _assert_close(got, want, where: str) -> None:
    """Equal up to float rounding, all the way down."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for k in want:
            _assert_close(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where
    else:
        assert got == want, where


def test_merged_tables_equal_one_table_over_all_seeds(tmp_path, capsys):
    """`compare --seeds 0-1` then `--seeds 2-5`, merged, is the table of `--seeds 6`."""
    from adaptinf.cli import main
    from adaptinf.runner.pooled import pool_tables
    shifts = {"sequential": 0.0, "random": 0.1, "x": 0.25, "x@v": 0.2}
    runs = {name: _runs(name, range(6), shift) for name, shift in shifts.items()}
    whole = report.build_table(runs)
    halves = [report.build_table({n: {s: r[s] for s in seeds} for n, r in runs.items()}) for seeds in (range(2), range(2, 6))]
    # Through JSON, as the tables are read from table.json.
    merged = pool_tables([json.loads(json.dumps(h)) for h in halves])
    assert [r["strategy"] for r in merged] == [r["strategy"] for r in whole]
    for got, want in zip(merged, json.loads(json.dumps(whole))):
        _assert_close(got, want, got["strategy"])   # every key: figures, seconds, CIs, vs_plain
    assert next(r for r in merged if r["strategy"] == "x@v")["vs_plain"]["seeds"] == 6
    # The command: out folders in, one table out; overlapping seeds are refused, naming them.
    for i, rows in enumerate(halves):
        (tmp_path / f"part{i}").mkdir()
        (tmp_path / f"part{i}" / "table.json").write_text(json.dumps(rows))
    assert main(["compare-merge", str(tmp_path / "part0"), str(tmp_path / "part1"), "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "table.json").read_text()) == json.loads(json.dumps(merged))
    assert "seeds 0, 1)" in (tmp_path / "m" / "table.md").read_text()
    capsys.readouterr()
    assert main(["compare-merge", str(tmp_path / "part0"), str(tmp_path / "part0"), "--out", str(tmp_path / "n")]) == 2
    assert "seed(s) [0, 1] are in more than one table" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare-merge", str(tmp_path / "part0"), str(tmp_path / "bad.json"), "--out", str(tmp_path / "n")]) == 2
    assert "bad.json: not the table.json of `adaptinf compare`" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in halves[1]]))
    assert main(["compare-merge", str(tmp_path / "part0"), str(tmp_path / "bad.json"), "--out", str(tmp_path / "n")]) == 2
    assert "rows with final_skills, per_seed, seconds" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()


def test_seeds_flag_takes_a_count_a_range_or_a_list(capsys):
    from adaptinf.cli import build_parser
    parse = build_parser().parse_args
    assert parse(["compare", "--out", "o"]).seeds == (0, 1, 2)
    assert parse(["compare", "--out", "o", "--seeds", "5"]).seeds == (0, 1, 2, 3, 4)
    assert parse(["compare", "--out", "o", "--seeds", "3-4"]).seeds == (3, 4)
    assert parse(["compare", "--out", "o", "--seeds", "3,7"]).seeds == (3, 7)
    for bad in ("0", "x", "4-3", "3,3"):
        with pytest.raises(SystemExit):
            parse(["compare", "--out", "o", "--seeds", bad])
        assert f"'{bad}'" in capsys.readouterr().err


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
    # 3 of the quick stream's 5 datasets: two selection steps keep every figure defined and
    # halve the test's cost. Random's paired differences are checked on the user stream below.
    assert main(["compare", "--out", str(out), "--quick", "--seeds", "2", "--strategies", "lite-adapt-inf",
                 "--steps", "3", "--jobs", "2", "--no-progress"]) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "table.json").read_text())}
    assert set(rows) == {"sequential", "lite-adapt-inf"}
    for r in rows.values():
        assert r["seeds"] == [0, 1]
        assert 0 <= r["avg_acc"] <= 1 and r["forgetting_rate"] >= 0 and r["relative_gain"] >= 0
    # Recompute one figure from the runs' own summary.json files, as defined in adaptinf.metrics.
    for seed in (0, 1):
        seq = json.loads((out / "runs" / "sequential" / f"seed-{seed}" / "demo" / "summary.json").read_text())
        lite = json.loads((out / "runs" / "lite-adapt-inf" / f"seed-{seed}" / "demo" / "summary.json").read_text())
        hist = [s["skills"] for s in lite["steps"]]
        assert len(hist) == 3
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
    assert [q["step"] for q in quality] == [1, 2] and all(0 <= q["nmi"] <= 1 for q in quality)
    for mix in meta["skill_mix"].values():
        assert sum(mix["selected"].values()) == pytest.approx(1) and sum(mix["pool"].values()) == pytest.approx(1)
        assert set(mix["selected"]) <= set(mix["pool"])   # nothing selected from outside the pool
    assert "Share of each skill" in md
    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    parent = client.get_run(meta["mlflow_run_id"])
    assert parent.data.metrics["lite-adapt-inf.relative_gain"] == pytest.approx(rows["lite-adapt-inf"]["relative_gain"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4   # 2 strategies × 2 seeds
    history = client.get_metric_history(children[0].info.run_id, "avg_acc")
    assert sorted(m.step for m in history) == [0, 1, 2]
    # Run again: every run resumes (nothing is retrained) and the table says so instead of
    # presenting this invocation's few seconds as the comparison's cost.
    assert main(["compare", "--out", str(out), "--quick", "--seeds", "2", "--strategies", "lite-adapt-inf",
                 "--steps", "3", "--jobs", "2", "--no-progress", "--no-mlflow"]) == 0
    assert json.loads((out / "table.json").read_text()) == list(rows.values())
    assert "resumed 4 of 4 runs begun by an earlier one" in (out / "table.md").read_text()


# ---- compare on the user's own stream --------------------------------------------------

def _user_stream(demo: Path, out: Path, eval_suite: bool = True, datasets: int = 3) -> list[str]:
    """A stream laid out as a user would: their own run name, YAMLs in two folders, records
    without `skill` labels (copied from the quick demo), absolute paths to model and images."""
    import yaml
    (out / "data").mkdir(parents=True)
    files = []
    for i, src in enumerate(sorted((demo / "datasets").glob("*.jsonl"))[:datasets]):
        rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
        for r in rows:
            r.pop("skill", None)
        (out / "data" / f"part{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        doc = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset", "metadata": {"name": f"mine-{i}"},
               "spec": {"run": "mine", "source": f"part{i}.jsonl", "imageRoot": str(demo), "order": i}}
        (out / "data" / f"part{i}.yaml").write_text(yaml.safe_dump(doc))
        files.append(str(out / "data" / f"part{i}.yaml"))
    suite = [{"skill": s, "path": str(demo / "eval" / f"{s}.jsonl"), "imageRoot": str(demo), "metric": "exact_match"}
             for s in ("colour", "count", "shape")] if eval_suite else []
    run = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "mine"},
           # A short recipe (the user's choice; what is tested is the comparison, not learning).
           "spec": {"model": {"base": str(demo / "model"), "initialTuning": "full", "initialEpochs": 3},
                    "strategy": "random", "trainBudget": 40, "training": {"epochs": 1, "learningRate": 5e-3},
                    "eval": {"suite": suite, "maxNewTokens": 8}, "storage": {"uri": "artifacts"}}}
    (out / "run.yaml").write_text(yaml.safe_dump(run))
    return [str(out / "run.yaml"), *files]


def _error(capsys, argv: list[str]) -> str:
    from adaptinf.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_compare_rejects_bad_inputs_with_clear_errors(demo_quick, tmp_path, capsys):
    files = _user_stream(demo_quick, tmp_path / "s")
    out = ["--out", str(tmp_path / "o"), "--no-mlflow", "--no-progress"]
    assert "no-such.yaml: no such file" in _error(capsys, ["compare", str(tmp_path / "no-such.yaml"), *out])
    assert "exactly one LifelongRun" in _error(capsys, ["compare", *files[1:], *out])
    assert "has only 3 dataset(s)" in _error(capsys, ["compare", *files, "--steps", "7", *out])
    assert "trainBudget (T=50) must not exceed poolBudget (D=20)" in _error(
        capsys, ["compare", *files, "--train-budget", "50", "--pool-budget", "20", *out])
    assert "--eval-samples must be at least 1" in _error(capsys, ["compare", *files, "--eval-samples", "0", *out])
    assert "@proxy" in _error(capsys, ["compare", *files, "--strategies", "lite-adapt-inf@proxy", *out])
    assert "at least 2 datasets" in _error(capsys, ["compare", *files, "--steps", "1", *out])
    # Folders work as for run-local: the run's folder and the datasets' folder.
    from adaptinf.runner.streams import StreamSource, load_stream
    run, datasets = load_stream(StreamSource((str(tmp_path / "s"), str(tmp_path / "s" / "data")), steps=2))
    assert run.name == "mine" and [d.name for d in datasets] == ["mine-0", "mine-1"]
    nosuite = _user_stream(demo_quick, tmp_path / "n", eval_suite=False)
    assert "spec.eval.suite is empty" in _error(capsys, ["compare", *nosuite, *out])
    import yaml
    bad_model = _user_stream(demo_quick, tmp_path / "m")
    doc = yaml.safe_load(open(bad_model[0]))
    doc["spec"]["model"]["base"] = str(tmp_path / "no-model")
    open(bad_model[0], "w").write(yaml.safe_dump(doc))
    assert "spec.model.base: no such folder" in _error(capsys, ["compare", *bad_model, *out])
    assert not (tmp_path / "o" / "runs").exists()    # nothing ran


def test_eval_samples_flag_sizes_the_demo_eval_sets(tmp_path):
    """--eval-samples N: the demo stream writes N held-out records per skill (≥ 200 separates
    strategies a few points apart), and every strategy's spec caps eval.maxSamples at N."""
    from adaptinf.runner import streams
    from adaptinf.runner.compare import CompareConfig, resolve_stream
    cfg = CompareConfig(out=tmp_path, strategies=("random",), quick=True, modality="text", eval_samples=200)
    src = resolve_stream(cfg)
    run, _ = streams.configured(src)
    suite = run.resolved_spec().eval.suite
    assert len(suite) > 1 and run.spec.eval.max_samples == 200
    for task in suite:
        assert sum(1 for line in open(task.path) if line.strip()) == 200
    assert json.loads((tmp_path / "compare.json").read_text())["eval_samples"] == 200


@pytest.mark.slow
def test_compare_on_a_user_stream(demo_quick, tmp_path, capsys):
    """The same comparison on the user's YAMLs, model and data: 2 strategies × 2 seeds, with
    the size flags; multitask trains once, at the last step, on everything."""
    from mlflow.tracking import MlflowClient

    from adaptinf.cli import main
    files = _user_stream(demo_quick, tmp_path / "s")
    out = tmp_path / "cmp"
    assert main(["compare", *files, "--out", str(out), "--seeds", "2", "--strategies", "random,multitask",
                 "--train-budget", "30", "--eval-samples", "8", "--jobs", "2", "--no-progress"]) == 0
    rows = {r["strategy"]: r for r in json.loads((out / "table.json").read_text())}
    assert set(rows) == {"sequential", "random", "multitask"}
    for r in rows.values():
        for key in ("relative_gain", "forgetting_rate", "avg_acc"):
            assert key in r and f"{key}_std" in r
    sizes = [sum(1 for _ in open(tmp_path / "s" / "data" / f"part{i}.jsonl")) for i in range(3)]
    for seed in (0, 1):
        runs = out / "runs"
        rnd = json.loads((runs / "random" / f"seed-{seed}" / "mine" / "summary.json").read_text())
        mt = json.loads((runs / "multitask" / f"seed-{seed}" / "mine" / "summary.json").read_text())
        assert [s["selected"] for s in rnd["steps"][1:]] == [30, 30]          # --train-budget
        assert mt["joint"] and [s["step"] for s in mt["steps"]] == [0, 2]
        assert mt["steps"][-1]["selected"] == sum(sizes)                     # one training on all data
        assert rnd["steps"][0]["skills"] == mt["steps"][0]["skills"]         # shared step 0 (paired)
        metrics = json.loads((runs / "random" / f"seed-{seed}" / layout.stage_prefix("mine", 2, "eval")
                              / "metrics.json").read_text())
        assert sorted(t["n"] for t in metrics["tasks"].values()) == [8, 8, 8]   # --eval-samples caps
    assert rows["multitask"]["forgetting_rate"] is None                       # the paper's "–"
    r = rows["random"]
    m = rows["multitask"]
    assert m["paired_seeds"] == 2
    # Final average accuracy is defined on every run (relative gain is not when sequential
    # learns nothing at this toy size), so the pairing is checked on it.
    diffs = [m["per_seed"][s]["avg_acc"] - r["per_seed"][s]["avg_acc"] for s in ("0", "1")]
    assert m["avg_acc_vs_random"] == pytest.approx(sum(diffs) / 2)
    assert m["avg_acc_vs_random_ci"] == pytest.approx(sorted(diffs))          # 2 seeds: the extremes
    assert m["forgetting_rate_vs_random"] is None
    md = (out / "table.md").read_text()
    assert "Paired difference to random" in md and "| multitask |" in md
    assert "NMI" not in md and "Share of each skill" not in md               # no skill labels to check against
    assert (out / "skills_over_time.png").stat().st_size > 10_000
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sizes"]["train_budget"] == 30 and meta["sizes"]["eval_samples"] == 8
    assert meta["stream"].startswith("stream of ")
    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    parent = client.get_run(meta["mlflow_run_id"])
    assert parent.data.metrics["multitask.avg_acc_vs_random"] == pytest.approx(m["avg_acc_vs_random"])
    assert "multitask.forgetting_rate" not in parent.data.metrics
    # A rerun with other sizes is refused instead of mixing runs of two streams.
    capsys.readouterr()
    err = _error(capsys, ["compare", *files, "--out", str(out), "--train-budget", "20", "--no-mlflow"])
    assert "train_budget" in err
