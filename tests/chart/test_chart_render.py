"""The Helm chart renders, lints, validates against Kubernetes' schemas and enforces its values schema.

Needs a real helm (tools/get-helm.sh); see conftest.py.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re

import jsonschema
import pytest
import yaml

from adaptinf.operator.config import OperatorConfig
from chart_helpers import (CHART, NAMESPACE, RELEASE, REPO, HelmError, by_kind, container_env, one,
                           run_helm)

GPU_VALUES = CHART / "values-gpu-cluster.yaml"
NS_MODE = ("watch.mode=namespace",)
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest helm 4.1 knows.
K8S_VERSIONS = ("1.27.0", "1.35.0")

VARIANTS = {
    "default": ((), ()),
    "gpu-cluster": ((GPU_VALUES,), ()),
    "namespace-mode": ((), NS_MODE),
    "namespace-mode-other-ns": ((GPU_VALUES,), NS_MODE + ("watch.namespace=team-a",)),
}


def crd_schema():
    """tests/k8s/schema.py (a CRD's schema as JSON Schema), under a name of its own."""
    spec = importlib.util.spec_from_file_location("adaptinf_k8s_crdschema", REPO / "tests" / "k8s" / "schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def contract_env_names() -> list[str]:
    """The operator env vars of docs/contracts.md §2 (first column of its table)."""
    text = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    section = text.split("## 2.", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*`(ADAPTINF_[A-Z0-9_]+)`", section, flags=re.M)


def operator(docs) -> dict:
    return one(docs, "Deployment")


# --- lint / render / validate ------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(helm, variant):
    files, sets = VARIANTS[variant]
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for f in files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    out = run_helm(helm, *args)
    assert "0 chart(s) failed" in out, out


def before_selectable_fields(doc: dict, version: str) -> dict:
    """The CRD as Kubernetes `version` knows it: before 1.30 there is no `selectableFields` (the
    server drops it, strict validation refuses it: docs/install.md says what to do there)."""
    if doc["kind"] != "CustomResourceDefinition" or tuple(map(int, version.split(".")[:2])) >= (1, 30):
        return doc
    doc = copy.deepcopy(doc)
    for v in doc["spec"]["versions"]:
        v.pop("selectableFields", None)
    return doc


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_validate_against_kubernetes_schemas(render, variant):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    files, sets = VARIANTS[variant]
    docs = render(files, sets, crds=True)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "CustomResourceDefinition"} <= kinds
    # Objects of the chart's own CRDs (the peering object) against those CRDs' schemas.
    served = {(f"{c['spec']['group']}/{v['name']}", c["spec"]["names"]["kind"]): v["schema"]["openAPIV3Schema"]
              for c in by_kind(docs, "CustomResourceDefinition") for v in c["spec"]["versions"]}
    custom = [d for d in docs if (d["apiVersion"], d["kind"]) in served]
    assert {d["kind"] for d in custom} == {"KopfPeering" if "watch.mode=namespace" in sets else "ClusterKopfPeering"}
    for doc in custom:
        jsonschema.validate(doc, crd_schema().to_json_schema(served[(doc["apiVersion"], doc["kind"])]))
    for version in K8S_VERSIONS:
        for doc in (d for d in docs if d not in custom):
            try:
                kubernetes_validate.validate(before_selectable_fields(doc, version), version, strict=True)
            except kubernetes_validate.ValidationError as e:  # pragma: no cover - message only
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {e}")


def test_selectable_fields_are_the_one_field_older_servers_do_not_know():
    """What docs/install.md warns about: strict validation (kubectl apply's and Helm 4's default)
    on Kubernetes 1.27-1.29 refuses the dataset CRD's selectableFields, and nothing else; 1.30
    knows the field."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    crd = yaml.safe_load((REPO / "crds" / "instructiondatasets.yaml").read_text())
    with pytest.raises(kubernetes_validate.ValidationError, match="selectableFields"):
        kubernetes_validate.validate(crd, K8S_VERSIONS[0], strict=True)
    kubernetes_validate.validate(before_selectable_fields(crd, K8S_VERSIONS[0]), K8S_VERSIONS[0], strict=True)
    kubernetes_validate.validate(crd, "1.30.0", strict=True)


def test_default_is_cluster_mode(render):
    docs = render()
    assert [d["kind"] for d in by_kind(docs, "Role") + by_kind(docs, "RoleBinding")] == []
    role, binding = one(docs, "ClusterRole"), one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    dep = operator(docs)
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in container["args"]
    assert container_env(dep)["ADAPTINF_NAMESPACE"] == ""


def test_operator_doc_rbac_table_is_the_charts_cluster_role(render):
    """docs/operator.md "API access": (group, resource, verb) rows equal the ClusterRole's rules."""
    text = (REPO / "docs" / "operator.md").read_text(encoding="utf-8")
    section = text.split("## API access", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for group, resources, verbs in re.findall(r"^\| `([^`]*)` \| (.+?) \| (.+?) \|$", section, flags=re.M):
        # The ClusterRole is cluster mode's; a resource marked "(namespace mode)" is the Role's.
        for resource in re.findall(r"`([^`]+)`", re.sub(r"`[^`]+` \(namespace mode\)", "", resources)):
            for verb in re.sub(r"\([^)]*\)", "", verbs).split(","):
                documented.add((group.strip('"'), resource, verb.strip()))
    granted = {(g, r, v) for rule in one(render(), "ClusterRole")["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert documented == granted, (f"in the doc only: {sorted(documented - granted)}; "
                                   f"in the chart only: {sorted(granted - documented)}")


@pytest.mark.parametrize("watch_ns", [None, "team-a"])
def test_namespace_mode_has_no_cluster_scoped_rbac(render, watch_ns):
    sets = NS_MODE + ((f"watch.namespace={watch_ns}",) if watch_ns else ())
    docs = render((), sets)
    expected_ns = watch_ns or NAMESPACE
    assert by_kind(docs, "ClusterRole") == [] and by_kind(docs, "ClusterRoleBinding") == []
    role, binding = one(docs, "Role"), one(docs, "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == expected_ns
    assert binding["subjects"][0]["namespace"] == NAMESPACE  # the operator's own namespace
    dep = operator(docs)
    assert dep["metadata"]["namespace"] == NAMESPACE
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert f"--namespace={expected_ns}" in container["args"]
    assert "--all-namespaces" not in container["args"]
    assert container_env(dep)["ADAPTINF_NAMESPACE"] == expected_ns


def test_rbac_create_false_renders_no_rbac(render):
    docs = render((), ("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=my-op"))
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]
    assert by_kind(docs, "ServiceAccount") == []
    assert operator(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "my-op"


# --- the operator Deployment -------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_is_single_replica_recreate_and_restricted(render, variant):
    dep = operator(render(*VARIANTS[variant]))
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc or sc["privileged"] is False
    # /tmp is the only writable path.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols["tmp"]
    assert not any("hostPath" in v for v in pod["volumes"])
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_probes_hit_kopfs_liveness_endpoint(render):
    c = operator(render())["spec"]["template"]["spec"]["containers"][0]
    argv = c["command"] + c["args"]
    assert argv[:4] == ["kopf", "run", "-m", "adaptinf.operator.main"]
    (liveness,) = [a for a in argv if a.startswith("--liveness=")]
    m = re.fullmatch(r"--liveness=http://0\.0\.0\.0:(\d+)(/\S*)", liveness)
    assert m, liveness
    port, path = int(m.group(1)), m.group(2)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"]["path"] == path
        assert ports[probe["httpGet"]["port"]] == port


def test_security_context_uid_can_be_left_to_the_platform(render):
    pod = operator(render((), ("securityContext.runAsUser=null", "securityContext.runAsGroup=null")))
    psc = pod["spec"]["template"]["spec"]["securityContext"]
    assert "runAsUser" not in psc and "runAsGroup" not in psc and psc["runAsNonRoot"] is True


# --- operator configuration (docs/contracts.md §2) -----------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_operator_env_is_exactly_the_contract(render, variant):
    names = contract_env_names()
    assert len(names) >= 15 and "ADAPTINF_STAGE_IMAGE" in names, names
    env = container_env(operator(render(*VARIANTS[variant])))
    ours = {k for k in env if k.startswith("ADAPTINF_")}
    assert ours == set(names), f"missing {set(names) - ours}, not in the contract {ours - set(names)}"
    # Plain strings only: the operator parses them.
    assert all(isinstance(env[n], str) for n in names)


def test_operator_env_defaults_match_the_contract(render):
    env = container_env(operator(render()))
    assert env["ADAPTINF_STAGE_IMAGE"] == "ghcr.io/adaptinf/adaptinf-stage:0.1.0"
    assert env["ADAPTINF_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["ADAPTINF_GPU_RESOURCE"] == "nvidia.com/gpu"
    assert env["ADAPTINF_DEFAULT_GPUS"] == "1"
    assert json.loads(env["ADAPTINF_NODE_SELECTOR"]) == {}
    assert json.loads(env["ADAPTINF_TOLERATIONS"]) == []
    assert env["ADAPTINF_BACKOFF_LIMIT"] == "2"
    assert env["ADAPTINF_ACTIVE_DEADLINE"] == "86400"
    assert env["ADAPTINF_PENDING_TIMEOUT"] == "1800"
    assert float(env["ADAPTINF_ARRIVAL_WINDOW"]) == OperatorConfig().arrival_window
    for empty in ("ADAPTINF_NAMESPACE", "ADAPTINF_STORE", "ADAPTINF_S3_ENDPOINT", "ADAPTINF_S3_SECRET",
                  "ADAPTINF_MLFLOW_URI", "ADAPTINF_MLFLOW_SECRET", "ADAPTINF_SERVICE_ACCOUNT",
                  "ADAPTINF_TTL_AFTER_FINISHED"):
        assert env[empty] == "", empty
    assert not any(k.startswith("AWS_") for k in env)


def test_gpu_cluster_values_reach_the_operator(render):
    values = yaml.safe_load(GPU_VALUES.read_text())
    docs = render((GPU_VALUES,))
    env = container_env(operator(docs))
    assert env["ADAPTINF_STORE"] == "s3://adaptinf-artifacts/runs"
    assert json.loads(env["ADAPTINF_NODE_SELECTOR"]) == values["stage"]["nodeSelector"]
    assert json.loads(env["ADAPTINF_TOLERATIONS"]) == values["stage"]["tolerations"]
    assert env["ADAPTINF_TTL_AFTER_FINISHED"] == "604800"
    assert env["ADAPTINF_MLFLOW_URI"] == values["mlflow"]["trackingUri"]
    assert env["ADAPTINF_S3_SECRET"] == "adaptinf-s3" and env["ADAPTINF_MLFLOW_SECRET"] == "adaptinf-mlflow"
    # The operator reads the store itself: credentials by secretKeyRef, never literal values.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": "adaptinf-s3", "key": key}}
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    # The stage ServiceAccount exists, is the one the operator puts in Jobs, and mounts no token.
    stage_sa = [sa for sa in by_kind(docs, "ServiceAccount") if sa["metadata"]["name"].endswith("-stage")]
    assert all(sa["automountServiceAccountToken"] is False for sa in stage_sa)
    assert {sa["metadata"]["name"] for sa in stage_sa} == {env["ADAPTINF_SERVICE_ACCOUNT"]}
    # In the release namespace and in `ml`, where docs/install.md puts the runs (and their pods).
    assert sorted(sa["metadata"]["namespace"] for sa in stage_sa) == sorted({operator(docs)["metadata"]["namespace"],
                                                                              "ml"})


def test_store_from_uri_and_endpoint(render):
    env = container_env(operator(render((), ("storage.uri=s3://bkt/some/prefix",
                                             "storage.s3.endpoint=http://minio.minio:9000"))))
    assert env["ADAPTINF_STORE"] == "s3://bkt/some/prefix"
    assert env["ADAPTINF_S3_ENDPOINT"] == env["AWS_ENDPOINT_URL_S3"] == "http://minio.minio:9000"
    env = container_env(operator(render((), ("storage.s3.bucket=bkt", "storage.s3.prefix=/a/b/"))))
    assert env["ADAPTINF_STORE"] == "s3://bkt/a/b"
    env = container_env(operator(render((), ("storage.s3.bucket=bkt", "storage.s3.prefix="))))
    assert env["ADAPTINF_STORE"] == "s3://bkt"


def test_image_digest_wins_over_tag(render):
    digest = "sha256:" + "a" * 64
    docs = render((), (f"image.digest={digest}", f"stage.image.digest={digest}", "stage.image.tag=x"))
    dep = operator(docs)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/adaptinf/adaptinf-operator@{digest}"
    assert container_env(dep)["ADAPTINF_STAGE_IMAGE"] == f"ghcr.io/adaptinf/adaptinf-stage@{digest}"


def test_big_integers_from_values_files_stay_integers(render, tmp_path):
    # Helm reads values files as JSON numbers (float64): 1000000 must not become "1e+06".
    f = tmp_path / "v.yaml"
    f.write_text("stage:\n  activeDeadlineSeconds: 1000000\n  ttlSecondsAfterFinished: 2000000\n")
    env = container_env(operator(render((f,))))
    assert env["ADAPTINF_ACTIVE_DEADLINE"] == "1000000"
    assert env["ADAPTINF_TTL_AFTER_FINISHED"] == "2000000"


def test_no_secret_is_ever_rendered(render):
    for variant in VARIANTS.values():
        assert by_kind(render(*variant), "Secret") == []


# --- values schema rejects bad values -------------------------------------------------------------

BAD_SETS = {
    "two replicas": "replicaCount=2",
    "unknown top-level key": "replicas=1",
    "unknown nested key": "stage.gpus=2",
    "unknown key in image": "image.name=x",
    "wrong type (count)": "stage.gpu.count=many",
    "negative GPUs": "stage.gpu.count=-1",
    "wrong type (bool)": "rbac.create=yes",
    "bad enum (watch mode)": "watch.mode=all",
    "bad enum (log format)": "operator.logFormat=xml",
    "bad enum (pull policy)": "stage.image.pullPolicy=Sometimes",
    "bad digest": "image.digest=latest",
    "local store path": "storage.uri=/data/store",
    "bad bucket name": "storage.s3.bucket=Not_A_Bucket",
    "bad namespace": "watch.namespace=Team_A",
    "bad toleration operator": "stage.tolerations[0].operator=Maybe",
    "node selector value not a string": "stage.nodeSelector.gpu=true",
    "root uid": "securityContext.runAsUser=0",
}


@pytest.mark.parametrize("bad", BAD_SETS.values(), ids=list(BAD_SETS))
def test_schema_rejects_bad_values(render, bad):
    with pytest.raises(HelmError, match="schema"):
        render((), (bad,))


@pytest.mark.parametrize("text", [
    "stage:\n  gpu:\n    count: 1.5\n",
    "resources: 500m\n",
    "tolerations:\n  - key: a\n    operatr: Exists\n",
    "stage:\n  nodeSelector: [gpu]\n",
], ids=["float GPUs", "resources not a map", "typo in toleration", "nodeSelector a list"])
def test_schema_rejects_bad_values_files(render, tmp_path, text):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(HelmError, match="schema"):
        render((f,))


def test_uri_and_bucket_together_are_refused(render):
    with pytest.raises(HelmError, match="either storage.uri or storage.s3.bucket"):
        render((), ("storage.uri=s3://bkt-a/b", "storage.s3.bucket=bkt-c"))


def test_every_default_value_is_declared_in_the_schema():
    """values.yaml itself satisfies the schema (checked here with jsonschema, independently of helm)."""
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)


# --- NOTES.txt ------------------------------------------------------------------------------------

def test_notes_tell_how_to_apply_and_watch(helm):
    out = run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                   "-f", str(GPU_VALUES))
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl -n <namespace> get lifelongruns" in notes
    assert "apply -f" in notes and "InstructionDataset" in notes
    assert "s3://adaptinf-artifacts/runs" in notes
    assert "crds/" in notes  # how to upgrade CRDs


# --- CRDs: generated into crds/ and the chart (tests/test_crds_generated.py) ----------------------

def test_chart_ships_both_crds_and_rbac_names_their_resources(render):
    docs = render(crds=True)
    crds = {d["spec"]["group"]: set() for d in by_kind(docs, "CustomResourceDefinition")}
    for d in by_kind(docs, "CustomResourceDefinition"):
        crds[d["spec"]["group"]].add(d["spec"]["names"]["plural"])
    assert crds.get("adaptinf.dev") == {"lifelongruns", "instructiondatasets"}, crds
    for rule in one(docs, "ClusterRole")["rules"]:
        if "adaptinf.dev" in rule["apiGroups"]:
            for res in rule["resources"]:
                assert res.split("/")[0] in crds["adaptinf.dev"], res


def test_model_cache_values_reach_the_operator_and_make_a_claim_per_stage_namespace(render):
    """modelCache: the operator mounts the claim into stage pods (ADAPTINF_MODEL_CACHE_CLAIM/_PATH);
    the chart creates one per stage namespace unless existingClaim names the user's own."""
    assert container_env(operator(render()))["ADAPTINF_MODEL_CACHE_CLAIM"] == ""
    assert not by_kind(render(), "PersistentVolumeClaim")
    docs = render((GPU_VALUES,))
    env = container_env(operator(docs))
    claims = by_kind(docs, "PersistentVolumeClaim")
    assert {c["metadata"]["name"] for c in claims} == {env["ADAPTINF_MODEL_CACHE_CLAIM"]}
    assert sorted(c["metadata"]["namespace"] for c in claims) == sorted({operator(docs)["metadata"]["namespace"], "ml"})
    assert all(c["spec"]["accessModes"] == ["ReadWriteMany"] and c["spec"]["resources"]["requests"]["storage"] == "200Gi"
               for c in claims)
    assert env["ADAPTINF_MODEL_CACHE_PATH"] == "/cache/models"
    own = render((), ("modelCache.enabled=true", "modelCache.existingClaim=team-models", "modelCache.mountPath=/models"))
    assert not by_kind(own, "PersistentVolumeClaim")
    env = container_env(operator(own))
    assert (env["ADAPTINF_MODEL_CACHE_CLAIM"], env["ADAPTINF_MODEL_CACHE_PATH"]) == ("team-models", "/models")
