"""MLFLOW_TRACKING_URI pointing at a real `mlflow server` (the `mlflow_server` fixture of tests/conftest.py)."""
from __future__ import annotations

import pytest

from adaptinf.runner import collect, run_local

pytestmark = pytest.mark.slow


def test_run_logs_to_an_mlflow_server(mlflow_server, demo_quick, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
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
