"""The Deployment controller and kubelet of the emulator, for one single-replica Deployment such as
the chart's operator: what `helm install` creates is then what runs.

Every `poll` seconds it reads the Deployment. While the Deployment exists it keeps one "pod"
running: the first container's `command` + `args` as a local process (argv, never a shell) with
the container's `env` resolved as the kubelet does (kubelet.container_env: values, Secrets,
the pod's name) over `base_env`. A pod has no network of its own here, so each `containerPort`
is mapped to a free port of this host: `0.0.0.0:<port>` in an argument and a `*_PORT` variable
equal to it are rewritten (`ports` holds the map, as `kubectl port-forward` would give it). Once
the readiness probe's HTTP path answers 200 it writes the Deployment's status as the controller
does (observedGeneration, ready and available replicas, condition Available) — what `kubectl
rollout status` waits for. A changed pod template restarts the process (`strategy: Recreate`);
a process that exits is started again (restartPolicy Always); a deleted Deployment stops it.
"""
from __future__ import annotations

import logging
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

from kubeapi import ApiError, KubeApi
from kubelet import container_env, now_iso

log = logging.getLogger("deployment_pod")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DeploymentPod:
    def __init__(self, api: KubeApi, namespace: str, name: str, workdir: Path, base_env: dict[str, str],
                 poll: float = 0.5):
        self.api, self.namespace, self.name, self.poll = api, namespace, name, poll
        self.workdir, self.base_env = Path(workdir), dict(base_env)
        self.proc: subprocess.Popen | None = None
        self.template: dict[str, Any] | None = None
        self.ports: dict[int, int] = {}  # containerPort → port on this host
        self.starts = 0
        self.pod_name = ""
        self.deleted = False
        self._reported: int | None = None  # the generation whose status says "available"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)

    def start(self) -> DeploymentPod:
        self._thread = threading.Thread(target=self._loop, name=f"deployment-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("pod-*.log")))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the API may be briefly away; keep the controller alive
                log.exception("deployment %s/%s: sync failed", self.namespace, self.name)
            self._stop.wait(self.poll)

    def sync(self) -> None:
        try:
            dep = self.api.get("deployments", self.namespace, self.name)
        except ApiError as err:
            if err.code != 404:
                raise
            if self.template is not None:  # it existed: deleted (helm uninstall)
                self.deleted = True
                self._kill()
            return
        template = dep["spec"]["template"]
        if template != self.template or self.proc is None or self.proc.poll() is not None:
            self._run(template)
        generation = dep["metadata"].get("generation", 1)
        if self._reported != generation and self._ready(template):
            self.api.patch("deployments", self.namespace, self.name, {"status": {
                "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                "availableReplicas": 1, "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "lastTransitionTime": now_iso(), "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                     "lastTransitionTime": now_iso(), "message": "emulated"}]}}, sub="status")
            self._reported = generation

    def _run(self, template: dict[str, Any]) -> None:
        self._kill()
        self.template = template
        container = template["spec"]["containers"][0]
        self.ports = {p["containerPort"]: _free_port() for p in container.get("ports") or []}
        self.starts += 1
        self.pod_name = f"{self.name}-{self.starts:05d}"
        env = {**self.base_env, **container_env(self.api, container, self.namespace, self.pod_name)}
        for key, value in env.items():
            if key.endswith("_PORT") and value.isdigit() and int(value) in self.ports:
                env[key] = str(self.ports[int(value)])
        argv = [self._mapped(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
        out = (self.workdir / f"pod-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()  # the child keeps its own handle
        self._reported = None
        log.info("deployment %s/%s: started %s", self.namespace, self.name, argv)

    def _mapped(self, arg: str) -> str:
        for container_port, host_port in self.ports.items():
            arg = arg.replace(f"0.0.0.0:{container_port}", f"127.0.0.1:{host_port}")
        return arg

    def _ready(self, template: dict[str, Any]) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        container = template["spec"]["containers"][0]
        probe = (container.get("readinessProbe") or {}).get("httpGet")
        if probe is None:
            return True
        port = probe["port"]
        if isinstance(port, str):  # a named port
            port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[port]}{probe.get('path', '/')}",
                                        timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the kubelet's stop: SIGTERM, then SIGKILL
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
