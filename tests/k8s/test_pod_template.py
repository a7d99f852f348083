"""The pod-template overlay of `resources.<stage>` (docs/install.md "Pod template per stage"):
what the spec accepts and refuses, how a stage entry is laid over `default`, and what reaches the
stage Job's pod template — next to the operator's own labels, env and volumes, never over them."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from adaptinf import pod_template as specs
from adaptinf.operator.config import OperatorConfig
from adaptinf.operator.jobs import QUEUE_LABEL, STAGE_LABEL, build_job, job_labels
from adaptinf.spec import LifelongRunSpec, SpecError, parse_resource

K8S_VERSIONS = ("1.27.0", "1.35.0")  # as tests/chart/test_chart_render.py

DEFAULT = {
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu.example.com/class", "operator": "In", "values": ["h100", "a100"]}]}]}}},
    "imagePullSecrets": ["regcred", "mirror-creds", "regcred"],
    "podLabels": {"example.com/team": "vision", "cost-center": "ml-42"},
    "podAnnotations": {"example.com/owner": "vision-team@example.com", "note": "anything: at all"},
    "runtimeClassName": "nvidia",
    "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "LOG_FORMAT", "valueFrom": {"configMapKeyRef": {"name": "stage-cfg", "key": "log",
                                                                     "optional": True}}}],
    "envFrom": [{"configMapRef": {"name": "proxy"}}, {"secretRef": {"name": "wandb", "optional": True},
                                                      "prefix": "WANDB_"}],
    "volumes": [{"name": "hf-cache", "persistentVolumeClaim": {"claimName": "hf-cache"}},
                {"name": "certs", "configMap": {"name": "corp-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}}],
    "volumeMounts": [{"name": "hf-cache", "mountPath": "/tmp/huggingface"},
                     {"name": "certs", "mountPath": "/etc/corp-ca", "readOnly": True, "subPath": "ca"}],
    "ephemeralStorage": "50Gi",
}
RUN = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun",
       "metadata": {"name": "demo", "namespace": "ml", "uid": "run-uid", "labels": {"team": "vision", "tier": "run"}},
       "spec": {"model": {"base": "llava-hf/llava-1.5-7b-hf"}, "trainBudget": 100,
                "storage": {"uri": "s3://bucket/runs"}, "extract": {"shards": 2},
                "resources": {"default": DEFAULT,
                              "train": {"gpus": 4, "shmSize": "16Gi", "runtimeClassName": "nvidia-cdi",
                                        "podLabels": {"tier": "train"},
                                        "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
                                        "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
                                            "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "200Gi"}}}}}}],
                                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                              "eval": {"volumeMounts": [], "envFrom": []}}}}
DATASET = {"metadata": {"name": "ds-0", "namespace": "ml"}, "spec": {"run": "demo", "source": "s3://bucket/d0.jsonl"}}
FULL_CFG = {"ADAPTINF_S3_SECRET": "s3-creds", "ADAPTINF_S3_ENDPOINT": "http://minio:9000",
            "ADAPTINF_MLFLOW_URI": "http://mlflow:5000", "ADAPTINF_MLFLOW_SECRET": "mlf", "AWS_DEFAULT_REGION": "eu-1",
            "ADAPTINF_SERVICE_ACCOUNT": "stage-sa", "ADAPTINF_NODE_SELECTOR": '{"pool": "gpu"}'}
CACHE_CFG = {**FULL_CFG, "ADAPTINF_MODEL_CACHE_CLAIM": "models"}   # the chart's modelCache


def run_with(**stage_entries: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "r"},
            "spec": {"model": {"base": "m"}, "trainBudget": 8, "storage": {"uri": "s3://b/r"},
                     "resources": stage_entries}}


def pod(run: dict[str, Any], stage: str, env: dict[str, str] | None = None, step: int = 1) -> dict[str, Any]:
    cfg = OperatorConfig.from_env(FULL_CFG if env is None else env)
    return build_job(run, step, stage, DATASET, cfg)["spec"]["template"]


# -- the spec --------------------------------------------------------------------------------

def test_a_full_pod_template_is_accepted_and_round_trips() -> None:
    res = parse_resource(RUN)
    assert res.spec.to_dict()["resources"]["default"] == {**DEFAULT, "ephemeralStorage": "50Gi"}
    # What the operator reads back from ADAPTINF_RUN_SPEC validates to the same spec.
    assert LifelongRunSpec.model_validate(json.loads(json.dumps(res.spec.to_dict()))) == res.spec
    # A whole-number quantity is a quantity (as cpu: 8).
    spec = parse_resource(run_with(default={"ephemeralStorage": 100, "shmSize": 0})).spec
    assert (spec.resources.default.ephemeral_storage, spec.resources.default.shm_size) == ("100", "0")


def test_a_stage_entry_replaces_the_defaults_field_by_field() -> None:
    resources = parse_resource(RUN).spec.resources
    train, extract, evaluate = (resources.for_stage(s) for s in ("train", "extract", "eval"))
    # Not set by the stage: the default's, as a whole.
    assert extract.to_dict() == {**DEFAULT, "ephemeralStorage": "50Gi"}
    assert train.affinity == DEFAULT["affinity"] and train.image_pull_secrets == DEFAULT["imagePullSecrets"]
    # Set by the stage: its own, lists and maps replaced, not merged.
    assert train.pod_labels == {"tier": "train"} and [e.name for e in train.env or []] == ["NCCL_DEBUG"]
    assert [v.name for v in train.volumes or []] == ["scratch"] and train.runtime_class_name == "nvidia-cdi"
    # An empty list clears the default's.
    assert evaluate.volume_mounts == [] and evaluate.env_from == [] and len(evaluate.volumes or []) == 2


def spec_error(run: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        parse_resource(run)
    return str(err.value)


@pytest.mark.parametrize(("entry", "field", "words"), [
    # labels the operator (or the Job controller, or Kueue) sets
    ({"podLabels": {"adaptinf.dev/run": "other"}}, "spec.resources.train.podLabels", "adaptinf.dev/run is set by the operator"),
    ({"podLabels": {"adaptinf.dev/anything": "x"}}, "spec.resources.train.podLabels", "adaptinf.dev/anything"),
    ({"podLabels": {"app.kubernetes.io/managed-by": "me"}}, "spec.resources.train.podLabels",
     "app.kubernetes.io/managed-by is set by the operator"),
    ({"podLabels": {QUEUE_LABEL: "team-a"}}, "spec.resources.train.podLabels", QUEUE_LABEL),
    ({"podLabels": {"batch.kubernetes.io/job-name": "x"}}, "spec.resources.train.podLabels", "job-name"),
    ({"podLabels": {"-team": "a"}}, "spec.resources.train.podLabels", "label key '-team'"),
    ({"podLabels": {"Example.com/team": "a"}}, "spec.resources.train.podLabels", "prefix must be a DNS subdomain"),
    ({"podLabels": {"team": "x" * 64}}, "spec.resources.train.podLabels.team", "at most 63"),
    ({"podAnnotations": {"adaptinf.dev/failure": "x"}}, "spec.resources.train.podAnnotations", "adaptinf.dev/"),
    # env names the operator sets, and the shape of env
    ({"env": [{"name": "ADAPTINF_STORE", "value": "s3://elsewhere"}]}, "spec.resources.train.env.0.name",
     "ADAPTINF_STORE is set by the operator"),
    ({"env": [{"name": "ok", "value": "1"}, {"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]},
     "spec.resources.train.env.1.name", "AWS_SECRET_ACCESS_KEY is set by the operator"),
    ({"env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://x"}]}, "spec.resources.train.env.0.name", "operator"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec.resources.train.env",
     "must not repeat: A"),
    ({"env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "spec.resources.train.env.0", "not both"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                          "configMapKeyRef": {"name": "c", "key": "k"}}}]},
     "spec.resources.train.env.0.valueFrom", "exactly one of secretKeyRef or configMapKeyRef, got both"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
     "spec.resources.train.env.0.valueFrom.secretKeyRef.key", "Field required"),
    ({"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
     "spec.resources.train.env.0.valueFrom.fieldRef", "Extra inputs"),
    ({"envFrom": [{"prefix": "X_"}]}, "spec.resources.train.envFrom.0", "exactly one of secretRef or configMapRef"),
    # volumes and mounts
    ({"volumes": [{"name": "data"}]}, "spec.resources.train.volumes.0", "exactly one volume source"),
    ({"volumes": [{"name": "data", "emptyDir": {}, "hostPath": {"path": "/"}}]}, "spec.resources.train.volumes.0",
     "got emptyDir, hostPath"),
    ({"volumes": [{"name": "dshm", "emptyDir": {}}]}, "spec.resources.train.volumes.0.name", "shmSize"),
    ({"volumes": [{"name": "Data", "emptyDir": {}}]}, "spec.resources.train.volumes.0.name", "pattern"),
    ({"volumes": [{"name": "d", "emptyDir": {}}, {"name": "d", "configMap": {"name": "c"}}]},
     "spec.resources.train.volumes", "must not repeat: d"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     "spec.resources.train.volumeMounts.0.name", "'data' is no volume of the train stage"),
    ({"volumeMounts": [{"name": "dshm", "mountPath": "/shm"}]}, "spec.resources.train.volumeMounts.0.name",
     "the operator's volume"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "d", "mountPath": "/dev/shm"}]},
     "spec.resources.train.volumeMounts.0.mountPath", "collides with the operator's mount /dev/shm"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "d", "mountPath": "/dev/"}]},
     "spec.resources.train.volumeMounts.0.mountPath", "collides"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "d", "mountPath": "data"}]},
     "spec.resources.train.volumeMounts.0.mountPath", "pattern"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "d", "mountPath": "/a", "subPath": "../x"}]},
     "spec.resources.train.volumeMounts.0.subPath", "without '..'"),
    ({"volumes": [{"name": "d", "emptyDir": {}}], "volumeMounts": [{"name": "d", "mountPath": "/a"},
                                                                  {"name": "d", "mountPath": "/a/"}]},
     "spec.resources.train.volumeMounts", "must not repeat: /a"),
    # quantities, names
    ({"ephemeralStorage": "50GB"}, "spec.resources.train.ephemeralStorage", "pattern"),
    ({"ephemeralStorage": -1}, "spec.resources.train.ephemeralStorage", "negative"),
    ({"shmSize": 0.5}, "spec.resources.train.shmSize", "'500m'"),
    ({"shmSize": "1 Gi"}, "spec.resources.train.shmSize", "pattern"),
    ({"runtimeClassName": "Kata_QEMU"}, "spec.resources.train.runtimeClassName", "pattern"),
    ({"imagePullSecrets": ["Reg_Cred"]}, "spec.resources.train.imagePullSecrets", "no Secret name"),
    ({"imagePullSecrets": [{"name": "regcred"}]}, "spec.resources.train.imagePullSecrets.0", "valid string"),
    ({"affinity": ["nodeAffinity"]}, "spec.resources.train.affinity", "dictionary"),
])
def test_bad_pod_templates_are_refused_naming_the_field(entry: dict, field: str, words: str) -> None:
    message = spec_error(run_with(train=entry))
    line = next((ln for ln in message.splitlines() if ln.strip().startswith(f"{field}:")), None)
    assert line is not None, message
    assert words in line, line


def test_a_default_mount_must_name_a_volume_of_every_stage_it_reaches() -> None:
    """train's own `volumes` replace the default's: the default's mount of `cache` then names
    nothing in train — refused, naming the mount, the stage and where its volumes come from."""
    default = {"volumes": [{"name": "cache", "emptyDir": {}}], "volumeMounts": [{"name": "cache", "mountPath": "/c"}]}
    assert parse_resource(run_with(default=default))  # every stage inherits both: fine
    message = spec_error(run_with(default=default, train={"volumes": [{"name": "other", "emptyDir": {}}]}))
    assert ("spec.resources.default.volumeMounts.0.name: 'cache' is no volume of the train stage "
            "(declared in resources.train.volumes: other)") in message
    # The stage mounts what it declares, or clears the default's mounts: fine again.
    assert parse_resource(run_with(default=default, train={"volumes": [{"name": "other", "emptyDir": {}}],
                                                           "volumeMounts": [{"name": "other", "mountPath": "/o"}]}))
    assert parse_resource(run_with(default=default, clusterSelect={"volumes": [], "volumeMounts": []}))
    message = spec_error(run_with(default=default, clusterSelect={"volumes": []}))
    assert "'cache' is no volume of the clusterSelect stage (declared in resources.clusterSelect.volumes: none)" in message


def test_the_reserved_names_are_what_the_operator_sets() -> None:
    """pod_template.py's lists of operator-owned labels, env names and volumes cover everything build_job
    puts on a pod, whatever the stage and the operator's configuration."""
    run = copy.deepcopy(RUN)
    run["metadata"]["labels"][QUEUE_LABEL] = "team-a"
    for stage in ("extract", "cluster-select", "train", "eval", "prune"):
        template = pod(run, stage, env=CACHE_CFG)
        labels = set(template["metadata"]["labels"]) - set(run["metadata"]["labels"]) - set(DEFAULT["podLabels"])
        assert labels == set(job_labels("demo", 1, stage, "ds-0")), stage
        assert all(specs.reserved(k, specs.OPERATOR_LABELS, specs.OPERATOR_LABEL_PREFIXES) for k in labels | {QUEUE_LABEL})
        (container,) = template["spec"]["containers"]
        user = {e.name for e in LifelongRunSpec.model_validate(run["spec"]).resources.for_stage(stage).env or []}
        own = {e["name"] for e in container["env"]} - user - set(specs.OPERATOR_ENV_UNLESS_SET)
        assert own and all(specs.reserved(n, specs.OPERATOR_ENV, specs.OPERATOR_ENV_PREFIXES) for n in own), own
        assert "JOB_COMPLETION_INDEX" in specs.OPERATOR_ENV  # Kubernetes sets it in the Indexed extract Job
    volumes = {v["name"] for v in pod(RUN, "train", env=CACHE_CFG)["spec"]["volumes"]} - {"scratch"}
    assert volumes == set(specs.OPERATOR_VOLUMES)


def _env(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = template["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_hf_token_comes_from_the_token_secret() -> None:
    """model.tokenSecret: every stage pod gets HF_TOKEN by secretKeyRef (never a value); a stage env
    that sets HF_TOKEN too is refused naming the field."""
    run = copy.deepcopy(RUN)
    run["spec"]["model"]["tokenSecret"] = "hf-gated"
    run["spec"]["resources"]["default"]["env"] = [e for e in DEFAULT["env"] if e["name"] != "HF_TOKEN"]
    for stage in ("extract", "cluster-select", "train", "eval", "prune"):
        token = _env(pod(run, stage))["HF_TOKEN"]
        assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-gated", "key": "HF_TOKEN",
                                                                            "optional": False}}}, stage
    run["spec"]["model"].pop("tokenSecret")
    assert "HF_TOKEN" not in _env(pod(run, "train"))   # no Secret named: no token
    both = copy.deepcopy(RUN)
    both["spec"]["model"]["tokenSecret"] = "hf-gated"
    assert "spec.resources.default.env: HF_TOKEN comes from model.tokenSecret (hf-gated)" in spec_error(both)


def test_the_model_cache_claim_is_mounted_into_every_stage() -> None:
    """ADAPTINF_MODEL_CACHE_CLAIM (the chart's modelCache): a PVC at the cache path, which the
    stage finds in ADAPTINF_MODEL_CACHE and huggingface_hub in HF_HOME; a run's own HF_HOME wins."""
    for stage in ("extract", "cluster-select", "train", "eval", "prune"):
        template = pod(RUN, stage, env=CACHE_CFG)
        assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}} in template["spec"]["volumes"]
        (container,) = template["spec"]["containers"]
        assert {"name": "model-cache", "mountPath": "/cache/models"} in container["volumeMounts"]
        env = _env(template)
        assert env["ADAPTINF_MODEL_CACHE"]["value"] == env["HF_HOME"]["value"] == "/cache/models"
    own = copy.deepcopy(RUN)
    own["spec"]["resources"]["default"]["env"].append({"name": "HF_HOME", "value": "/tmp/huggingface"})
    (container,) = pod(own, "eval", env=CACHE_CFG)["spec"]["containers"]
    assert [e["value"] for e in container["env"] if e["name"] == "HF_HOME"] == ["/tmp/huggingface"]
    no_cache = pod(RUN, "eval")
    assert "ADAPTINF_MODEL_CACHE" not in _env(no_cache)
    assert "model-cache" not in {v["name"] for v in no_cache["spec"].get("volumes", [])}


# -- the Job's pod template --------------------------------------------------------------------

def test_the_pod_template_carries_every_field_for_a_stage() -> None:
    template = pod(RUN, "train")
    meta, spec = template["metadata"], template["spec"]
    # Labels: the stage's own podLabels (replacing the default's), over the run's labels, under
    # the operator's; annotations from the default.
    assert meta["labels"]["tier"] == "train" and meta["labels"]["team"] == "vision"
    assert "example.com/team" not in meta["labels"]
    assert meta["labels"][STAGE_LABEL] == "train" and meta["labels"]["app.kubernetes.io/managed-by"] == "adaptinf-operator"
    assert meta["annotations"] == DEFAULT["podAnnotations"]
    assert spec["affinity"] == DEFAULT["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-creds"}]  # once each, in order
    assert spec["runtimeClassName"] == "nvidia-cdi"
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["serviceAccountName"] == "stage-sa"
    # The memory-backed /dev/shm, sized; the stage's volume next to it.
    assert spec["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                               RUN["spec"]["resources"]["train"]["volumes"][0]]
    (c,) = spec["containers"]
    assert c["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": "/scratch"}]
    env = {e["name"]: e for e in c["env"]}
    assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "INFO"}
    assert "HF_TOKEN" not in env   # train's env replaces the default's
    # The operator's variables stay.
    assert env["ADAPTINF_TRAIN_PROCESSES"]["value"] == "4" and env["ADAPTINF_DATASET"]["value"] == "ds-0"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert c["envFrom"] == DEFAULT["envFrom"]
    assert c["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert "ephemeral-storage" not in c["resources"].get("limits", {})   # a request only


def test_a_stage_without_its_own_entry_inherits_the_default() -> None:
    template = pod(RUN, "extract")
    meta, spec = template["metadata"], template["spec"]
    assert {k: meta["labels"][k] for k in DEFAULT["podLabels"]} == DEFAULT["podLabels"]
    assert meta["labels"]["tier"] == "run"   # the run's own label (kopf.adopt) where podLabels do not say
    assert meta["annotations"] == DEFAULT["podAnnotations"] and spec["affinity"] == DEFAULT["affinity"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["volumes"] == DEFAULT["volumes"]   # no /dev/shm: one device, no shmSize
    (c,) = spec["containers"]
    assert c["volumeMounts"] == DEFAULT["volumeMounts"] and c["envFrom"] == DEFAULT["envFrom"]
    env = {e["name"]: e for e in c["env"]}
    for var in DEFAULT["env"]:
        assert env[var["name"]] == var
    assert env["ADAPTINF_SHARDS"]["value"] == "2" and c["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    # eval cleared the default's mounts and envFrom (empty lists), keeps its volumes.
    (c,) = pod(RUN, "eval")["spec"]["containers"]
    assert "volumeMounts" not in c and "envFrom" not in c


def test_shm_size_default_and_opt_out() -> None:
    """No shmSize: a multi-GPU train gets an unsized memory-backed /dev/shm (as before), other
    stages none; shmSize sizes it for any stage; shmSize 0 removes it, even for a multi-GPU train."""
    cfg = {"ADAPTINF_DEFAULT_GPUS": "2"}
    bare = run_with(default={})

    def shm(run: dict[str, Any], stage: str) -> Any:
        volumes = pod(run, stage, cfg)["spec"].get("volumes", [])
        return next((v["emptyDir"] for v in volumes if v["name"] == "dshm"), None)
    assert shm(bare, "train") == {"medium": "Memory"} and shm(bare, "eval") is None
    sized = run_with(default={"shmSize": "2Gi"})
    assert shm(sized, "eval") == {"medium": "Memory", "sizeLimit": "2Gi"} == shm(sized, "cluster-select")
    assert shm(run_with(train={"shmSize": 0}), "train") is None
    assert shm(run_with(train={"shmSize": "0Gi"}), "train") is None
    assert "volumeMounts" not in pod(run_with(train={"shmSize": 0}), "train", cfg)["spec"]["containers"][0]


def test_no_pod_template_changes_nothing() -> None:
    """A run without any pod-template field gets the Job it got before (no empty keys)."""
    template = pod(run_with(default={"gpus": 1}), "eval", {})
    assert set(template["metadata"]) == {"labels"}
    assert set(template["spec"]) == {"restartPolicy", "containers"}
    assert set(template["spec"]["containers"][0]) == {"name", "image", "imagePullPolicy", "command", "env",
                                                      "resources", "terminationMessagePolicy", "securityContext"}


@pytest.mark.parametrize("stage", ["extract", "train", "eval"])
def test_the_jobs_are_valid_kubernetes_jobs(stage: str) -> None:
    """What the overlay renders is a pod template the API server's OpenAPI schema accepts (strict:
    no unknown field anywhere, volumes and affinity included). Checked as a v1 PodTemplate: the
    schema of 1.27 wrongly requires `onPodConditions` in every podFailurePolicy rule."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    job = build_job(RUN, 1, stage, DATASET, OperatorConfig.from_env(FULL_CFG))
    template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": job["metadata"]["name"]},
                "template": job["spec"]["template"]}
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(template, version, strict=True)
    kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)
