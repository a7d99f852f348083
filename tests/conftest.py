"""Shared fixtures: a local S3 (moto server on 127.0.0.1), a real `mlflow server` on 127.0.0.1,
the quick demo stream, a tiny model."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per process for the whole suite (and the stages and workers it starts).

    The suite runs 2 xdist workers on a 2-core machine, and each test may start stage processes
    or compare workers: every process sizing its pool to the machine's 2 CPUs oversubscribes
    them, and torch's threads then spin-wait on each other (the suite ran 2-3x longer). This is
    what `--threads 1` does for a user; tests/test_threads.py clears it to test the default.
    """
    os.environ.setdefault("ADAPTINF_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny-model tests: two OpenMP threads on a 2-core machine shared with other
    jobs spin-wait and run tiny matmuls ~10× slower. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def port_finder():
    """`free_port` as a fixture: test modules cannot import from conftest (tests/k8s has one too)."""
    return free_port


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint (moto's server), shared by the session."""
    from moto.server import ThreadedMotoServer
    # One INFO line per request would bury a failing test's report (the CLI sets the root to INFO).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request):
    """A fresh bucket; boto3 in this process (and child processes) points at the local server."""
    import boto3
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("ADAPTINF_S3_MAX_ATTEMPTS", "2")
    name = "b-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    name = "".join(c for c in name if c.isalnum() or c == "-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URL of a real `mlflow server` (sqlite backend, artifacts proxied to a local folder), shared by
    the session: it takes seconds to start. Tests keep apart by experiment or run name."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=log)
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


@pytest.fixture(scope="session")
def demo_quick(tmp_path_factory) -> Path:
    """`adaptinf demo-data --size quick` output (records, eval sets, YAML, tiny model)."""
    from adaptinf.cli import main
    out = tmp_path_factory.mktemp("demo-quick")
    assert main(["demo-data", "--out", str(out), "--size", "quick"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(demo_quick) -> Path:
    return demo_quick / "model"
