"""A startup check of Kopf peering: say so, loudly, when the operator would stay paused forever.

With `--peering=NAME` Kopf's peering is mandatory: the operator pauses until it has seen its
peering object, and it never sees one that does not exist — without a word above DEBUG. One
LIST (the RBAC for peering has it) turns that silence into a warning that names the fix.
"""
from __future__ import annotations

from typing import Any

from .kube import KubeError

API = "/apis/kopf.dev/v1"


def missing_peering(kube: Any, name: str, namespace: str) -> str | None:
    """Why the peering object `name` cannot be used (namespace "" = cluster-wide), or None."""
    kind, plural = ("KopfPeering", "kopfpeerings") if namespace else ("ClusterKopfPeering", "clusterkopfpeerings")
    where = f" in namespace {namespace}" if namespace else ""
    path = f"{API}/namespaces/{namespace}/{plural}" if namespace else f"{API}/{plural}"
    fix = ("the chart creates it (peering.enabled); by hand: kubectl apply -f crds/kopfpeerings.yaml, then a "
           f"{kind} named {name}{where} — or run with --standalone")
    try:
        found = kube.request("GET", path, query={"fieldSelector": f"metadata.name={name}"}).get("items") or []
    except KubeError as err:
        if err.status == 404:
            return f"the {kind} resource is not served (CRD {plural}.kopf.dev missing): {fix}"
        return f"cannot list {plural} ({err.status} {err.reason}): the operator's RBAC needs list/watch/patch on it"
    if not found:
        return f"no {kind} {name!r}{where}: the operator stays paused until it exists; {fix}"
    return None
