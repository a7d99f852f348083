"""The few Kubernetes API calls the operator makes, as plain dicts over the official client.

The `kubernetes` package provides configuration, authentication and TLS (kubeconfig or the
in-cluster service account); requests go through its ApiClient as raw JSON so that objects stay
dicts (the pure modules work on dicts) and patches are always JSON merge patches.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

GROUP, VERSION = "adaptinf.dev", "v1alpha1"
USER_AGENT = "adaptinf-operator/0.1.0"


class KubeError(RuntimeError):
    def __init__(self, status: int, body: Any, what: str):
        reason = body.get("reason") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{what}: {status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message
        details = body.get("details") if isinstance(body, dict) else None
        # The fields a 422 names (`metadata.labels`, `spec.resources...`): what the user must fix.
        self.fields = sorted({c["field"] for c in (details or {}).get("causes") or [] if c.get("field")})


def _path(plural: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    base = {"jobs": "/apis/batch/v1", "pods": "/api/v1", "events": "/api/v1", "lifelongruns": f"/apis/{GROUP}/{VERSION}",
            "instructiondatasets": f"/apis/{GROUP}/{VERSION}"}[plural]
    parts = [base, *(["namespaces", namespace] if namespace else []), plural, *([name] if name else []),
             *([sub] if sub else [])]
    return "/".join(parts)


class Kube:
    def __init__(self, api_client: Any):
        self.client = api_client
        self.client.user_agent = USER_AGENT

    @classmethod
    def from_environment(cls) -> Kube:
        """A kubeconfig when KUBECONFIG (or ~/.kube/config) is there, else the pod's service account."""
        import kubernetes

        if os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
            kubernetes.config.load_kube_config()
        else:
            kubernetes.config.load_incluster_config()
        return cls(kubernetes.client.ApiClient())

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        from kubernetes.client.exceptions import ApiException

        params = self.client.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        try:
            response = self.client.call_api(*params, _request_timeout=60)
            response.read()
            status, data = response.status, response.data
        except ApiException as err:
            status, data = err.status, err.body
        try:
            payload = json.loads(data or b"null")
        except ValueError:
            payload = data.decode(errors="replace") if isinstance(data, bytes) else data
        if status >= 400:
            raise KubeError(status, payload, f"{method} {path}")
        return payload

    # -- reads --------------------------------------------------------------------------------
    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", _path(plural, namespace, name))
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def list(self, plural: str, namespace: str, labels: str = "", fields: str = "") -> list[dict[str, Any]]:
        query = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v} or None
        return self.request("GET", _path(plural, namespace), query=query).get("items") or []

    # -- writes -------------------------------------------------------------------------------
    def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        """True if created, False if it already existed (deterministic names: no duplicates)."""
        try:
            self.request("POST", _path(plural, namespace), body)
            return True
        except KubeError as err:
            if err.status == 409:
                return False
            raise

    def patch(self, plural: str, namespace: str, name: str, body: dict[str, Any], status: bool = False) -> None:
        self.request("PATCH", _path(plural, namespace, name, "status" if status else None), body,
                     content_type="application/merge-patch+json")

    def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Background propagation: the cluster's garbage collector removes the Job's pods."""
        try:
            self.request("DELETE", _path(plural, namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeError as err:
            if err.status == 404:
                return False
            raise
