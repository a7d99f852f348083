"""MLFLOW_TRACKING_URI pointing at a real `mlflow server` (the `mlflow_server` fixture of tests/conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptinf.runner import collect, run_local

pytestmark = pytest.mark.slow


def test_run_logs_to_an_mlflow_server(mlflow_server, demo_quick, tmp_path, monkeypatch):
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient
    from peft import PeftModel

    from adaptinf.model.loading import load_base
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run, datasets = collect([demo_quick])
    summary = run_local(run, datasets[:2], tmp_path, strategy="random", name="served", progress=False)
    assert not (tmp_path / "mlflow.db").exists()  # the server, not the default sqlite file
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(run.spec.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`adaptinf.run` = 'served'")
    steps = sorted(r.data.tags["adaptinf.step"] for r in runs)
    assert steps == ["0", "1", "parent"]
    parent = next(r for r in runs if r.data.tags["adaptinf.step"] == "parent")
    assert parent.data.params["strategy"] == "random"
    child = next(r for r in runs if r.data.tags["adaptinf.step"] == "1")
    assert child.data.metrics["avg_acc"] == pytest.approx(summary["steps"][1]["avg_acc"])
    # Artifacts travel through the server's proxy (--artifacts-destination).
    assert "skill_scores.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
    # Each step's adapter is a registered version of the model named after the run; the newest
    # loads with peft from the version's artifacts (the server proxies them too).
    versions = sorted(client.search_model_versions("name = 'served'"), key=lambda v: int(v.version))
    assert [v.tags["adaptinf.step"] for v in versions] == ["0", "1"]
    assert [v.run_id for v in versions] == [next(r.info.run_id for r in runs if r.data.tags["adaptinf.step"] == s)
                                            for s in ("0", "1")]
    current = client.get_model_version_by_alias("served", "current")
    assert current.version == versions[-1].version
    local = Path(mlflow.artifacts.download_artifacts(f"models:/served/{current.version}", tracking_uri=mlflow_server))
    adapter = local / "artifacts" / "adapter"
    stored = tmp_path / "served" / "steps" / "0001" / "train" / "adapter"
    assert (adapter / "adapter_model.safetensors").read_bytes() == (stored / "adapter_model.safetensors").read_bytes()
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(tmp_path / "served" / "base")   # the run's tuned base, not a temporary copy
    model = PeftModel.from_pretrained(load_base(base, "float32").model, str(adapter))
    assert any("lora_B" in name for name, _ in model.named_parameters())
