"""MLFLOW_TRACKING_URI pointing at a real `mlflow server` (started here on 127.0.0.1)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from adaptinf.runner import collect, run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, port_finder):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = port_finder()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


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
