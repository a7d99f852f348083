"""Helpers shared by the Kubernetes tests: polling, the emulated cluster handle, the operator
subprocess, and manifests. The fixtures that create them live in conftest.py."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable, Iterator

import yaml

from kubeapi import KubeApi

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CRDS = ROOT / "crds"
OPERATOR_AGENTS = ("kopf", "adaptinf-operator")  # user agents of the operator's API clients
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` (and the last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(work: Path, audit: Path, selectable_fields: bool = True) -> tuple[subprocess.Popen, str, Path]:
    """The API emulator as a process on 127.0.0.1 (its log in work/emulator.log, every request in
    `audit`) and a kubeconfig for it: (process, server URL, kubeconfig path). Stop it with SIGINT.
    `selectable_fields=False`: an API server before Kubernetes 1.31 (no CRD selectableFields)."""
    port_file = work / "port"
    args = [] if selectable_fields else ["--without-selectable-fields"]
    with (work / "emulator.log").open("wb") as log_file:   # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, str(HERE / "emulator.py"), "--port-file", str(port_file),
                                 "--audit", str(audit), *args], stdout=log_file, stderr=subprocess.STDOUT, cwd=HERE)
    try:
        port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 30, "the emulator to listen"))
    except BaseException:
        proc.kill()
        raise
    server = f"http://127.0.0.1:{port}"
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulated",
        "clusters": [{"name": "emulated", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "emulated-token"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "tester",
                                                      "namespace": "default"}}]}))
    return proc, server, kubeconfig


@contextlib.contextmanager
def emulated_cluster(work: Path, selectable_fields: bool = True) -> Iterator[Cluster]:
    """A running emulator with the CRDs established, as a Cluster; stopped on exit."""
    audit = work / "audit.jsonl"
    proc, server, kubeconfig = start_emulator(work, audit, selectable_fields)
    try:
        c = Cluster(server, kubeconfig, audit, KubeApi(server), work)
        c.kubectl("apply", "-f", str(CRDS))
        c.kubectl("wait", "--for=condition=Established", "crd/lifelongruns.adaptinf.dev",
                  "crd/instructiondatasets.adaptinf.dev", "--timeout=20s")
        yield c
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def liveness_ok(port: int) -> bool:
    """Kopf's liveness endpoint on 127.0.0.1:`port` answers 200 (False while it is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@dataclass
class Cluster:
    """The emulated cluster: URL, kubeconfig, audit log, and helpers to drive it."""
    server: str
    kubeconfig: Path
    audit: Path
    api: KubeApi
    workdir: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        if args and args[0] in ("apply", "create", "replace"):
            cmd.append("--validate=false")
        proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, *objs: dict[str, Any], namespace: str | None = None) -> str:
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return self.kubectl(*args, input=yaml.safe_dump_all(objs)).stdout

    def audit_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]

    def secret(self, namespace: str, name: str, **data: str) -> None:
        """A Secret from literals, made and applied with kubectl as a user would. Rendered client
        side and applied: `kubectl create secret` would post protobuf, which the emulator does not
        speak."""
        manifest = self.kubectl("create", "secret", "generic", name, "--dry-run=client", "-o", "yaml",
                                *(f"--from-literal={k}={v}" for k, v in data.items())).stdout
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def permissions_used(self, agents: tuple[str, ...] = OPERATOR_AGENTS,
                         namespace: str | None = None) -> set[tuple[str, str, str]]:
        """(group, resource[/subresource], verb) of every request the given clients made: what
        an RBAC Role must allow (namespace None: every namespace and cluster-wide requests)."""
        return {(e["group"], e["resource"] + (f"/{e['subresource']}" if e["subresource"] else ""), e["verb"])
                for e in self.audit_entries()
                if e["userAgent"].split("/")[0] in agents and namespace in (None, e["namespace"])}


@dataclass
class Operator:
    """`kopf run` of adaptinf.operator as a subprocess; restartable, killable."""
    cluster: Cluster
    namespace: str
    env: dict[str, str]
    log_path: Path
    # How it learns of other operators: --standalone (none), or ("--peering=NAME", "--priority=N").
    peering: tuple[str, ...] = ("--standalone",)
    proc: subprocess.Popen | None = None
    liveness_port: int = 0
    metrics_port: int = 0
    starts: int = 0
    _logs: list[Any] = field(default_factory=list)

    def start(self) -> Operator:
        self.liveness_port, self.metrics_port = free_port(), free_port()
        self.starts += 1
        out = self.log_path.open("ab")
        self._logs.append(out)
        out.write(f"\n===== operator start #{self.starts} =====\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            ["kopf", "run", "-m", "adaptinf.operator.main", *self.peering, "--namespace", self.namespace,
             f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz", "--verbose"],
            env={**self.env, "ADAPTINF_METRICS_PORT": str(self.metrics_port)}, stdout=out, stderr=subprocess.STDOUT,
            cwd=self.cluster.workdir)
        wait_for(self.healthy, 60, "the operator's liveness endpoint")
        return self

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the operator exited ({self.proc and self.proc.returncode}):\n{self.logs()[-3000:]}")
        return liveness_ok(self.liveness_port)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """A scrape of its metrics endpoint: {(sample name, sorted labels): value}."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator's pod."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for fh in self._logs:
            fh.close()
        self._logs.clear()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def operator_env(cluster: Cluster, namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADAPTINF_", "KUBECONFIG"))}
    env.update(KUBECONFIG=str(cluster.kubeconfig), ADAPTINF_NAMESPACE=namespace, ADAPTINF_RECONCILE_INTERVAL="1", ADAPTINF_ARRIVAL_WINDOW="1",
               ADAPTINF_DEFAULT_GPUS="0", ADAPTINF_STAGE_IMAGE="adaptinf-stage:test")
    env.update(extra)
    return env


FAKE_STAGE = [sys.executable, str(HERE / "fake_stage.py")]


def run_manifest(name: str, store: Path, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": name},
            "spec": {"model": {"base": "tiny"}, "trainBudget": 8, "poolBudget": 30, "storage": {"uri": str(store)},
                     **spec}}


def demo_manifests(demo: Path, datasets: int) -> list[dict[str, Any]]:
    """The LifelongRun and the first `datasets` InstructionDatasets of an `adaptinf demo-data`
    stream as manifests for kubectl. In a cluster, paths are URIs or absolute: the demo's relative
    ones are resolved as the local runner does."""
    from adaptinf.spec import load_resources, to_manifest

    def manifest(path: Path) -> dict[str, Any]:
        (res,) = load_resources(path)
        obj = to_manifest(res)
        del obj["metadata"]["namespace"]
        obj["spec"] = res.resolved_spec().to_dict()
        return obj

    return [manifest(demo / "lifelongrun.yaml"), *map(manifest, sorted((demo / "datasets").glob("*.yaml"))[:datasets])]


def dataset_manifest(name: str, run: str, source: Path | str, order: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"run": run, "source": str(source)}
    if order is not None:
        spec["order"] = order
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset", "metadata": {"name": name},
            "spec": spec}


# -- reading the emulated cluster and the fake stage's hooks (shared by the e2e tests) --------

def job_names(cluster: Cluster, ns: str) -> list[str]:
    return sorted(j["metadata"]["name"] for j in cluster.api.list("jobs", ns))


def has_job(cluster: Cluster, ns: str, name: str) -> bool:
    return cluster.api.find("jobs", ns, name) is not None


def job_done(cluster: Cluster, ns: str, name: str) -> bool:
    job = cluster.api.find("jobs", ns, name) or {}
    return any(c["type"] == "Complete" for c in (job.get("status") or {}).get("conditions", []))


def jobs_created(cluster: Cluster, ns: str) -> list[tuple[str, float]]:
    """(Job name, time) of the operator's create requests in `ns`, in order (the emulator's audit
    log: creationTimestamps have one-second resolution)."""
    return [(e["name"], e["ts"]) for e in cluster.audit_entries()
            if (e["verb"], e["group"], e["resource"], e["namespace"]) == ("create", "batch", "jobs", ns)
            and e["userAgent"].split("/")[0] in OPERATOR_AGENTS]


def printed(cluster: Cluster, ns: str, kind: str, name: str) -> dict[str, str]:
    """`kubectl get KIND NAME -o wide` as {column: cell}: the printer columns a user sees."""
    header, row = cluster.kubectl("get", kind, name, "-n", ns, "-o", "wide").stdout.splitlines()
    return dict(zip(header.split(), row.split(), strict=True))


def calls(store: Path) -> list[dict[str, Any]]:
    path = store / "_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def status(cluster: Cluster, ns: str, plural: str, name: str) -> dict[str, Any]:
    return (cluster.api.get(plural, ns, name).get("status")) or {}


def condition(cluster: Cluster, ns: str, plural: str, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(cluster, ns, plural, name).get("conditions", []) if c["type"] == type_), {})


def events(cluster: Cluster, ns: str) -> list[dict[str, Any]]:
    return json.loads(cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]


def hold(store: Path, stage: str, step: int) -> Path:
    """Make the fake stage wait until the returned file is removed."""
    path = store / "_hold" / f"{stage}-{step}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write_records(path: Path, good: int, bad: int = 0) -> Path:
    path.write_text("".join(f'{{"id": "{i}"}}\n' for i in range(good)) + '{"bad": true}\n' * bad)
    return path
