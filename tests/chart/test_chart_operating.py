"""The chart's operating surface: Kopf peering (args, object, RBAC) in both watch modes, the
metrics port/Service/ServiceMonitor, and the probes on Kopf's liveness endpoint."""
from __future__ import annotations

import pytest

from chart_helpers import NAMESPACE, HelmError, by_kind, container_env, one

NS_MODE = ("watch.mode=namespace", "watch.namespace=ml")


def container(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def rules(docs) -> list[dict]:
    return [r for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") for r in role["rules"]]


def peering_rules(docs) -> list[dict]:
    return [r for r in rules(docs) if r["apiGroups"] == ["kopf.dev"]]


def test_cluster_mode_peers_through_a_cluster_kopf_peering(render):
    docs = render()
    argv = container(docs)["command"] + container(docs)["args"]
    assert "--peering=adaptinf" in argv and "--priority=0" in argv and "--standalone" not in argv
    (obj,) = by_kind(docs, "ClusterKopfPeering")
    assert obj["apiVersion"] == "kopf.dev/v1" and obj["metadata"]["name"] == "adaptinf"
    assert "namespace" not in obj["metadata"] and not by_kind(docs, "KopfPeering")
    assert peering_rules(docs) == [{"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
                                    "verbs": ["list", "watch", "patch"]}]
    # Kopf's identity in the peering object is the pod's name.
    assert container_env(one(docs, "Deployment"))["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    crds = {d["metadata"]["name"] for d in render(crds=True) if d["kind"] == "CustomResourceDefinition"}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds


def test_namespace_mode_peers_in_the_watched_namespace_without_cluster_permissions(render):
    docs = render((), NS_MODE)
    (obj,) = by_kind(docs, "KopfPeering")
    assert obj["metadata"] == {**obj["metadata"], "name": "adaptinf", "namespace": "ml"}
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "ClusterRole")
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == "ml"
    assert peering_rules(docs) == [{"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"],
                                    "verbs": ["list", "watch", "patch"]}]


def test_priority_and_name_are_values_and_disabling_means_standalone(render):
    argv = container(render((), ("peering.priority=50", "peering.name=team-ops")))["args"]
    assert "--priority=50" in argv and "--peering=team-ops" in argv
    docs = render((), ("peering.enabled=false",))
    assert "--standalone" in container(docs)["args"]
    assert not [a for a in container(docs)["args"] if a.startswith(("--peering", "--priority"))]
    assert not by_kind(docs, "ClusterKopfPeering") and not peering_rules(docs)


def test_peering_rejects_a_bad_name_and_a_second_replica(render):
    with pytest.raises(HelmError, match="peering"):
        render((), ("peering.name=Not_A_Name",))
    with pytest.raises(HelmError, match="replicaCount"):
        render((), ("replicaCount=2",))


def test_metrics_port_service_and_no_service_monitor_by_default(render):
    docs = render()
    c = container(docs)
    assert container_env(one(docs, "Deployment"))["ADAPTINF_METRICS_PORT"] == "9090"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    (svc,) = by_kind(docs, "Service")
    assert svc["metadata"]["namespace"] == NAMESPACE
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert not by_kind(docs, "ServiceMonitor")


def test_service_monitor_scrapes_the_metrics_service(render):
    docs = render((), ("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
                       "metrics.serviceMonitor.interval=15s", "metrics.port=9100"))
    (sm,) = by_kind(docs, "ServiceMonitor")
    (svc,) = by_kind(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert svc["spec"]["ports"][0]["port"] == 9100
    assert container_env(one(docs, "Deployment"))["ADAPTINF_METRICS_PORT"] == "9100"


def test_metrics_off_and_bad_metrics_values(render):
    docs = render((), ("metrics.enabled=false",))
    assert container_env(one(docs, "Deployment"))["ADAPTINF_METRICS_PORT"] == "0"
    assert not by_kind(docs, "Service") and [p["name"] for p in container(docs)["ports"]] == ["health"]
    with pytest.raises(HelmError, match="metrics.serviceMonitor.enabled needs metrics.enabled"):
        render((), ("metrics.enabled=false", "metrics.serviceMonitor.enabled=true"))
    with pytest.raises(HelmError, match="port"):
        render((), ("metrics.port=8080",))  # the health port
    with pytest.raises(HelmError, match="interval"):
        render((), ("metrics.serviceMonitor.interval=often",))


@pytest.mark.parametrize("sets", [(), NS_MODE], ids=["cluster", "namespace"])
def test_probes_use_kopfs_liveness_endpoint(render, sets):
    c = container(render((), sets))
    (liveness,) = [a for a in c["command"] + c["args"] if a.startswith("--liveness=")]
    assert liveness == "--liveness=http://0.0.0.0:8080/healthz"
    for probe in (c["livenessProbe"], c["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    # A stuck pass fails the probe after health.STALL_AFTER; a few misses in a row restart the pod.
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 60
