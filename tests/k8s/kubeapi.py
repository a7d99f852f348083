"""A tiny synchronous Kubernetes REST client for the test harness (kubelet, assertions).

The operator itself uses the official `kubernetes` client; tests use this one so that what they
check does not depend on the code under test.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CORE = {"pods", "secrets", "events", "namespaces", "configmaps", "serviceaccounts", "resourcequotas", "limitranges",
        "services", "persistentvolumeclaims"}
GROUPS = {"jobs": "batch/v1", "lifelongruns": "adaptinf.dev/v1alpha1", "instructiondatasets": "adaptinf.dev/v1alpha1",
          "customresourcedefinitions": "apiextensions.k8s.io/v1", "deployments": "apps/v1",
          "clusterkopfpeerings": "kopf.dev/v1", "kopfpeerings": "kopf.dev/v1"}


class ApiError(RuntimeError):
    def __init__(self, code: int, body: dict[str, Any]):
        super().__init__(f"{code} {body.get('reason')}: {body.get('message')}")
        self.code, self.body = code, body


class KubeApi:
    def __init__(self, server: str, user_agent: str = "adaptinf-tests"):
        self.server = server.rstrip("/")
        self.user_agent = user_agent

    def path(self, plural: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if plural in CORE else f"/apis/{GROUPS[plural]}"
        parts = [base] + (["namespaces", namespace] if namespace else []) + [plural]
        parts += [name] if name else []
        parts += [sub] if sub else []
        return "/".join(parts)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": content_type, "User-Agent": self.user_agent})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {"message": raw.decode(errors="replace")}
            raise ApiError(err.code, payload) from None

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("GET", self.path(plural, namespace, name))

    def find(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(plural, namespace, name)
        except ApiError as err:
            if err.code == 404:
                return None
            raise

    def list(self, plural: str, namespace: str | None = None, labels: str = "", fields: str = "") -> list[dict[str, Any]]:
        query = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        return self.request("GET", self.path(plural, namespace), query=query)["items"]

    def create(self, plural: str, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self.path(plural, namespace), body)

    def patch(self, plural: str, namespace: str | None, name: str, body: dict[str, Any],
              sub: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", self.path(plural, namespace, name, sub), body,
                            content_type="application/merge-patch+json")

    def delete(self, plural: str, namespace: str | None, name: str) -> None:
        try:
            self.request("DELETE", self.path(plural, namespace, name))
        except ApiError as err:
            if err.code != 404:
                raise
