"""The benchmark scripts run end to end at toy sizes and print one JSON line with sane figures.

Each script is loaded from its path and its `main(argv)` called in-process (no second torch
import); the last stdout line must parse as JSON with the documented keys.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    returned = _load(name).main(argv)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines, f"bench/{name}.py printed nothing"
    printed = json.loads(lines[-1])
    assert printed == json.loads(json.dumps(returned))  # the printed line is the whole result
    assert printed["bench"] == name
    return printed


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_extract_bench(capsys: pytest.CaptureFixture[str], tmp_path: Path, restore_threads: None) -> None:
    out = _run("extract", ["--device", "cpu", "--threads", "1", "--hidden", "32", "--layers", "2",
                           "--vision-hidden", "32", "--vision-layers", "1", "--image-size", "16", "--patch", "8",
                           "--rank", "4", "--pool", "8,16", "--ref-samples", "4", "--batch-size", "8",
                           "--proj-dim", "64", "--workdir", str(tmp_path)], capsys)
    assert out["device"] == "cpu" and out["dtype"] == "float32"
    assert out["proj_dim"] == 64 and out["grad_dim"] > 64 and out["chosen_layer"] == 1
    assert out["fused_samples_per_s"] > 0 and out["reference_samples_per_s"] > 0 and out["speedup"] > 0
    # Equal results: the fused pass reproduces the batch-size-1 reference.
    assert out["max_abs_diff"] < 1e-4 and out["min_cosine"] > 0.9999
    for key in ("hidden_max_rel_diff", "perplexity_max_rel_diff", "image-grounding_max_rel_diff",
                "el2n_max_rel_diff", "entropy_max_rel_diff"):
        assert out[key] < 1e-4, key
    assert [m["pool"] for m in out["memory"]] == [8, 16]
    assert all(m["peak_mem_mb"] >= 0 and m["outputs_mb"] > 0 for m in out["memory"])
    assert out["gflop_per_sample_fused"] > 0 and out["fused_tflops"] > 0


def test_cluster_bench(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("cluster", ["--sizes", "1200x32,500x64", "--k-min", "3", "--k-max", "8", "--true-k", "5",
                           "--structureless", "400x16", "--threads", "1"], capsys)
    assert [(r["n"], r["d"]) for r in out["sizes"]] == [(1200, 32), (500, 64)]
    for row in out["sizes"]:
        assert all(3 <= row[k] <= 8 for k in ("k_full", "k_fast", "k_sklearn"))
        assert row["same_k"] == (row["k_full"] == row["k_fast"])
        assert row["selected"] == row["budget"] == row["n"] // 4
        assert row["full_sweep_s"] > 0 and row["fast_sweep_s"] > 0 and row["sklearn_sweep_s"] > 0
        assert -1 <= row["ari_fast"] <= 1 and row["wss_ratio_at_true_k"] > 0
        assert row["ari_gap"] == pytest.approx(row["ari_sklearn"] - row["ari_fast"], abs=1e-3)
        assert 1 <= row["fast_k_evaluated"] <= 6 and row["fast_sample_rows"] == row["n"]
    assert out["speedup"] == min(r["speedup"] for r in out["sizes"]) and out["speedup"] > 0
    assert out["speedup_vs_full"] == min(r["speedup_vs_full"] for r in out["sizes"])
    [flat] = out["structureless"]
    assert flat["data"] == "structureless" and set(flat) >= {"same_k_gain", "same_k_elbow"}


def test_prune_bench(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run("prune", ["--n", "2000", "--dim", "16", "--clusters", "5", "--keep", "0.6", "--threads", "1"], capsys)
    assert out["kept"] == out["target"] == 1200 and out["removed"] == 800
    assert out["seconds"] > 0 and out["removed_per_s"] > 0
    # Water-filling from the largest cluster down: the largest shrinks, none grows.
    assert out["largest_cluster_after"] < out["largest_cluster_before"]
    assert 0 < out["removed_max_sim_mean"] <= 1
    # The previous implementation ran on the same pool: the same removals, a positive ratio.
    assert out["same_removals"] is True and out["same_removed_set"] is True
    assert out["reference_removed_sha256"] == out["removed_sha256"] and out["speedup"] > 0


def test_step_overhead_arithmetic() -> None:
    """Selection/training ratio per step and over the selection steps (t ≥ 1) only."""
    summary = {"steps": [
        {"step": 0, "dataset": "a", "seconds": {"extract": 1.0, "cluster-select": 1.0, "train": 100.0, "eval": 5.0}},
        {"step": 1, "dataset": "b", "seconds": {"extract": 3.0, "cluster-select": 1.0, "prune": 1.0, "train": 10.0}},
        {"step": 2, "dataset": "c", "seconds": {"extract": 4.0, "train": 0.0}},
    ]}
    out = _load("step").overhead(summary)
    assert [s["ratio"] for s in out["steps"]] == [0.02, 0.5, None]
    assert out["selection_s"] == 9.0 and out["train_s"] == 10.0 and out["ratio"] == 0.9


def test_step_refresh_policies_are_parsed_into_extract_fields() -> None:
    parse = _load("step").policies
    assert parse("every-step,every-n-steps:3,fraction:0.25") == [
        {"refresh": "every-step"}, {"refresh": "every-n-steps", "refreshEvery": 3},
        {"refresh": "fraction", "refreshFraction": 0.25}]
    for bad in ("every-n-steps", "sometimes", "fraction:x"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad.split(":")[0]):
            parse(bad)


@pytest.mark.slow
def test_step_bench_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path, restore_threads: None) -> None:
    """The quick demo stream's first two datasets through the local runner (~30 s on 2 cores)."""
    out = _run("step", ["--size", "quick", "--steps", "2", "--threads", "1", "--projection-dim", "256",
                        "--workdir", str(tmp_path)], capsys)
    assert out["datasets"] == 2 and out["projection_dim"] == 256 and out["strategy"] == "lite-adapt-inf"
    assert [s["step"] for s in out["steps"]] == [0, 1]
    assert all(s["seconds"]["train"] > 0 and s["seconds"]["extract"] > 0 for s in out["steps"])
    assert out["ratio"] is not None and out["ratio"] > 0 and out["train_s"] > 0


def test_feature_layers_bench(capsys: pytest.CaptureFixture[str], restore_threads: None) -> None:
    out = _run("feature_layers", ["--device", "cpu", "--threads", "1", "--samples", "8", "--batch-size", "4",
                                  "--proj-dim", "64", "--repeat", "1", "--new", "50", "--budget", "10",
                                  "--epochs", "2"], capsys)
    assert out["samples"] == 8 and out["layers"] == 6 and out["train_s_per_sample_epoch"] > 0
    assert out["floor_for"] == {"new": 50, "budget": 10, "epochs": 2}
    for name in ("middle", "last", "no-grads"):
        row = out[name]
        assert row["s_per_row"] > 0, name
        assert row["row_vs_trained_sample"] == pytest.approx(row["s_per_row"] / out["train_s_per_sample_epoch"],
                                                             rel=0.01, abs=2e-3), name
        # The floor of a step's ratio: 50 new rows at this cost against 10 samples x 2 epochs.
        assert row["floor"] == pytest.approx(50 * row["row_vs_trained_sample"] / 20, rel=0.01, abs=2e-3), name


def test_answer_logits_bench(capsys: pytest.CaptureFixture[str], restore_threads: None) -> None:
    out = _run("answer_logits", ["--device", "cpu", "--threads", "1", "--samples", "8", "--batch-size", "4",
                                 "--proj-dim", "64"], capsys)
    assert out["samples"] == 8 and out["layers"] == 6 and 0 < out["answer_token_share"] < 1
    for name in ("extract", "prune", "train"):
        assert out[name]["full_s"] > 0 and out[name]["kept_s"] > 0 and out[name]["speedup"] > 0, name
        # The same numbers both ways: features exactly, the training loss to fp32 rounding.
        assert out[name]["max_diff"] < 1e-5, name
