"""Known-answer tests of the pure RBAC checker (tests/chart/rbac_check.py)."""
from __future__ import annotations

import pytest

from rbac_check import (Grant, Permission, Request, check, denied, grants_for, request_from_http,
                        unused)

SA, SA_NS = "op", "system"


def role(kind, name, rules, namespace=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def binding(kind, name, role_kind, role_name, namespace=None, sa=SA, sa_ns=SA_NS):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}]}


JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
STATUS = {"apiGroups": ["adaptinf.dev"], "resources": ["lifelongruns/status"], "verbs": ["patch"]}


@pytest.mark.parametrize("method,url,expected", [
    ("GET", "/apis/batch/v1/namespaces/ns/jobs", Request("list", "batch", "jobs", "", "ns")),
    ("GET", "/apis/batch/v1/namespaces/ns/jobs?watch=true&resourceVersion=5",
     Request("watch", "batch", "jobs", "", "ns")),
    ("GET", "/apis/batch/v1/watch/namespaces/ns/jobs", Request("watch", "batch", "jobs", "", "ns")),
    ("GET", "/apis/batch/v1/namespaces/ns/jobs/j1", Request("get", "batch", "jobs", "", "ns", "j1")),
    ("POST", "/apis/batch/v1/namespaces/ns/jobs", Request("create", "batch", "jobs", "", "ns")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/j1", Request("delete", "batch", "jobs", "", "ns", "j1")),
    ("DELETE", "/apis/batch/v1/namespaces/ns/jobs", Request("deletecollection", "batch", "jobs", "", "ns")),
    ("PUT", "/apis/batch/v1/namespaces/ns/jobs/j1", Request("update", "batch", "jobs", "", "ns", "j1")),
    ("PATCH", "/apis/adaptinf.dev/v1alpha1/namespaces/ns/lifelongruns/r/status",
     Request("patch", "adaptinf.dev", "lifelongruns", "status", "ns", "r")),
    ("GET", "/apis/adaptinf.dev/v1alpha1/lifelongruns?watch=1",
     Request("watch", "adaptinf.dev", "lifelongruns", "", None)),
    ("POST", "/api/v1/namespaces/ns/events", Request("create", "", "events", "", "ns")),
    ("GET", "/api/v1/namespaces", Request("list", "", "namespaces", "", None)),
    ("GET", "/api/v1/namespaces/ns", Request("get", "", "namespaces", "", "ns", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", Request("update", "", "namespaces", "finalize", "ns", "ns")),
    ("GET", "/api/v1/namespaces/ns/pods/p/log", Request("get", "", "pods", "log", "ns", "p")),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
     Request("list", "apiextensions.k8s.io", "customresourcedefinitions", "", None)),
])
def test_request_from_http(method, url, expected):
    assert request_from_http(method, url) == expected


@pytest.mark.parametrize("url", ["/api", "/apis", "/api/v1", "/apis/batch", "/apis/batch/v1",
                                 "/version", "/openapi/v2", "/healthz"])
def test_request_from_http_non_resource(url):
    assert request_from_http("GET", url) is None


def test_cluster_role_allows_everywhere_role_only_in_its_namespace():
    docs = [role("ClusterRole", "cr", [JOBS]), binding("ClusterRoleBinding", "crb", "ClusterRole", "cr"),
            role("Role", "r", [STATUS], "team-a"), binding("RoleBinding", "rb", "Role", "r", "team-a")]
    grants = grants_for(docs, SA, SA_NS)
    reqs = [Request("list", "batch", "jobs", namespace=None),              # all namespaces: ClusterRole ok
            Request("create", "batch", "jobs", namespace="x"),
            Request("patch", "adaptinf.dev", "lifelongruns", "status", "team-a", "r1"),
            Request("patch", "adaptinf.dev", "lifelongruns", "status", "team-b", "r1"),  # wrong namespace
            Request("patch", "adaptinf.dev", "lifelongruns", "", "team-a", "r1"),       # main resource
            Request("delete", "batch", "jobs", namespace="x", name="j")]              # verb not granted
    assert denied(reqs, grants) == sorted([reqs[3], reqs[4], reqs[5]])


def test_role_never_allows_cluster_wide_requests():
    grants = grants_for([role("Role", "r", [JOBS], "ns"), binding("RoleBinding", "rb", "Role", "r", "ns")], SA, SA_NS)
    assert denied([Request("list", "batch", "jobs", namespace=None)], grants)
    assert not denied([Request("list", "batch", "jobs", namespace="ns")], grants)


def test_clusterrole_bound_by_rolebinding_is_namespaced():
    docs = [role("ClusterRole", "cr", [JOBS]), binding("RoleBinding", "rb", "ClusterRole", "cr", "ns")]
    grants = grants_for(docs, SA, SA_NS)
    assert [g.namespace for g in grants] == ["ns"]
    assert denied([Request("get", "batch", "jobs", namespace="other", name="j")], grants)


def test_bindings_of_other_subjects_are_ignored():
    docs = [role("ClusterRole", "cr", [JOBS]),
            binding("ClusterRoleBinding", "crb", "ClusterRole", "cr", sa="someone-else"),
            binding("ClusterRoleBinding", "crb2", "ClusterRole", "cr", sa_ns="other-ns")]
    assert grants_for(docs, SA, SA_NS) == []


def test_wildcards_and_subresources():
    g = Grant.from_rule({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]})
    assert not denied([Request("patch", "adaptinf.dev", "lifelongruns", "status", "n", "r")], [g])
    assert denied([Request("patch", "adaptinf.dev", "lifelongruns", "", "n", "r")], [g])
    star = Grant.from_rule({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]})
    assert not denied([Request("get", "", "pods", "log", "n", "p")], [star])
    # A plain resource rule does not cover its subresources.
    plain = Grant.from_rule({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    assert denied([Request("get", "", "pods", "log", "n", "p")], [plain])


def test_resource_names_restrict_to_named_requests():
    g = Grant.from_rule({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"],
                         "resourceNames": ["cfg"]})
    assert not denied([Request("get", "", "configmaps", namespace="n", name="cfg")], [g])
    assert denied([Request("get", "", "configmaps", namespace="n", name="other")], [g])
    assert denied([Request("list", "", "configmaps", namespace="n")], [g])


def test_unused_lists_each_unneeded_verb_and_resource():
    g = Grant.from_rule(JOBS)
    reqs = [Request("create", "batch", "jobs", namespace="n"), Request("watch", "batch", "jobs")]
    assert unused([g], reqs) == [Permission("get", "batch", "jobs"), Permission("list", "batch", "jobs")]


def test_unused_ignores_requests_outside_the_grants_namespace():
    g = Grant.from_rule(JOBS, namespace="a")
    reqs = [Request(v, "batch", "jobs", namespace="b") for v in ("create", "get", "list", "watch")]
    assert len(unused([g], reqs)) == 4


def test_check_report_message_names_both_problems():
    report = check([Request("delete", "batch", "jobs", namespace="n", name="j")], [Grant.from_rule(JOBS)])
    assert not report.ok
    msg = report.message()
    assert "delete batch/jobs j in n" in msg and "create batch/jobs" in msg
    assert check([Request(v, "batch", "jobs", namespace="n") for v in ("create", "get", "list", "watch")],
                 [Grant.from_rule(JOBS)]).ok


def test_requests_from_audit_keeps_only_the_operators_calls():
    import json
    lines = [json.dumps(e) for e in [
        {"verb": "watch", "group": "adaptinf.dev", "version": "v1alpha1", "resource": "lifelongruns",
         "subresource": None, "namespace": None, "name": None, "userAgent": "kopf/1.45.2"},
        {"verb": "create", "group": "batch", "version": "v1", "resource": "jobs", "subresource": None,
         "namespace": "ns", "name": None, "userAgent": "OpenAPI-Generator/37.0.1/python"},
        {"verb": "patch", "group": "batch", "version": "v1", "resource": "jobs", "subresource": "status",
         "namespace": "ns", "name": "j", "userAgent": "adaptinf-kubelet"},
        {"verb": "create", "group": "adaptinf.dev", "version": "v1alpha1", "resource": "lifelongruns",
         "subresource": None, "namespace": "ns", "name": None, "userAgent": "kubectl/v1.37.0 (linux/amd64)"},
    ]] + [""]
    from rbac_check import requests_from_audit
    assert requests_from_audit(lines) == [Request("watch", "adaptinf.dev", "lifelongruns"),
                                          Request("create", "batch", "jobs", "", "ns")]
    assert len(requests_from_audit(lines, agents=None)) == 4


def test_confine_to_namespace_moves_only_namespaced_cluster_wide_requests():
    from rbac_check import confine_to_namespace
    reqs = [Request("watch", "adaptinf.dev", "lifelongruns"), Request("create", "batch", "jobs", "", "x"),
            Request("watch", "apiextensions.k8s.io", "customresourcedefinitions")]
    assert confine_to_namespace(reqs, "team") == [Request("watch", "adaptinf.dev", "lifelongruns", "", "team"),
                                                  Request("create", "batch", "jobs", "", "team"), reqs[2]]


def test_as_cluster_wide_drops_kopfs_namespace_observer():
    from rbac_check import as_cluster_wide, is_kopf_optional
    reqs = [Request("list", "", "namespaces"), Request("watch", "", "namespaces"),
            Request("get", "", "namespaces", name="x"), Request("list", "batch", "jobs", namespace="n")]
    assert as_cluster_wide(reqs) == reqs[2:]
    assert [is_kopf_optional(r) for r in reqs] == [True, True, False, False]
    assert is_kopf_optional(Request("watch", "apiextensions.k8s.io", "customresourcedefinitions"))
