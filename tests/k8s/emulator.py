"""A Kubernetes API server for tests: kmock 0.8's emulator plus what it lacks (see docs/operator.md).

kmock provides the HTTP server (`kmock.Server`), object storage with history
(`KubernetesEmulator.objects`), per-resource event buses for watches, merge/JSON patching and
Kubernetes-style error bodies. This extension adds, in one place:

- discovery from a resource registry: built-ins (pods and Jobs in the `all` category) plus every
  CRD created (`/api/v1` with the right groupVersion, `/apis/<group>/<version>`), CRD status
  `Established`;
- server-filled metadata (uid, resourceVersion, generation, creationTimestamp, generateName);
- `/status` subresources: status patches touch only status, main-resource writes never touch
  status, and a spec change bumps `generation`;
- CRD schema admission (prune or `fieldValidation=Strict`, defaults, 422 Invalid) via schema.py;
- `kind`/`apiVersion`/`resourceVersion` on lists, label and field selectors, watch streams that
  start with the current objects, `timeoutSeconds`;
- `Table` output for `kubectl get` (CRD printer columns; a few built-in columns);
- Kubernetes error reasons: NotFound, AlreadyExists, Invalid, Conflict, MethodNotAllowed;
- built-in admission as a real server does it (admission.py): label values (63 characters),
  ResourceQuota (`count/<resource>`, `pods`, `requests.<resource>` of pods: 403 exceeded quota),
  the ServiceAccount plugin (a pod naming a missing ServiceAccount: 403 Forbidden), LimitRanger
  (Container defaults, `max`/`min`: 403 Forbidden);
- an audit log (JSON lines: verb, group, resource, subresource, namespace, name, user agent, label
  and field selectors, and for a list the number of items it returned, or its error code) so a
  test can check RBAC rules and request selectivity against what the operator really did;
- CRD `selectableFields` (Kubernetes >= 1.31): a custom resource's list or watch may select by
  them, by `metadata.name`/`metadata.namespace`, and by nothing else (400 BadRequest); with
  `--without-selectable-fields` the server behaves as one before 1.31: the field is dropped from
  the CRD (1.30 with its feature gate off; 1.27-1.29 prune it as unknown, and refuse it under
  `fieldValidation=Strict`, as `kubectl apply` sends by default), so every such selector is refused.

Not emulated: authentication/authorization, garbage collection of dependents (ownerReferences),
strategic-merge semantics for lists (merge patches replace lists), server-side apply, pagination,
namespace existence checks, CEL rules (but `self == oldSelf`). Run: `python emulator.py --port-file F --audit A`.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import logging
import random
import re
import string
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Callable

import aiohttp.web
import kmock
import yaml

import admission
import protowire
import schema as crdschema

log = logging.getLogger("emulator")

Key = tuple[kmock.resource, str | None, str]  # (resource, namespace, name)

# (group, version, plural, kind, namespaced, short names, subresources)
BUILTINS = [
    ("", "v1", "namespaces", "Namespace", False, ["ns"], ["status"]),
    ("", "v1", "pods", "Pod", True, ["po"], ["status"]),
    ("", "v1", "secrets", "Secret", True, [], []),
    ("", "v1", "configmaps", "ConfigMap", True, ["cm"], []),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, ["sa"], []),
    ("", "v1", "events", "Event", True, ["ev"], []),
    ("", "v1", "resourcequotas", "ResourceQuota", True, ["quota"], ["status"]),
    ("", "v1", "limitranges", "LimitRange", True, ["limits"], []),
    ("batch", "v1", "jobs", "Job", True, [], ["status"]),
    ("", "v1", "services", "Service", True, ["svc"], ["status"]),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ["pvc"], ["status"]),
    ("apps", "v1", "deployments", "Deployment", True, ["deploy"], ["status"]),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, [], []),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, [], []),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, [], []),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
     ["crd", "crds"], ["status"]),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class ApiError(kmock.KubernetesError):
    """kmock renders these as `Status` bodies; we always give details (kmock's default is a traceback)."""


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    secs = int((dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size * 2:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def dig(obj: Any, path: str) -> Any:
    """A value by a simple JSONPath (`.status.step`, `involvedObject.name`); None if absent."""
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def parse_label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """Equality- and set-based selectors: `a=b,c!=d,e,!f,g in (x,y),h notin (z)`."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in (r.strip() for r in re.split(r",(?![^(]*\))", text or "") if r.strip()):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", req):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            checks.append(lambda lb, k=key, vs=values, neg=(op == "notin"): (lb.get(k) in vs) != neg
                          if k in lb else neg)
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", req):
            key, op, value = m[1], m[2], m[3]
            checks.append(lambda lb, k=key, v=value, neg=(op == "!="): (lb.get(k) == v) != neg)
        elif m := re.fullmatch(r"(!?)([\w./-]+)", req):
            checks.append(lambda lb, k=m[2], neg=bool(m[1]): (k in lb) != neg)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}", {})
    return lambda labels: all(c(labels or {}) for c in checks)


def parse_field_selector(text: str) -> Callable[[dict[str, Any]], bool]:
    checks = []
    for req in (r for r in (text or "").split(",") if r):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {req!r}", {})
        checks.append((m[1], m[2] == "!=", m[3]))
    return lambda obj: all((str(dig(obj, p) or "") == v) != neg for p, neg, v in checks)


class Emulator(kmock.KubernetesEmulator):
    """kmock's in-memory API server with the semantics above; one instance per test session."""

    def __init__(self, audit_path: Path | None = None, selectable_fields: bool = True) -> None:
        super().__init__()
        self.audit_path = audit_path
        self.selectable_fields = selectable_fields  # False: an API server before Kubernetes 1.31
        self.rv = 0
        self.crds: dict[kmock.resource, dict[str, Any]] = {}  # schema, printer columns, kind
        self.infos: dict[kmock.resource, kmock.ResourceInfo] = {}
        for group, version, plural, kind, namespaced, short, subs in BUILTINS:
            categories = ["all"] if plural in ("pods", "jobs") else []  # what `kubectl get all` expands to
            self._register(kmock.resource(group, version, plural), kind, namespaced, short, categories, subs)
        for ns in ("default", "kube-system"):
            self._store((self._res("", "v1", "namespaces"), None, ns),
                        self._fill_new({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                                        "status": {"phase": "Active"}}, None))

    # -- registry --------------------------------------------------------------------------
    def _register(self, res: kmock.resource, kind: str, namespaced: bool, short: list[str], categories: list[str],
                  subresources: list[str]) -> None:
        info = kmock.ResourceInfo(kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=VERBS,
                                  shortnames=short, categories=categories, subresources=subresources)
        self.infos[res] = info
        self.resources[res] = info  # kmock's own discovery (`/apis`, `/apis/<group>`) reads this

    def _res(self, group: str, version: str, plural: str) -> kmock.resource:
        res = kmock.resource(group, version, plural)
        if res not in self.infos:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path}/{plural})",
                           {"group": group, "kind": plural})
        return res

    def _admit_crd(self, crd: dict[str, Any], strict: bool) -> None:
        """What a server before 1.31 does with `selectableFields`: refused by strict field
        validation (1.27-1.29 do not know the field), otherwise dropped."""
        if self.selectable_fields:
            return
        for i, v in enumerate((crd.get("spec") or {}).get("versions") or []):
            if "selectableFields" in v and strict:
                raise ApiError(400, "BadRequest", "CustomResourceDefinition in version \"v1\" cannot be handled as a "
                                                  f'CustomResourceDefinition: strict decoding error: unknown field '
                                                  f'"spec.versions[{i}].selectableFields"', {})
            v.pop("selectableFields", None)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec, names = crd["spec"], crd["spec"]["names"]
        for v in spec["versions"]:
            res = kmock.resource(spec["group"], v["name"], names["plural"])
            self._register(res, names["kind"], spec.get("scope") == "Namespaced", names.get("shortNames", []),
                           names.get("categories", []), list(v.get("subresources", {})))
            self.crds[res] = {"schema": v["schema"]["openAPIV3Schema"], "kind": names["kind"],
                              "columns": v.get("additionalPrinterColumns", []),
                              "selectable": {f["jsonPath"].lstrip(".") for f in v.get("selectableFields", [])}}
        crd["status"] = {"acceptedNames": names, "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
                         "conditions": [{"type": t, "status": "True", "reason": r, "lastTransitionTime": now_iso(),
                                         "message": "emulated"} for t, r in
                                        (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))]}

    def _unregister_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for v in spec["versions"]:
            res = kmock.resource(spec["group"], v["name"], spec["names"]["plural"])
            self.infos.pop(res, None), self.crds.pop(res, None), self.resources.pop(res, None)
            for key in [k for k in self.objects if k[0] == res]:
                del self.objects[key]

    # -- HTTP entry point (replaces kmock's path parsing, which breaks on /api/v1/namespaces) ----
    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        data = await raw.read()
        try:
            return await self._serve(raw, self._body(raw.headers.get("Content-Type", ""), data))
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        except Exception as exc:  # a bug here must reach the client as a 500, not a hang
            log.exception("emulator failure on %s %s", raw.method, raw.path_qs)
            return await self._render_error(ApiError(500, "InternalError", repr(exc), {}))

    @staticmethod
    def _body(content_type: str, data: bytes) -> Any:
        """JSON; YAML from server-side apply (JSON is YAML too); protobuf for the kinds kubectl
        and helm send that way (protowire.py)."""
        if not data:
            return None
        if "protobuf" in content_type:
            try:
                return protowire.decode(data)
            except protowire.ProtobufError as exc:
                raise ApiError(415, "UnsupportedMediaType", str(exc), {}) from None
        return yaml.safe_load(data) if "yaml" in content_type else json.loads(data)

    async def _serve(self, raw: aiohttp.web.BaseRequest, body: Any) -> aiohttp.web.StreamResponse:
        parts = [p for p in raw.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts == ["version"]:
            return aiohttp.web.json_response(self._version())
        elif parts == ["api"]:
            return aiohttp.web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        elif parts[:1] == ["apis"]:
            groups = [self._group(g) for g in sorted({r.group for r in self.infos if r.group})]
            if len(parts) == 1:
                return aiohttp.web.json_response({"apiVersion": "v1", "kind": "APIGroupList", "groups": groups})
            for found in (g for g in groups if g["name"] == parts[1]):
                return aiohttp.web.json_response({"apiVersion": "v1", "kind": "APIGroup", **found})
            raise ApiError(404, "NotFound", f"no API group {parts[1]!r}", {})
        elif parts[:2] == ["openapi", "v3"]:
            return aiohttp.web.json_response(self._openapi_v3(parts[2:]))
        else:  # /openapi/v2 and anything else
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({raw.path})", {})
        if not rest:
            return aiohttp.web.json_response(self._discovery(group, version))
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), ("/".join(rest[2:]) or None)
        res = self._res(group, version, plural)
        q = raw.query
        verb = {"GET": "watch" if q.get("watch") in ("true", "1") else ("get" if name else "list"),
                "POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete" if name else "deletecollection"}.get(raw.method, raw.method.lower())
        created = (body.get("metadata") or {}).get("name") if verb == "create" and isinstance(body, dict) else None
        audit = lambda **extra: self._audit(verb, res, namespace, name or created, sub,  # noqa: E731
                                            raw.headers.get("User-Agent", ""), q.get("labelSelector", ""),
                                            q.get("fieldSelector", ""), **extra)
        if verb != "list":
            audit()
        as_table = "as=Table" in raw.headers.get("Accept", "")
        async with self._lock:
            if verb == "watch":
                self._check_fields(res, q.get("fieldSelector", ""))
            elif verb == "get":
                obj = self._get((res, namespace, name))
                return aiohttp.web.json_response(self._table(res, [obj]) if as_table else obj)
            elif verb == "list":
                try:  # audited once answered: how many items a selector let through
                    self._check_fields(res, q.get("fieldSelector", ""))
                    items = self._select(res, namespace, q.get("labelSelector", ""), q.get("fieldSelector", ""))
                except kmock.KubernetesError as err:
                    audit(code=err.status)
                    raise
                audit(items=len(items))
                if as_table:
                    return aiohttp.web.json_response(self._table(res, items))
                info = self.infos[res]
                return aiohttp.web.json_response({
                    "apiVersion": f"{group}/{version}" if group else version, "kind": f"{info.kind}List",
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items})
            elif verb == "create" and not name:
                return aiohttp.web.json_response(await self._create(res, namespace, body, q), status=201)
            elif verb in ("patch", "update") and sub in (None, "status"):
                ctype = raw.headers.get("Content-Type", "")
                if "apply-patch" in ctype:
                    return await self._server_side_apply(res, namespace, name, sub, body, q)
                return aiohttp.web.json_response(await self._write(res, namespace, name, sub, body, q, verb == "update"))
            elif verb == "delete":
                return aiohttp.web.json_response(await self._delete((res, namespace, name)))
            else:
                raise ApiError(405, "MethodNotAllowed", f"{verb} on {raw.path} is not emulated", {})
        return await self._watch(raw, res, namespace, name, q)

    def _version(self) -> dict[str, str]:
        """The Kubernetes version this server behaves as (kmock's own says 1.26, which the chart's
        kubeVersion refuses): 1.31 with selectableFields, 1.29 without."""
        minor = "31" if self.selectable_fields else "29"
        return {"major": "1", "minor": minor, "gitVersion": f"v1.{minor}.0-emulated", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22", "compiler": "gc",
                "platform": "linux/amd64"}

    def _audit(self, verb: str, res: kmock.resource, ns: str | None, name: str | None, sub: str | None,
               agent: str, labels: str = "", fields: str = "", **extra: Any) -> None:
        if self.audit_path is not None:
            entry = {"verb": verb, "group": res.group, "version": res.version, "resource": res.plural,
                     "subresource": sub, "namespace": ns, "name": name, "userAgent": agent, "ts": time.time(),
                     "labelSelector": labels, "fieldSelector": fields, **extra}
            with self.audit_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    # -- discovery ----------------------------------------------------------------------------
    def _discovery(self, group: str, version: str) -> dict[str, Any]:
        mine = {r: i for r, i in self.infos.items() if r.group == group and r.version == version}
        if not mine:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{version})", {})
        resources = []
        for res, info in mine.items():
            base = {"kind": info.kind, "namespaced": info.namespaced, "singularName": info.singular}
            resources.append({**base, "name": res.plural, "verbs": sorted(info.verbs),
                              "shortNames": sorted(info.shortnames), "categories": sorted(info.categories)})
            resources += [{**base, "name": f"{res.plural}/{s}", "verbs": ["get", "patch", "update"]}
                          for s in sorted(info.subresources)]
        return {"apiVersion": "v1", "kind": "APIResourceList", "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}

    def _openapi_v3(self, gv_path: list[str]) -> dict[str, Any]:
        """Just enough OpenAPI v3 for kubectl and helm to see that every PATCH takes
        `fieldValidation`: they then leave validation to this server (strict for custom
        resources, see _admit) instead of validating against schemas it does not serve."""
        gvs = {(r.group, r.version) for r in self.infos}
        as_path = lambda g, v: f"apis/{g}/{v}" if g else f"api/{v}"  # noqa: E731
        if not gv_path:
            return {"paths": {as_path(g, v): {"serverRelativeURL": f"/openapi/v3/{as_path(g, v)}?hash={self.rv}"}
                              for g, v in sorted(gvs)}}
        wanted = "/".join(gv_path)
        found = [(g, v) for g, v in gvs if as_path(g, v) == wanted]
        if not found:
            raise ApiError(404, "NotFound", f"no OpenAPI document for {wanted}", {})
        paths = {}
        for res, info in self.infos.items():
            if (res.group, res.version) != found[0]:
                continue
            ns = "namespaces/{namespace}/" if info.namespaced else ""
            paths[f"/{wanted}/{ns}{res.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": info.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes (emulated)", "version": self._version()["gitVersion"]},
                "paths": paths, "components": {"schemas": {}}}

    def _group(self, group: str) -> dict[str, Any]:
        versions = sorted({r.version for r in self.infos if r.group == group})
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[-1]}

    # -- storage helpers ---------------------------------------------------------------------
    def _what(self, res: kmock.resource) -> str:
        return f"{res.plural}.{res.group}" if res.group else res.plural

    def _get(self, key: Key) -> dict[str, Any]:
        if key not in self.objects or self.objects[key].deleted:
            res, _, name = key
            raise ApiError(404, "NotFound", f'{self._what(res)} "{name}" not found',
                           {"name": name, "group": res.group, "kind": res.plural})
        return copy.deepcopy(self.objects[key].raw)

    def _store(self, key: Key, obj: dict[str, Any]) -> None:
        if key in self.objects:
            self.objects[key].create(obj)  # a new version (also after a soft deletion)
        else:
            self.objects[key] = obj

    def _select(self, res: kmock.resource, ns: str | None, labels: str, fields: str) -> list[dict[str, Any]]:
        by_labels, by_fields = parse_label_selector(labels), parse_field_selector(fields)
        found = [(n or "", name, o.raw) for (r, n, name), o in self.objects.items()
                 if r == res and not o.deleted and (ns is None or n == ns)
                 and by_labels(o.raw.get("metadata", {}).get("labels", {})) and by_fields(o.raw)]
        # etcd key order. No deep copy: the only caller serialises the list at once (json_response),
        # and copying thousands of Jobs per list made the load test measure the emulator.
        return [raw for _, _, raw in sorted(found, key=lambda t: t[:2])]

    def _namespaced_objects(self, ns: str) -> Callable[[str], list[dict[str, Any]]]:
        """plural → the live objects of that resource in `ns` (for quota and service accounts)."""
        return lambda plural: [o.raw for (r, n, _), o in self.objects.items()
                               if r.plural == plural and n == ns and not o.deleted]

    def _check_fields(self, res: kmock.resource, fields: str) -> None:
        """A custom resource can be selected by metadata.name/namespace and its selectableFields only."""
        crd = self.crds.get(res)
        for req in (r for r in fields.split(",") if r) if crd is not None else ():
            path = re.split(r"!?==?", req, maxsplit=1)[0].strip()
            if path not in ("metadata.name", "metadata.namespace", *crd["selectable"]):
                raise ApiError(400, "BadRequest", f'"{path}" is not a known field selector: only "metadata.name", '
                                                  '"metadata.namespace"' + "".join(f', "{f}"' for f in sorted(crd["selectable"])), {})

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _fill_new(self, obj: dict[str, Any], ns: str | None) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required", {})
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if ns is not None:
            meta["namespace"] = ns
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1,
                    creationTimestamp=now_iso())
        return obj

    def _admit(self, res: kmock.resource, obj: dict[str, Any], strict: bool, old: dict[str, Any] | None = None) -> None:
        """Prune unknown fields (or reject them), fill defaults, validate: a real server's CRD path."""
        crd = self.crds.get(res)
        name = obj.get("metadata", {}).get("name", "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            raise ApiError(422, "Invalid", f'{self.infos[res].kind} "{name}" is invalid: metadata.name: Invalid value: '
                                           f'"{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                                           "alphanumeric characters, '-' or '.'", {"name": name, "kind": res.plural})
        if bad := admission.label_errors(obj):
            raise ApiError(422, "Invalid", f'{self.infos[res].kind}{"." + res.group if res.group else ""} "{name}" is '
                                           "invalid: " + "; ".join(f"{f}: {m}" for f, m in bad),
                           {"name": name, "group": res.group, "kind": self.infos[res].kind,
                            "causes": [{"reason": "FieldValueInvalid", "field": f, "message": m} for f, m in bad]})
        if crd is None:
            return
        if strict:
            errors = crdschema.validation_errors(obj, crd["schema"], reject_unknown=True)
        else:
            crdschema.prune(obj, crd["schema"])
            errors = []
        crdschema.apply_defaults(obj, crd["schema"])
        errors = errors or crdschema.validation_errors(obj, crd["schema"], reject_unknown=False)
        if old is not None:  # an update: CEL transition rules (immutability)
            errors = errors or crdschema.transition_errors(obj, old, crd["schema"])
        if errors:
            kind = f"{crd['kind']}.{res.group}"
            causes = [{"reason": "FieldValueInvalid", "field": e.split(": ", 1)[0], "message": e.split(": ", 1)[1]}
                      for e in errors]
            raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: ' + "; ".join(errors),
                           {"name": name, "group": res.group, "kind": crd["kind"], "causes": causes})

    async def _emit(self, res: kmock.resource, kind: str, obj: dict[str, Any]) -> None:
        await self._buses[res].put({"type": kind, "object": copy.deepcopy(obj)})

    # -- verbs --------------------------------------------------------------------------------
    async def _create(self, res: kmock.resource, ns: str | None, body: Any, q: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object", {})
        info = self.infos[res]
        ns = ns or body.get("metadata", {}).get("namespace") if info.namespaced else None
        if info.namespaced and not ns:
            raise ApiError(400, "BadRequest", "a namespace is required", {})
        obj = self._fill_new(copy.deepcopy(body), ns)
        key = (res, ns, obj["metadata"]["name"])
        if key in self.objects and not self.objects[key].deleted:
            raise ApiError(409, "AlreadyExists", f'{self._what(res)} "{key[2]}" already exists',
                           {"name": key[2], "group": res.group, "kind": res.plural})
        if "status" in info.subresources:
            obj.pop("status", None)  # the main endpoint never writes status, not even on create
        self._admit(res, obj, q.get("fieldValidation") == "Strict")
        if ns is not None:
            admission.admit_create(res.plural, res.group, info.kind, obj, ns, self._namespaced_objects(ns))
        if res.plural == "customresourcedefinitions":
            self._admit_crd(obj, q.get("fieldValidation") == "Strict")
            self._register_crd(obj)
        self._store(key, obj)
        await self._emit(res, "ADDED", obj)
        return obj

    async def _write(self, res: kmock.resource, ns: str | None, name: str, sub: str | None, body: Any, q: Any,
                     replace: bool) -> dict[str, Any]:
        key = (res, ns, name)
        old = self._get(key)
        if replace:
            new = copy.deepcopy(body)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
        else:
            want_rv = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            try:
                scratch = kmock.Object(copy.deepcopy(old))
                scratch.patch(body)  # kmock's merge patch (dict) or JSON patch (list)
                new = copy.deepcopy(scratch.raw)
            except Exception as exc:
                raise ApiError(422, "Invalid", f"cannot apply the patch: {exc}", {}) from None
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self._what(res)} "{name}": the object '
                                            "has been modified; please apply your changes to the latest version", {})
        has_status = "status" in self.infos[res].subresources
        if sub == "status":  # only status changes; everything else stays as stored
            new = {**old, "status": new.get("status")} if new.get("status") is not None else \
                {k: v for k, v in old.items() if k != "status"}
        elif has_status:
            new = {**{k: v for k, v in new.items() if k != "status"},
                   **({"status": old["status"]} if "status" in old else {})}
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        self._admit(res, new, q.get("fieldValidation") == "Strict", old)
        if res.plural == "customresourcedefinitions":
            self._admit_crd(new, q.get("fieldValidation") == "Strict")
        spec_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        if spec_of(new) != spec_of(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # no-op writes neither bump resourceVersion nor notify watchers
        meta["resourceVersion"] = self._next_rv()
        if res.plural == "customresourcedefinitions":
            self._register_crd(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects[key].delete()
            await self._emit(res, "DELETED", new)
            return new
        self._store(key, new)
        await self._emit(res, "MODIFIED", new)
        return new

    async def _server_side_apply(self, res: kmock.resource, ns: str | None, name: str, sub: str | None, body: Any,
                                 q: Any) -> aiohttp.web.StreamResponse:
        """Server-side apply, approximated for a single field manager: create the object when it
        does not exist, else merge the applied configuration into it (a merge patch). Not
        emulated: managedFields, conflicts between managers, and removing fields the manager
        applied before and now leaves out."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the applied configuration must be an object", {})
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["name"] = name
        key = (res, ns, name)
        if key in self.objects and not self.objects[key].deleted:
            return aiohttp.web.json_response(await self._write(res, ns, name, sub, body, q, False))
        if sub is not None:
            raise ApiError(404, "NotFound", f'{self._what(res)} "{name}" not found', {"name": name})
        return aiohttp.web.json_response(await self._create(res, ns, body, q), status=201)

    async def _delete(self, key: Key) -> dict[str, Any]:
        res = key[0]
        obj = self._get(key)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta.update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0, resourceVersion=self._next_rv())
                self._store(key, obj)
                await self._emit(res, "MODIFIED", obj)
            return obj
        self.objects[key].delete()
        meta["resourceVersion"] = self._next_rv()
        if res.plural == "customresourcedefinitions":
            self._unregister_crd(obj)
        await self._emit(res, "DELETED", obj)
        return obj

    async def _watch(self, raw: aiohttp.web.BaseRequest, res: kmock.resource, ns: str | None, name: str | None,
                     q: Any) -> aiohttp.web.StreamResponse:
        by_labels, by_fields = parse_label_selector(q.get("labelSelector", "")), parse_field_selector(q.get("fieldSelector", ""))

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return ((ns is None or meta.get("namespace") == ns) and (name is None or meta.get("name") == name)
                    and by_labels(meta.get("labels", {})) and by_fields(obj))

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        bus = self._buses[res]
        mark = await bus.mark()  # before the snapshot, so no event falls between the two
        try:
            async with self._lock:
                snapshot = [copy.deepcopy(o.raw) for (r, _, _), o in self.objects.items() if r == res and not o.deleted]
            for obj in filter(wanted, snapshot):
                await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            if q.get("sendInitialEvents") == "true":  # watch-list clients (kubectl 1.37) wait for this
                info = self.infos[res]
                marker = {"kind": info.kind, "apiVersion": f"{res.group}/{res.version}".lstrip("/"),
                          "metadata": {"resourceVersion": str(self.rv),
                                       "annotations": {"k8s.io/initial-events-end": "true"}}}
                await response.write(json.dumps({"type": "BOOKMARK", "object": marker}).encode() + b"\n")
            timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
            async with asyncio.timeout(timeout):
                async for event in bus.stream(since=mark):
                    if wanted(event["object"]):
                        await response.write(json.dumps(event).encode() + b"\n")
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass  # the watch ended: timeout, or the client went away
        finally:
            await bus.unmark(mark)
        try:
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    # -- kubectl get: server-side tables -------------------------------------------------------
    def _table(self, res: kmock.resource, objs: list[dict[str, Any]]) -> dict[str, Any]:
        columns = [{"name": "Name", "type": "string", "format": "name", "jsonPath": ".metadata.name"}]
        if res in self.crds:
            columns += self.crds[res]["columns"] or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        elif res.plural == "jobs":
            columns += [{"name": "Status", "type": "string", "fn": _job_status},
                        {"name": "Completions", "type": "string",
                         "fn": lambda o: f"{dig(o, 'status.succeeded') or 0}/{dig(o, 'spec.completions') or 1}"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        elif res.plural == "pods":
            columns += [{"name": "Status", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        elif res.plural == "events":
            columns = [{"name": n, "type": "string", "jsonPath": p} for n, p in
                       (("Type", ".type"), ("Reason", ".reason"), ("Object", ".involvedObject.name"),
                        ("Message", ".message"))]
        else:
            columns += [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]

        def cell(col: dict[str, Any], obj: dict[str, Any]) -> Any:
            value = col["fn"](obj) if "fn" in col else dig(obj, col["jsonPath"])
            return human_age(value) if col["type"] == "date" else value

        definitions = [{"name": c["name"], "type": "string" if c["type"] == "date" else c["type"],
                        "format": c.get("format", ""), "description": c.get("description", ""),
                        "priority": c.get("priority", 0)} for c in columns]
        rows = [{"cells": [cell(c, o) for c in columns],
                 "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
                for o in objs]
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(self.rv)},
                "columnDefinitions": definitions, "rows": rows}


def _job_status(job: dict[str, Any]) -> str:
    for cond in dig(job, "status.conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended"):
            return cond["type"]
    return "Running" if dig(job, "status.active") else "Pending"


async def serve(port_file: Path, audit: Path | None, port: int = 0, selectable_fields: bool = True) -> None:
    emulator = Emulator(audit, selectable_fields)
    async with emulator, kmock.Server(emulator, port=port or None) as server:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(server.port))
        tmp.replace(port_file)  # atomically: the fixture polls for this file
        log.info("emulated Kubernetes API on %s", server.url)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True, help="written with the port once listening")
    parser.add_argument("--audit", type=Path, default=None, help="JSON-lines log of every API request")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--without-selectable-fields", action="store_true",
                        help="behave as an API server before Kubernetes 1.31: no CRD selectableFields")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s emulator %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args.port_file, args.audit, args.port, not args.without_selectable_fields))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
