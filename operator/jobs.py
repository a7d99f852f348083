"""The stage Job manifest: a pure function of the run, the step, the stage and the dataset.

Names are deterministic (`<run>-s<step>-<stage>`, hashed down to 63 characters), so creating a
Job twice is a 409 AlreadyExists, never a duplicate. The container runs the argv of
docs/contracts.md §1 — never a shell — and gets the specs as JSON in its environment;
credentials only ever arrive through `secretKeyRef`s. Exit code 2 (bad input) fails the Job at
once through a `podFailurePolicy` instead of burning the retries of `backoffLimit`; a disrupted pod
(eviction, preemption, node drain) is retried without counting.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

import kopf

from adaptinf.model.hub import CACHE_ENV
from adaptinf.pod_template import MODEL_CACHE_VOLUME_NAME, SHM_PATH, SHM_VOLUME_NAME
from adaptinf.spec import InstructionDatasetSpec, LifelongRunSpec, StageResources

from .config import OperatorConfig

STAGE_LABEL = "adaptinf.dev/stage"
STEP_LABEL = "adaptinf.dev/step"
RUN_LABEL = "adaptinf.dev/run"
DATASET_LABEL = "adaptinf.dev/dataset"
MANAGED_BY = ("app.kubernetes.io/managed-by", "adaptinf-operator")
# Holds a finished Job until the operator has recorded its outcome (the run's status for a failure,
# the store's commit markers for a success): the TTL controller or a `kubectl delete` cannot make a
# failed stage look never-started, which would start it again.
JOB_FINALIZER = "adaptinf.dev/outcome"
CONTAINER = "stage"
BAD_INPUT_EXIT_CODE = 2
# Stages that need no accelerator: they run with 0 GPUs unless the run asks for some explicitly.
CPU_STAGES = ("cluster-select", "prune")
# Stages that run on one device whatever the default says (only train runs a process per GPU).
ONE_DEVICE_STAGES = ("extract", "eval")
# NCCL between the processes of a multi-GPU train goes through /dev/shm; a container's default
# (64 MiB) is far too small. A memory-backed emptyDir (it counts against the memory limit);
# `resources.<stage>.shmSize` gives it a size (and any stage one), `shmSize: 0` takes it away.
SHM_VOLUME = {"name": SHM_VOLUME_NAME, "emptyDir": {"medium": "Memory"}}
# Kueue's queue label. On the LifelongRun it reaches every stage Job (the run's labels do), and a
# Job that carries it is created suspended: Kueue admits it by setting spec.suspend to false, and
# no pod starts (no GPU is held) before that. Not on the pod template: the pods belong to the Job.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
HF_TOKEN = "HF_TOKEN"


# Evicted, preempted or drained (the pod has condition DisruptionTarget): not the stage's fault, so
# not counted against backoffLimit — a 12-hour train preempted three times must not fail the run.
# Exit code 2 (bad input) fails the Job at once.
POD_FAILURE_POLICY: dict[str, Any] = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In",
                                          "values": [BAD_INPUT_EXIT_CODE]}},
]}


def job_name(run: str, step: int, stage: str) -> str:
    """`<run>-s<step>-<stage>`; longer names keep a prefix and gain a hash so they stay unique."""
    name = f"{run}-s{step}-{stage}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def job_labels(run: str, step: int, stage: str, dataset: str) -> dict[str, str]:
    return {RUN_LABEL: run, STEP_LABEL: str(step), STAGE_LABEL: stage, DATASET_LABEL: dataset,
            MANAGED_BY[0]: MANAGED_BY[1], "app.kubernetes.io/name": "adaptinf",
            "app.kubernetes.io/component": "stage"}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def stage_env(run: str, spec: LifelongRunSpec, stage: str, dataset: str, ds_spec: InstructionDatasetSpec,
              cfg: OperatorConfig) -> list[dict[str, Any]]:
    """The environment of docs/contracts.md §1."""
    env = [
        {"name": "ADAPTINF_STORE", "value": spec.storage.uri or cfg.store},
        {"name": "ADAPTINF_RUN_SPEC", "value": json.dumps(spec.to_dict(), sort_keys=True)},
        {"name": "ADAPTINF_DATASET", "value": dataset},
        {"name": "ADAPTINF_DATASET_SPEC", "value": json.dumps(ds_spec.to_dict(), sort_keys=True)},
    ]
    if stage == "extract":
        env.append({"name": "ADAPTINF_SHARDS", "value": str(spec.extract.shards)})
    if cfg.mlflow_uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": cfg.mlflow_uri})
    if cfg.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": cfg.s3_endpoint})
    if cfg.aws_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": cfg.aws_region})
    if cfg.s3_secret:
        env += [_secret_env(k, cfg.s3_secret, k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if cfg.mlflow_secret:
        env += [_secret_env(k, cfg.mlflow_secret, k, optional=True)
                for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")]
    if spec.model.token_secret:  # huggingface_hub reads HF_TOKEN itself; adaptinf never sees it
        env.append(_secret_env(HF_TOKEN, spec.model.token_secret, HF_TOKEN))
    if cfg.model_cache_claim:
        env.append({"name": CACHE_ENV, "value": cfg.model_cache_path})
        # HF_HOME/hub is where hub_kwargs puts the hub cache too; a run's own HF_HOME wins.
        if not any(e.name == "HF_HOME" for e in spec.resources.for_stage(stage).env or []):
            env.append({"name": "HF_HOME", "value": cfg.model_cache_path})
    return env


def stage_gpus(res: StageResources, stage: str, cfg: OperatorConfig, own: StageResources | None = None) -> int:
    """The stage's own `gpus` (`own`: resources.<stage>), else `resources.default.gpus`, else
    ADAPTINF_DEFAULT_GPUS — except cluster-select and prune, which default to 0 (faiss and
    bookkeeping only), and extract and eval, which use one device: a default above 1 gives them 1
    (extract would otherwise ask for it once per shard)."""
    if own is not None and own.gpus is not None:
        return own.gpus
    gpus = res.gpus if res.gpus is not None else (0 if stage in CPU_STAGES else cfg.default_gpus)
    return min(gpus, 1) if stage in ONE_DEVICE_STAGES else gpus


def stage_resources(res: StageResources, stage: str, cfg: OperatorConfig, gpus: int) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if res.ephemeral_storage:  # a request only: a limit would evict a stage that writes a little more
        requests["ephemeral-storage"] = res.ephemeral_storage
    if gpus:
        requests[cfg.gpu_resource] = limits[cfg.gpu_resource] = str(gpus)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _train_processes(stage: str, gpus: int) -> list[dict[str, Any]]:
    """Train on several GPUs of one pod: one process per GPU (the stage launches torchrun)."""
    return [{"name": "ADAPTINF_TRAIN_PROCESSES", "value": str(gpus)}] if stage == "train" and gpus > 1 else []


def _is_zero(quantity: str) -> bool:
    mantissa = re.match(r"[0-9.]*", quantity)
    return float(mantissa.group() or 0) == 0 if mantissa else False


def shm_volume(res: StageResources, stage: str, gpus: int) -> dict[str, Any] | None:
    """The memory-backed /dev/shm: `shmSize` sizes it (0: none); without it a multi-GPU train gets
    one bounded only by the memory limit, other stages the container runtime's 64 MiB."""
    if res.shm_size is not None:
        if _is_zero(res.shm_size):
            return None
        return {"name": SHM_VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": res.shm_size}}
    return copy.deepcopy(SHM_VOLUME) if stage == "train" and gpus > 1 else None


def pod_template(res: StageResources, stage: str, gpus: int, labels: dict[str, str], container: dict[str, Any],
                 cfg: OperatorConfig) -> dict[str, Any]:
    """The Job's pod template: the operator's own fields, then the run's pod-template overlay
    (resources.<stage> over resources.default), which never replaces an operator field."""
    container.setdefault("env", []).extend(e.to_dict() for e in res.env or [])
    if res.env_from:  # the container's `env` (the operator's variables) wins over envFrom keys
        container["envFrom"] = [e.to_dict() for e in res.env_from]
    volumes = [v.to_dict() for v in res.volumes or []]
    mounts = [m.to_dict() for m in res.volume_mounts or []]
    if (shm := shm_volume(res, stage, gpus)) is not None:
        volumes.insert(0, shm)
        mounts.insert(0, {"name": SHM_VOLUME_NAME, "mountPath": SHM_PATH})
    if cfg.model_cache_claim:
        volumes.insert(0, {"name": MODEL_CACHE_VOLUME_NAME, "persistentVolumeClaim": {"claimName": cfg.model_cache_claim}})
        mounts.insert(0, {"name": MODEL_CACHE_VOLUME_NAME, "mountPath": cfg.model_cache_path})
    if mounts:
        container["volumeMounts"] = mounts
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        pod_spec["volumes"] = volumes
    node_selector = {**cfg.node_selector, **(res.node_selector or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = cfg.tolerations + [t.to_dict() for t in res.tolerations or []]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if res.affinity:
        pod_spec["affinity"] = copy.deepcopy(res.affinity)
    if cfg.service_account:
        pod_spec["serviceAccountName"] = cfg.service_account
    if res.priority_class_name:
        pod_spec["priorityClassName"] = res.priority_class_name  # Kueue reads it as the workload's priority
    if res.runtime_class_name:
        pod_spec["runtimeClassName"] = res.runtime_class_name
    if res.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in dict.fromkeys(res.image_pull_secrets)]
    # The operator's labels cannot be overridden (spec.py refuses them in podLabels).
    metadata: dict[str, Any] = {"labels": {**(res.pod_labels or {}), **labels}}
    if res.pod_annotations:
        metadata["annotations"] = dict(res.pod_annotations)
    return {"metadata": metadata, "spec": pod_spec}


def build_job(run: dict[str, Any], step: int, stage: str, dataset: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """The batch/v1 Job that runs one stage of one step, owned by the LifelongRun `run`."""
    run_name = run["metadata"]["name"]
    spec = LifelongRunSpec.model_validate(run["spec"])
    ds_name = dataset["metadata"]["name"]
    ds_spec = InstructionDatasetSpec.model_validate(dataset["spec"])
    res = spec.resources.for_stage(stage)
    gpus = stage_gpus(res, stage, cfg, getattr(spec.resources, stage.replace("-", "_")))
    labels = job_labels(run_name, step, stage, ds_name)
    container = {
        "name": CONTAINER,
        "image": cfg.stage_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["adaptinf", "stage", stage, "--run", run_name, "--step", str(step)],
        "env": stage_env(run_name, spec, stage, ds_name, ds_spec, cfg) + _train_processes(stage, gpus),
        "resources": stage_resources(res, stage, cfg, gpus),
        # A crashed stage's last log lines become its termination message: the operator puts
        # them into the run's Failed condition, so `kubectl describe` says why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    backoff = res.backoff_limit if res.backoff_limit is not None else cfg.backoff_limit
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff,
        "activeDeadlineSeconds": res.active_deadline_seconds or cfg.active_deadline,
        "podFailurePolicy": copy.deepcopy(POD_FAILURE_POLICY),
        "template": pod_template(res, stage, gpus, labels, container, cfg),
    }
    if stage == "extract":  # one pod per shard; the stage reads JOB_COMPLETION_INDEX
        shards = spec.extract.shards
        job_spec.update(completionMode="Indexed", completions=shards, parallelism=shards)
        # Each shard its own retries (one flaky shard must not use up the others' budget); the
        # first shard out of retries fails the Job at once rather than after the others finish.
        # backoffLimit stays as the total (an API server before 1.29 drops the per-index fields).
        job_spec.update(backoffLimit=backoff * shards, backoffLimitPerIndex=backoff, maxFailedIndexes=0)
    if cfg.ttl_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = cfg.ttl_after_finished
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": job_name(run_name, step, stage), "labels": labels, "finalizers": [JOB_FINALIZER]},
           "spec": job_spec}
    kopf.adopt(job, owner=run, nested="spec.template")  # ownerReference, namespace, the run's labels
    if QUEUE_LABEL in job["metadata"]["labels"]:
        job_spec["suspend"] = True
        job_spec["template"]["metadata"]["labels"].pop(QUEUE_LABEL, None)
    return job
