"""A "kubelet" plus Job controller for the emulator: runs batch/v1 Jobs as local processes.

What it does, per Job, on every poll of the API: create Pod objects (labels `job-name`,
`controller-uid`, `batch.kubernetes.io/job-completion-index`, an ownerReference to the Job), run
the container's `command` + `args` as a local subprocess (argv, never a shell) with the
container's `env` (`value`, `valueFrom.secretKeyRef` read from the Secret in the emulator,
`fieldRef` to the pod's name/namespace/completion-index annotation) over the `extra_env` the test
injects (PATH, PYTHONPATH, ...), honour `completions`/`parallelism`/`completionMode: Indexed`
(`JOB_COMPLETION_INDEX`), `backoffLimit`, `backoffLimitPerIndex` + `maxFailedIndexes`,
`podFailurePolicy` (`FailJob` on exit codes, `Ignore` on pod conditions such as `DisruptionTarget`),
`activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished` (the TTL controller: a finished Job
is deleted that many seconds after it ended, finalizers permitting), and patch the Job status (`active`, `ready`, `succeeded`,
`failed`, `completedIndexes`, `startTime`, `completionTime`, conditions `Complete`/`Failed`) and
each Pod's status (phase, container state, exit code).

With `pid_namespace=True` each container process runs as PID 1 of its own PID namespace
(`unshare --pid --fork`), and stopping a pod (eviction, Job deletion, `activeDeadlineSeconds`)
signals that PID 1 only, as a container runtime does: SIGTERM, then SIGKILL after `grace`
seconds. A PID 1 without a SIGTERM handler ignores SIGTERM (the kernel's rule), so such a pod
waits out its grace period and ends with 137, as on a real node.

A process killed by a signal exits like a container does (128 + signal: 137 for SIGKILL), and
with `terminationMessagePolicy: FallbackToLogsOnError` a failed container's last log lines
become its `terminated.message`, as on a real node.

A pod the API server refuses (quota, a missing ServiceAccount: see admission.py) is not created:
like the Job controller, the kubelet posts a Warning Event `FailedCreate` on the Job ("Error
creating: ...") and tries again on a later pass; the Job stays active with no pods.

A pod whose `nodeSelector` does not match this node's labels stays `Pending` with
`PodScheduled=False, reason=Unschedulable`, as on a cluster without such nodes. When a Job is
deleted its processes are killed and its Pods deleted (the emulator has no garbage collector).
`command_map` lets a test run e.g. `adaptinf` as `python tests/k8s/fake_stage.py`.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import random
import signal
import string
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeapi import ApiError, KubeApi

log = logging.getLogger("kubelet")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    name: str
    index: int | None
    container: str = "main"
    proc: subprocess.Popen | None = None  # None: not started (unschedulable or waiting for config)
    started: float = 0.0
    logs_on_error: bool = False  # terminationMessagePolicy: FallbackToLogsOnError
    conditions: set[str] = field(default_factory=set)  # pod conditions set to True besides Ready (DisruptionTarget)


@dataclass
class JobState:
    namespace: str
    name: str
    started: float = field(default_factory=time.monotonic)
    start_time: str = field(default_factory=now_iso)
    pods: dict[str, PodRun] = field(default_factory=dict)  # active: pending or running
    all_pods: list[str] = field(default_factory=list)  # every pod created, for cleanup
    succeeded: set[int] = field(default_factory=set)  # completion indexes (0..n-1 for non-indexed too)
    failed: int = 0
    done: bool = False
    refusals: set[str] = field(default_factory=set)  # FailedCreate messages already posted
    index_failures: dict[int, int] = field(default_factory=dict)  # backoffLimitPerIndex: failures per index
    failed_indexes: set[int] = field(default_factory=set)


class Kubelet:
    def __init__(self, api: KubeApi, workdir: Path, extra_env: dict[str, str] | None = None,
                 command_map: dict[str, list[str]] | None = None, node_labels: dict[str, str] | None = None,
                 poll: float = 0.2, pid_namespace: bool = False, grace: float = 5.0):
        self.api, self.workdir, self.poll = api, Path(workdir), poll
        self.pid_namespace, self.grace = pid_namespace, grace
        self.extra_env = dict(extra_env or {})
        self.command_map = dict(command_map or {})
        self.node_labels = dict(node_labels or {})
        self.jobs: dict[str, JobState] = {}
        self.started_pods: list[tuple[str, str, int | None]] = []  # (job, pod, index) in start order
        self.completed_at: dict[tuple[str, str], float] = {}  # (namespace, job) → wall time it was marked Complete
        self.finished_at: dict[str, float] = {}  # Job uid → wall time it ended (Complete or Failed)
        self.ttl_deleted: list[str] = []  # Jobs the TTL controller deleted, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Kubelet:
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for state in self.jobs.values():
            for pod in state.pods.values():
                self._kill(pod)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:  # the API may be restarting; keep the node alive
                log.exception("kubelet sync failed")
            self._stop.wait(self.poll)

    def log_of(self, pod: str) -> str:
        path = self.workdir / "logs" / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- one reconciliation pass ----------------------------------------------------------------
    def sync(self) -> None:
        jobs = {j["metadata"]["uid"]: j for j in self.api.list("jobs")}
        for uid in [u for u in self.jobs if u not in jobs]:
            self._forget(self.jobs.pop(uid))
        for uid, job in jobs.items():
            conds = {c["type"] for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
            if conds & {"Complete", "Failed"}:
                self._expire(job, uid)
                continue
            if job["spec"].get("suspend") and uid not in self.jobs:
                continue
            state = self.jobs.setdefault(uid, JobState(job["metadata"]["namespace"], job["metadata"]["name"]))
            if not state.done:
                self._sync_job(job, state)

    def _expire(self, job: dict[str, Any], uid: str) -> None:
        """The TTL-after-finished controller: delete a finished Job once its TTL has passed."""
        ttl, meta = job["spec"].get("ttlSecondsAfterFinished"), job["metadata"]
        if ttl is None or meta.get("deletionTimestamp"):
            return
        ended = self.finished_at.setdefault(uid, time.time())
        if time.time() - ended >= ttl:
            try:
                self.api.delete("jobs", meta["namespace"], meta["name"])
            except ApiError as err:
                if err.code != 404:
                    raise
            self.ttl_deleted.append(meta["name"])
            log.info("ttl controller: deleted job %s/%s", meta["namespace"], meta["name"])

    def _sync_job(self, job: dict[str, Any], state: JobState) -> None:
        spec = job["spec"]
        completions = spec.get("completions", 1)
        parallelism = spec.get("parallelism", 1)
        indexed = spec.get("completionMode") == "Indexed"
        per_index = spec.get("backoffLimitPerIndex") if indexed else None
        backoff = spec.get("backoffLimit", 2**31 - 1 if per_index is not None else 6)
        failure: tuple[str, str] | None = None

        for pod in list(state.pods.values()):
            if pod.proc is None or (rc := pod.proc.poll()) is None:
                continue
            rc = 128 - rc if rc < 0 else rc  # killed by signal N: the container runtime reports 128 + N
            del state.pods[pod.name]
            self._pod_finished(state, pod, rc)
            if rc == 0:
                state.succeeded.add(pod.index if pod.index is not None else len(state.succeeded))
                continue
            action = _failure_policy(spec.get("podFailurePolicy"), rc, pod.conditions)
            if action == "Ignore":
                continue  # not counted: the pod is simply created again
            state.failed += 1
            if action == "FailJob":
                failure = ("PodFailurePolicy", f"Container main for pod {pod.name} failed with exit code {rc} "
                                               "matching FailJob rule at index 1")
            elif per_index is not None and pod.index is not None:
                state.index_failures[pod.index] = state.index_failures.get(pod.index, 0) + 1
                if state.index_failures[pod.index] > per_index:
                    state.failed_indexes.add(pod.index)
                    if len(state.failed_indexes) > spec.get("maxFailedIndexes", completions):
                        failure = ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of "
                                                               "failed indexes")
                if failure is None and state.failed > backoff:  # the Job-wide limit still applies
                    failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif state.failed > backoff:
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")

        deadline = spec.get("activeDeadlineSeconds")
        if failure is None and deadline and time.monotonic() - state.started > deadline:
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if failure is not None:  # the Job controller deletes the remaining pods: graceful stop
            for pod in list(state.pods.values()):
                self._terminate(pod)
                rc = pod.proc.poll() if pod.proc is not None else None
                self._pod_finished(state, pod, 137 if rc is None else (128 - rc if rc < 0 else rc))
            state.pods.clear()
        elif len(state.succeeded) < completions:
            running = {p.index for p in state.pods.values()}
            todo = [i for i in range(completions) if i not in state.succeeded and i not in running
                    and i not in state.failed_indexes] if indexed \
                else [None] * max(0, completions - len(state.succeeded) - len(state.pods))
            for index in todo[:max(0, parallelism - len(state.pods))]:
                self._start_pod(job, state, index)
        self._patch_job(job, state, failure, completions, indexed)

    # -- pods ---------------------------------------------------------------------------------
    def _start_pod(self, job: dict[str, Any], state: JobState, index: int | None) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{meta['name']}-{index}-{suffix}" if index is not None else f"{meta['name']}-{suffix}"
        labels = {**(template.get("metadata", {}).get("labels") or {}), "job-name": meta["name"],
                  "controller-uid": meta["uid"], "batch.kubernetes.io/job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": meta["uid"]}
        annotations = dict(template.get("metadata", {}).get("annotations") or {})
        if index is not None:
            labels[INDEX_ANNOTATION] = annotations[INDEX_ANNOTATION] = str(index)
        pod_spec = dict(template["spec"])
        wanted = pod_spec.get("nodeSelector") or {}
        schedulable = all(self.node_labels.get(k) == v for k, v in wanted.items())
        if schedulable:  # bound to this node at creation (one request less per pod)
            pod_spec["nodeName"] = "emulated-node"
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        try:
            self.api.create("pods", state.namespace, {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "annotations": annotations, "ownerReferences": [owner]},
                "spec": pod_spec})
        except ApiError as err:
            if err.code not in (403, 422):
                raise
            self._failed_create(job, state, err)
            return
        pod = PodRun(name, index, pod_spec["containers"][0]["name"],
                     logs_on_error=pod_spec["containers"][0].get("terminationMessagePolicy") == "FallbackToLogsOnError")
        state.pods[name] = pod
        state.all_pods.append(name)
        if not schedulable:
            self.api.patch("pods", state.namespace, name, {"status": {
                "phase": "Pending", "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": now_iso(),
                    "message": f"0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector {wanted}"}]}},
                sub="status")
            return
        container = pod_spec["containers"][0]
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if argv and argv[0] in self.command_map:
            argv = self.command_map[argv[0]] + argv[1:]
        env = {**self.extra_env, **self._env(container, state.namespace, name, index)}
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        cwd = self.workdir / "pods" / name
        cwd.mkdir(parents=True, exist_ok=True)
        if self.pid_namespace:  # the container's process is PID 1; --kill-child: nothing outlives it
            argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
        with (self.workdir / "logs" / f"{name}.log").open("wb") as out:
            pod.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        pod.started = time.monotonic()
        self.started_pods.append((state.name, name, index))
        log.info("started pod %s/%s: %s", state.namespace, name, argv)
        self.api.patch("pods", state.namespace, name, {"status": {
            "phase": "Running", "startTime": now_iso(),
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": now_iso()}}}]}}, sub="status")

    def evict(self, pod_name: str) -> None:
        """What an eviction (drain, preemption) does to a running pod: the API server sets condition
        DisruptionTarget=True, then the kubelet sends SIGTERM (SIGKILL after the grace period)."""
        for state in self.jobs.values():
            pod = state.pods.get(pod_name)
            if pod is None or pod.proc is None:
                continue
            self.api.patch("pods", state.namespace, pod_name, {"status": {"conditions": [
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                 "message": "Eviction API: evicting", "lastTransitionTime": now_iso()}]}}, sub="status")
            pod.conditions.add("DisruptionTarget")
            self._terminate(pod)
            return
        raise KeyError(f"no running pod {pod_name}")

    def _terminate(self, pod: PodRun) -> None:
        """SIGTERM, then SIGKILL after the grace period: how a kubelet stops a container."""
        if pod.proc is None or pod.proc.poll() is not None:
            return
        if self.pid_namespace:  # the runtime signals the container's PID 1, nothing else
            children = Path(f"/proc/{pod.proc.pid}/task/{pod.proc.pid}/children").read_text().split()
            for child in children:
                os.kill(int(child), signal.SIGTERM)
        else:
            os.killpg(pod.proc.pid, signal.SIGTERM)
        try:
            pod.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            os.killpg(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait(timeout=10)

    def _failed_create(self, job: dict[str, Any], state: JobState, err: ApiError) -> None:
        """The Job controller's `FailedCreate` Warning on the Job (once per distinct message)."""
        message = f"Error creating: {err.body.get('message', err)}"
        if message in state.refusals:
            return
        state.refusals.add(message)
        meta = job["metadata"]
        self.api.create("events", state.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "namespace": state.namespace,
                               "uid": meta["uid"]},
            "reason": "FailedCreate", "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now_iso(), "lastTimestamp": now_iso(), "source": {"component": "job-controller"}})
        log.info("job %s/%s: %s", state.namespace, meta["name"], message)

    def _env(self, container: dict[str, Any], namespace: str, pod: str, index: int | None) -> dict[str, str]:
        return container_env(self.api, container, namespace, pod, index)

    def _pod_finished(self, state: JobState, pod: PodRun, rc: int) -> None:
        phase = "Succeeded" if rc == 0 else "Failed"
        log.info("pod %s/%s exited with %s", state.namespace, pod.name, rc)
        terminated = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error", "finishedAt": now_iso()}
        if rc and pod.logs_on_error:  # the kubelet's rule: the last 80 lines, at most 2048 bytes
            tail = self.log_of(pod.name).splitlines()[-80:]
            terminated["message"] = "\n".join(tail)[-2048:]
        try:
            self.api.patch("pods", state.namespace, pod.name, {"status": {
                "phase": phase, "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": pod.container, "ready": False, "restartCount": 0,
                                       "state": {"terminated": terminated}}]}},
                sub="status")
        except ApiError as err:
            if err.code != 404:
                raise

    def _kill(self, pod: PodRun) -> None:
        if pod.proc is not None and pod.proc.poll() is None:
            os.killpg(pod.proc.pid, signal.SIGKILL)
            pod.proc.wait(timeout=10)

    def _forget(self, state: JobState) -> None:
        """The Job is gone: stop its processes and delete its pods (no GC in the emulator)."""
        for pod in state.pods.values():
            self._terminate(pod)
        for name in state.all_pods:
            self.api.delete("pods", state.namespace, name)
        log.info("job %s/%s deleted: cleaned %d pods", state.namespace, state.name, len(state.all_pods))

    # -- job status ---------------------------------------------------------------------------
    def _patch_job(self, job: dict[str, Any], state: JobState, failure: tuple[str, str] | None, completions: int,
                   indexed: bool) -> None:
        status: dict[str, Any] = {
            "startTime": state.start_time, "active": len(state.pods),
            "ready": sum(p.proc is not None for p in state.pods.values()),
            "succeeded": len(state.succeeded), "failed": state.failed}
        if indexed:
            status["completedIndexes"] = ",".join(map(str, sorted(state.succeeded)))
        if failure is None and state.failed_indexes and len(state.succeeded) + len(state.failed_indexes) >= completions:
            failure = ("FailedIndexes", "Job has failed indexes")
        if indexed and state.failed_indexes:
            status["failedIndexes"] = ",".join(map(str, sorted(state.failed_indexes)))
        if failure is not None or len(state.succeeded) >= completions:
            state.done = True
            self.finished_at[job["metadata"]["uid"]] = time.time()
            kind, (reason, message) = ("Failed", failure) if failure else ("Complete", ("Completed", "Job completed"))
            status["conditions"] = [{"type": kind, "status": "True", "reason": reason, "message": message,
                                     "lastProbeTime": now_iso(), "lastTransitionTime": now_iso()}]
            if not failure:
                status["completionTime"] = now_iso()
                self.completed_at[(state.namespace, state.name)] = time.time()
            status["active"] = status["ready"] = 0
        current = job.get("status") or {}
        if any(current.get(k) != v for k, v in status.items()):
            try:
                self.api.patch("jobs", state.namespace, state.name, {"status": status}, sub="status")
            except ApiError as err:
                if err.code != 404:
                    raise


def _failure_policy(policy: dict[str, Any] | None, rc: int, conditions: set[str] = frozenset()) -> str | None:
    """The action of the first matching rule, as the Job controller reads them (in order)."""
    for rule in (policy or {}).get("rules", []):
        codes = rule.get("onExitCodes")
        if codes and (rc in codes["values"]) == (codes["operator"] == "In"):
            return rule["action"]
        if any(c.get("type") in conditions and c.get("status", "True") == "True" for c in rule.get("onPodConditions") or []):
            return rule["action"]
    return None


def container_env(api: KubeApi, container: dict[str, Any], namespace: str, pod: str,
                  index: int | None = None) -> dict[str, str]:
    """A container's `env` as the kubelet resolves it: `value`, `valueFrom.secretKeyRef` (read
    from the Secret in the API), `fieldRef` to the pod's name, namespace or completion index."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif ref := (var.get("valueFrom") or {}).get("secretKeyRef"):
            secret = api.find("secrets", namespace, ref["name"]) or {}
            if ref["key"] in (secret.get("data") or {}):
                env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif ref["key"] in (secret.get("stringData") or {}):  # the emulator does not fold stringData
                env[var["name"]] = secret["stringData"][ref["key"]]
            elif not ref.get("optional"):
                raise RuntimeError(f"pod {pod}: secret {ref['name']!r} has no key {ref['key']!r}")
        elif ref := (var.get("valueFrom") or {}).get("fieldRef"):
            path = ref["fieldPath"]
            env[var["name"]] = {"metadata.name": pod, "metadata.namespace": namespace}.get(
                path, str(index) if INDEX_ANNOTATION in path else "")
    return env
