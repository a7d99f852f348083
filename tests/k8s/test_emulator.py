"""The emulated API server behaves like Kubernetes where the operator and kubectl rely on it."""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from harness import Cluster, dataset_manifest, run_manifest, wait_for
from kubeapi import ApiError


def test_kubectl_apply_get_describe_delete(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    out = cluster.apply(run_manifest("demo", tmp_path / "store", unknownField=1), namespace=namespace)
    assert "lifelongrun.adaptinf.dev/demo created" in out
    obj = cluster.api.get("lifelongruns", namespace, "demo")
    meta = obj["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1 and meta["creationTimestamp"]
    assert "unknownField" not in obj["spec"]  # pruned, as the API server does
    assert obj["spec"]["training"]["epochs"] == 3  # CRD defaults filled in
    # A re-apply with a changed spec bumps generation; with the same spec it does not.
    cluster.apply(run_manifest("demo", tmp_path / "store", trainBudget=9), namespace=namespace)
    assert cluster.api.get("lifelongruns", namespace, "demo")["metadata"]["generation"] == 2

    table = cluster.kubectl("get", "llr", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "STEP", "STAGE", "PHASE", "POOL", "AVGACC", "FORGETTING", "AGE"]
    assert table[1].split()[0] == "demo"
    wide = cluster.kubectl("get", "lifelongruns.adaptinf.dev", "-n", namespace, "-o", "wide").stdout
    assert "STRATEGY" in wide and "lite-adapt-inf" in wide
    assert "lifelongrun.adaptinf.dev/demo" in cluster.kubectl("get", "adaptinf", "-n", namespace).stdout

    described = cluster.kubectl("describe", "llr", "demo", "-n", namespace).stdout
    assert "Train Budget:  9" in described and "Kind:         LifelongRun" in described

    assert 'lifelongrun.adaptinf.dev "demo" deleted' in cluster.kubectl("delete", "llr", "demo", "-n", namespace).stdout
    gone = cluster.kubectl("get", "llr", "demo", "-n", namespace, check=False)
    assert gone.returncode == 1 and "(NotFound)" in gone.stderr


def test_status_subresource_and_printer_columns(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cluster.apply(run_manifest("demo", tmp_path), namespace=namespace)
    before = cluster.api.get("lifelongruns", namespace, "demo")
    # Status only through /status, and a status write leaves spec and generation alone.
    cluster.api.patch("lifelongruns", namespace, "demo", {"spec": {"trainBudget": 5}, "status": {"phase": "Running"}},
                      sub="status")
    after = cluster.api.get("lifelongruns", namespace, "demo")
    assert after["status"] == {"phase": "Running"} and after["spec"]["trainBudget"] == 8
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    # ... and the main resource ignores status.
    cluster.api.patch("lifelongruns", namespace, "demo", {"status": {"phase": "Failed"}})
    assert cluster.api.get("lifelongruns", namespace, "demo")["status"] == {"phase": "Running"}

    cluster.kubectl("patch", "llr", "demo", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Succeeded", "step": 2, "stage": "prune", "poolSize": 120, "avgAcc": 0.8125,
                    "forgettingRate": 3.5}}))
    row = cluster.kubectl("get", "llr", "demo", "-n", namespace, "--no-headers").stdout.split()
    assert row[:7] == ["demo", "2", "prune", "Succeeded", "120", "0.8125", "3.5"]

    cluster.apply(dataset_manifest("d0", "demo", "/data/0.jsonl", order=0), namespace=namespace)
    cluster.api.patch("instructiondatasets", namespace, "d0", {"status": {"phase": "Succeeded", "step": 0,
                                                                          "accepted": 40, "rejected": 2}}, sub="status")
    table = cluster.kubectl("get", "ids", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "RUN", "STEP", "PHASE", "ACCEPTED", "REJECTED", "AGE"]
    assert table[1].split()[:6] == ["d0", "demo", "0", "Succeeded", "40", "2"]


def test_schema_admission_errors(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    bad = run_manifest("bad", tmp_path, trainBudget=0)
    bad["spec"]["model"] = {"base": "", "dtype": "int3"}
    proc = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "--validate=false", "-n",
                           namespace, "-f", "-"], input=json.dumps(bad), capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'The LifelongRun "bad" is invalid' in proc.stderr
    for field in ("spec.trainBudget", "spec.model.base", "spec.model.dtype"):
        assert field in proc.stderr
    with pytest.raises(ApiError) as err:
        cluster.api.create("lifelongruns", namespace, bad)
    assert err.value.code == 422 and err.value.body["reason"] == "Invalid"
    assert {c["field"] for c in err.value.body["details"]["causes"]} == {"spec.trainBudget", "spec.model.base",
                                                                           "spec.model.dtype"}
    # fieldValidation=Strict rejects unknown fields instead of pruning them.
    with pytest.raises(ApiError) as err:
        cluster.api.request("POST", cluster.api.path("lifelongruns", namespace),
                            run_manifest("strict", tmp_path, extra=1), query={"fieldValidation": "Strict"})
    assert err.value.code == 422 and "extra" in err.value.body["message"]

    cluster.api.create("lifelongruns", namespace, run_manifest("twice", tmp_path))
    with pytest.raises(ApiError) as err:
        cluster.api.create("lifelongruns", namespace, run_manifest("twice", tmp_path))
    assert err.value.code == 409 and err.value.body["reason"] == "AlreadyExists"
    with pytest.raises(ApiError) as err:
        cluster.api.get("lifelongruns", namespace, "nope")
    assert err.value.code == 404 and err.value.body["reason"] == "NotFound"


def test_lists_selectors_generate_name_and_namespaces(cluster: Cluster, namespace: str) -> None:
    for i, role in enumerate(["a", "a", "b"]):
        cluster.api.create("configmaps", namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "generateName": "cm-", "labels": {"role": role, **({"extra": "x"} if i == 0 else {})}}})
    listing = cluster.api.request("GET", cluster.api.path("configmaps", namespace))
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert int(listing["metadata"]["resourceVersion"]) > 0
    names = [o["metadata"]["name"] for o in listing["items"]]
    assert len(set(names)) == 3 and all(n.startswith("cm-") and len(n) == 8 for n in names)
    assert len(cluster.api.list("configmaps", namespace, labels="role=a")) == 2
    assert len(cluster.api.list("configmaps", namespace, labels="role in (a,b),!extra")) == 2
    assert len(cluster.api.list("configmaps", namespace, labels="role!=a")) == 1
    assert len(cluster.api.list("configmaps", namespace, fields=f"metadata.name={names[0]}")) == 1
    assert "cm-" in cluster.kubectl("get", "cm", "-n", namespace, "-l", "role=b").stdout
    # /api/v1 discovery and namespaces (kmock alone mis-parses both).
    v1 = cluster.api.request("GET", "/api/v1")
    assert v1["groupVersion"] == "v1" and any(r["name"] == "namespaces" and not r["namespaced"] for r in v1["resources"])
    assert namespace in [n["metadata"]["name"] for n in cluster.api.list("namespaces")]
    assert cluster.api.get("namespaces", None, namespace)["metadata"]["name"] == namespace


def test_kubectl_wait_and_watch(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cluster.apply(run_manifest("demo", tmp_path), namespace=namespace)

    def later() -> None:
        time.sleep(1.0)
        cluster.api.patch("lifelongruns", namespace, "demo", {"status": {"conditions": [
            {"type": "UpToDate", "status": "True", "reason": "AllStepsDone", "message": "",
             "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}, sub="status")

    thread = threading.Thread(target=later)
    thread.start()
    start = time.monotonic()
    out = cluster.kubectl("wait", "--for=condition=UpToDate", "llr/demo", "-n", namespace, "--timeout=20s").stdout
    thread.join()
    assert "condition met" in out and time.monotonic() - start < 15

    # A raw watch stream: the current object first, then changes, ending at timeoutSeconds.
    url = f"{cluster.server}{cluster.api.path('lifelongruns', namespace)}?watch=true&timeoutSeconds=2"
    threading.Timer(0.5, lambda: cluster.api.patch("lifelongruns", namespace, "demo",
                                                   {"metadata": {"labels": {"x": "y"}}})).start()
    with urllib.request.urlopen(url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert events[1]["object"]["metadata"]["labels"] == {"x": "y"}

    thread = threading.Thread(target=lambda: (time.sleep(1), cluster.kubectl("delete", "llr", "demo", "-n", namespace)))
    thread.start()
    cluster.kubectl("wait", "--for=delete", "llr/demo", "-n", namespace, "--timeout=20s")
    thread.join()


def test_finalizers_hold_deletion(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    obj = run_manifest("held", tmp_path)
    obj["metadata"]["finalizers"] = ["adaptinf.dev/cleanup"]
    cluster.api.create("lifelongruns", namespace, obj)
    cluster.kubectl("delete", "llr", "held", "-n", namespace, "--wait=false")
    held = cluster.api.get("lifelongruns", namespace, "held")
    assert held["metadata"]["deletionTimestamp"]
    cluster.api.patch("lifelongruns", namespace, "held", {"metadata": {"finalizers": None}})
    assert cluster.api.find("lifelongruns", namespace, "held") is None


def test_audit_log_records_every_request(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("get", "secrets", "-n", namespace)
    cluster.api.create("secrets", namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    entries = wait_for(lambda: [e for e in cluster.audit_entries() if e["namespace"] == namespace
                                and e["resource"] == "secrets"], 5, "audit entries")
    verbs = {(e["verb"], e["userAgent"].split("/")[0]) for e in entries}
    assert ("list", "kubectl") in verbs and ("create", "adaptinf-tests") in verbs
    assert all(set(e) >= {"verb", "group", "resource", "subresource", "namespace", "name"} for e in entries)


def test_crd_selectable_fields_select_lists_and_watches(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    for name, run in (("x0", "x"), ("x1", "x"), ("y0", "y")):
        cluster.api.create("instructiondatasets", namespace, dataset_manifest(name, run, tmp_path / "d.jsonl"))
    mine = cluster.api.list("instructiondatasets", namespace, fields="spec.run=x")
    assert sorted(d["metadata"]["name"] for d in mine) == ["x0", "x1"]
    assert [d["metadata"]["name"] for d in cluster.api.list("instructiondatasets", namespace,
                                                             fields="spec.run!=x")] == ["y0"]
    # A watch selects the same way; kubectl's watch ends at its timeout.
    watched = cluster.kubectl("get", "ids", "-n", namespace, "--watch", "--request-timeout=2s", "-o", "name",
                              "--field-selector", "spec.run=y", check=False).stdout.split()
    assert set(watched) == {"instructiondataset.adaptinf.dev/y0"}, watched  # listed, then watched
    # A field the CRD does not declare is refused, naming the ones that are, lists and watches alike.
    for query in ({}, {"watch": "true"}):
        with pytest.raises(ApiError) as refused:
            cluster.api.request("GET", cluster.api.path("instructiondatasets", namespace),
                                query={"fieldSelector": "spec.source=x", **query})
        assert refused.value.code == 400 and '"spec.run"' in refused.value.body["message"], refused.value.body
    # The audit log says how many items a list returned, or why it returned none.
    entries = [e for e in cluster.audit_entries() if (e["namespace"], e["verb"], e["resource"]) ==
               (namespace, "list", "instructiondatasets") and e["userAgent"] == "adaptinf-tests"]
    assert [(e["fieldSelector"], e.get("items"), e.get("code")) for e in entries] == \
        [("spec.run=x", 2, None), ("spec.run!=x", 1, None), ("spec.source=x", None, 400)]


def test_a_server_before_1_31_drops_selectable_fields(tmp_path: Path) -> None:
    from harness import CRDS, emulated_cluster

    with emulated_cluster(tmp_path, selectable_fields=False) as old:
        crd = old.api.get("customresourcedefinitions", None, "instructiondatasets.adaptinf.dev")
        assert "selectableFields" not in crd["spec"]["versions"][0]
        old.api.create("instructiondatasets", "default", dataset_manifest("d", "r", tmp_path / "d.jsonl"))
        with pytest.raises(ApiError) as refused:
            old.api.list("instructiondatasets", "default", fields="spec.run=r")
        assert refused.value.code == 400 and "is not a known field selector" in refused.value.body["message"]
        # Created again as `kubectl apply` sends it by default (strict field validation): 1.27-1.29
        # do not know the field and refuse it; without strict validation it is dropped.
        manifest = yaml.safe_load((CRDS / "instructiondatasets.yaml").read_text())
        crds = old.api.path("customresourcedefinitions")
        old.api.delete("customresourcedefinitions", None, "instructiondatasets.adaptinf.dev")
        with pytest.raises(ApiError) as strict:
            old.api.request("POST", crds, manifest, query={"fieldValidation": "Strict"})
        assert strict.value.code == 400, strict.value.body
        assert 'unknown field "spec.versions[0].selectableFields"' in strict.value.body["message"]
        created = old.api.request("POST", crds, manifest)
        assert "selectableFields" not in created["spec"]["versions"][0]
