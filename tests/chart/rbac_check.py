"""Least-privilege check of the chart's RBAC against the API requests the operator really makes.

Pure functions, no cluster and no helm: they take the rendered manifests (dicts) and a list of
requests, and answer the two questions a reviewer asks about an operator's RBAC:

* `denied(requests, grants)` — which requests a real API server would refuse (403) with these
  Roles/ClusterRoles bound to the operator's ServiceAccount;
* `unused(grants, requests)` — which permissions (verb × apiGroup/resource) no request needed.

The authorization rules follow Kubernetes' RBAC authorizer: a rule matches when the verb, the API
group and the resource (`resource` or `resource/subresource`) are listed or `*`; `resourceNames`
restrict to named requests; a Role (or a ClusterRole bound by a RoleBinding) applies only in its
namespace, a ClusterRole bound by a ClusterRoleBinding everywhere, including cluster-scoped and
all-namespaces requests. Non-resource URLs (discovery: /api, /apis, /version, /openapi) are
allowed to every authenticated user by the default `system:discovery` role and are not resource
requests here (`request_from_http` returns None for them).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

RBAC_API = "rbac.authorization.k8s.io/v1"

# Kubernetes' RequestInfo: these follow /namespaces/<name>/ and are subresources of the
# namespace, not resources inside it.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True, order=True)
class Request:
    """One resource request as the RBAC authorizer sees it."""
    verb: str                   # get list watch create update patch delete deletecollection
    group: str                  # "" for the core group
    resource: str               # plural, lower case: "jobs", "lifelongruns"
    subresource: str = ""       # "status", "log", … or ""
    namespace: str | None = None  # None: a cluster-scoped or all-namespaces request
    name: str | None = None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " (cluster-wide)"
        named = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.full_resource}{named}{where}"


@dataclass(frozen=True)
class Grant:
    """One PolicyRule of a role bound to the subject, with the namespace it applies in."""
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    namespace: str | None = None          # None: everywhere (ClusterRole + ClusterRoleBinding)
    source: str = ""                      # "ClusterRole/x#0" for messages

    @classmethod
    def from_rule(cls, rule: Mapping[str, Any], namespace: str | None = None, source: str = "") -> Grant:
        return cls(
            verbs=frozenset(rule.get("verbs") or ()),
            groups=frozenset(rule.get("apiGroups") or ()),
            resources=frozenset(rule.get("resources") or ()),
            resource_names=frozenset(rule.get("resourceNames") or ()),
            namespace=namespace,
            source=source,
        )

    def atoms(self) -> set[Permission]:
        """The rule spelled out as verb × group × resource (the unit of `unused`)."""
        return {Permission(v, g, r) for v in self.verbs for g in self.groups for r in self.resources}


@dataclass(frozen=True, order=True)
class Permission:
    verb: str
    group: str
    resource: str  # may carry "/subresource"

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource}"


# --- matching -------------------------------------------------------------------------------------

def _resource_matches(pattern: str, req: Request) -> bool:
    if pattern == "*":
        return True
    if pattern == req.full_resource:
        return True
    # "*/status" matches the status subresource of every resource.
    return bool(req.subresource) and pattern == f"*/{req.subresource}"


def permission_allows(perm: Permission, req: Request) -> bool:
    return ((perm.verb in ("*", req.verb))
            and (perm.group in ("*", req.group))
            and _resource_matches(perm.resource, req))


def allows(grant: Grant, req: Request) -> bool:
    """Whether one rule authorizes the request (Kubernetes RBAC semantics)."""
    if grant.namespace is not None and req.namespace != grant.namespace:
        return False
    if not ({"*", req.verb} & grant.verbs):
        return False
    if not ({"*", req.group} & grant.groups):
        return False
    if not any(_resource_matches(r, req) for r in grant.resources):
        return False
    if grant.resource_names:
        # resourceNames cannot restrict list/watch/create without a name (Kubernetes docs).
        return req.name is not None and req.name in grant.resource_names
    return True


def denied(requests: Iterable[Request], grants: Iterable[Grant]) -> list[Request]:
    """The requests no grant allows, unique and sorted."""
    grants = list(grants)
    return sorted({r for r in requests if not any(allows(g, r) for g in grants)})


def unused(grants: Iterable[Grant], requests: Iterable[Request]) -> list[Permission]:
    """verb × group × resource permissions that no (allowed) request used, sorted.

    A permission is used when some request is allowed by the grant it comes from and matches
    this verb, group and resource.
    """
    requests = list(requests)
    out: set[Permission] = set()
    for grant in grants:
        used_here = [r for r in requests if allows(grant, r)]
        for perm in grant.atoms():
            if not any(permission_allows(perm, r) for r in used_here):
                out.add(perm)
    return sorted(out)


# --- manifests ------------------------------------------------------------------------------------

def grants_for(manifests: Iterable[Mapping[str, Any]], sa_name: str, sa_namespace: str) -> list[Grant]:
    """Every rule bound to ServiceAccount `sa_namespace/sa_name` by the given manifests.

    Bindings to roles not in `manifests` are ignored (their rules are unknown here).
    """
    docs = [d for d in manifests if d]
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d.get("kind") in ("Role", "ClusterRole")}
    out: list[Grant] = []
    for b in docs:
        kind = b.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                   and s.get("namespace", b["metadata"].get("namespace")) == sa_namespace
                   for s in b.get("subjects") or ()):
            continue
        ref = b["roleRef"]
        bind_ns = b["metadata"].get("namespace") if kind == "RoleBinding" else None
        role_ns = bind_ns if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            continue
        for i, rule in enumerate(role.get("rules") or ()):
            if rule.get("nonResourceURLs"):
                continue
            out.append(Grant.from_rule(rule, namespace=bind_ns, source=f"{ref['kind']}/{ref['name']}#{i}"))
    return out


# --- HTTP → request ------------------------------------------------------------------------------

def request_from_http(method: str, url: str) -> Request | None:
    """The RBAC view of one HTTP request to the API server (Kubernetes' RequestInfo rules).

    `url` is a path with an optional query (`/apis/batch/v1/namespaces/ns/jobs?watch=true`).
    Returns None for non-resource URLs (discovery, /version, /openapi, /healthz).
    """
    split = urlsplit(url)
    query = parse_qs(split.query)
    parts = [p for p in split.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    watch = False
    if rest[:1] == ["watch"]:  # deprecated /watch/ paths
        watch, rest = True, rest[1:]
    if not rest:
        return None  # /api/v1, /apis/g/v: discovery
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) if len(rest) > 2 else ""
    m = method.upper()
    if query.get("watch", [""])[0].lower() in ("true", "1"):
        watch = True
    if m in ("GET", "HEAD"):
        verb = "watch" if watch else ("get" if name else "list")
    elif m == "POST":
        verb = "create"
    elif m == "PUT":
        verb = "update"
    elif m == "PATCH":
        verb = "patch"
    elif m == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        raise ValueError(f"unknown HTTP method {method!r} for {url}")
    return Request(verb=verb, group=group, resource=resource, subresource=subresource,
                   namespace=namespace, name=name)


@dataclass
class Report:
    """Both answers at once, with a readable message for test failures."""
    denied: list[Request] = field(default_factory=list)
    unused: list[Permission] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.denied and not self.unused

    def message(self) -> str:
        lines = []
        if self.denied:
            lines.append("requests the RBAC denies (add a rule to adaptinf.rules in charts/adaptinf/templates/_helpers.tpl):")
            lines += [f"  - {r}" for r in self.denied]
        if self.unused:
            lines.append("permissions no request used (remove them from adaptinf.rules):")
            lines += [f"  - {p}" for p in self.unused]
        return "\n".join(lines) or "ok"


def check(requests: Iterable[Request], grants: Iterable[Grant]) -> Report:
    requests, grants = list(requests), list(grants)
    return Report(denied=denied(requests, grants), unused=unused(grants, requests))


# --- audit logs ------------------------------------------------------------------------------------

# User agents of the operator process: Kopf's own client and the official kubernetes client.
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/", "adaptinf-operator")


def requests_from_audit(lines: Iterable[str], agents: tuple[str, ...] | None = OPERATOR_AGENTS) -> list[Request]:
    """Requests from the JSON-lines audit log of tests/k8s/emulator.py (`--audit FILE`).

    Each line: {"verb", "group", "version", "resource", "subresource", "namespace", "name",
    "userAgent"}. Only requests whose user agent starts with one of `agents` are kept (None: all),
    so the test harness' own calls (kubectl, the fake kubelet) do not count.
    """
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        e = json.loads(line)
        if agents is not None and not str(e.get("userAgent", "")).startswith(agents):
            continue
        out.append(Request(verb=e["verb"], group=e.get("group") or "", resource=e["resource"],
                           subresource=e.get("subresource") or "", namespace=e.get("namespace") or None,
                           name=e.get("name") or None))
    return out


# Cluster-scoped resources (the rest are namespaced).
CLUSTER_SCOPED = frozenset({"namespaces", "nodes", "customresourcedefinitions", "clusterroles",
                            "clusterrolebindings", "clusterkopfpeerings", "persistentvolumes",
                            "storageclasses", "priorityclasses"})

# What Kopf asks for but does without on a 403 (kopf/_core/reactor/observation.py): the namespace
# list/watch of a --namespace operator, and the CRD watch of the resource observer. A Role can
# never grant these, so a namespace-mode install is expected to refuse them.
KOPF_OPTIONAL = frozenset({Permission("list", "", "namespaces"), Permission("watch", "", "namespaces"),
                           Permission("list", "apiextensions.k8s.io", "customresourcedefinitions"),
                           Permission("watch", "apiextensions.k8s.io", "customresourcedefinitions")})


def is_kopf_optional(req: Request) -> bool:
    return Permission(req.verb, req.group, req.full_resource) in KOPF_OPTIONAL


def confine_to_namespace(requests: Iterable[Request], namespace: str,
                         cluster_scoped: frozenset[str] = CLUSTER_SCOPED) -> list[Request]:
    """The same session as an operator watching only `namespace` would make it.

    An operator started with --all-namespaces lists and watches namespaced resources across all
    namespaces (namespace None), and one started with --namespace=X acts in X; either way, an
    operator confined to `namespace` makes those requests there. Requests to cluster-scoped
    resources stay cluster-wide.
    """
    return [r if r.resource in cluster_scoped
            else Request(r.verb, r.group, r.resource, r.subresource, namespace, r.name)
            for r in requests]


def as_cluster_wide(requests: Iterable[Request]) -> list[Request]:
    """A --namespace session as a --all-namespaces operator would make it: Kopf observes
    namespaces only when it is not cluster-wide, so its namespace list/watch disappear, and it
    keeps its peering keep-alive in a ClusterKopfPeering instead of a namespace's KopfPeering."""
    return [Request(r.verb, r.group, "clusterkopfpeerings", r.subresource, None, r.name)
            if (r.group, r.resource) == ("kopf.dev", "kopfpeerings") else r
            for r in requests if not (r.resource == "namespaces" and r.verb in ("list", "watch"))]
