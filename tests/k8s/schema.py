"""CRD structural schemas in tests: what a real API server does with them, in plain Python.

A real kube-apiserver, for every custom resource it stores, (1) prunes fields the schema does not
declare (or rejects them under `fieldValidation=Strict`), (2) fills `default`s, and (3) validates
the result against the OpenAPI v3 schema (422 Invalid). The emulator does the same with these
helpers, and `tests/k8s/test_crd_schema.py` validates example objects with `to_json_schema`.

The translation covers the Kubernetes dialect used in `crds/`: `nullable`, boolean
`exclusiveMinimum`/`exclusiveMaximum` (OpenAPI 3.0), `x-kubernetes-int-or-string`,
`x-kubernetes-list-type: set` and `x-kubernetes-preserve-unknown-fields`. CEL rules
(`x-kubernetes-validations`) are dropped: there is no CEL evaluator here — except the one
transition rule `self == oldSelf` (immutable fields), which `transition_errors` checks on updates.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

JSONSchema = dict[str, Any]

# Keys every Kubernetes object carries whatever its schema says.
_ROOT_KEYS = ("apiVersion", "kind", "metadata")


def load_crd(path: str | Path) -> dict[str, Any]:
    """One CustomResourceDefinition document from a YAML file."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    crds = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"{path}: expected exactly one CustomResourceDefinition, found {len(crds)}")
    return crds[0]


def version_schema(crd: dict[str, Any], version: str | None = None) -> JSONSchema:
    """The `openAPIV3Schema` of one version (the storage version by default)."""
    for v in crd["spec"]["versions"]:
        if (version is None and v.get("storage")) or v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']}: no version {version or '(storage)'}")


def to_json_schema(node: Any, *, reject_unknown: bool = True, _root: bool = True) -> Any:
    """Translate a Kubernetes OpenAPI v3 schema into JSON Schema (draft 2020-12).

    With `reject_unknown`, objects that declare `properties` forbid other keys — what the
    API server does under `fieldValidation=Strict` (by default it prunes them silently).
    """
    if isinstance(node, list):
        return [to_json_schema(n, reject_unknown=reject_unknown) for n in node]
    if not isinstance(node, dict):
        return node
    out: JSONSchema = {}
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            # A root `metadata` schema only constrains name/generateName: the rest stays open.
            out[key] = {k: to_json_schema(v, reject_unknown=reject_unknown and not (_root and k == "metadata"),
                                          _root=False) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"):
            out[key] = to_json_schema(value, reject_unknown=reject_unknown, _root=False)
        elif key == "x-kubernetes-int-or-string" and value and "anyOf" not in node:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        elif key == "x-kubernetes-list-type" and value == "set":
            out["uniqueItems"] = True
        elif key.startswith("x-kubernetes-") or key in ("nullable", "exclusiveMinimum", "exclusiveMaximum"):
            continue  # handled below or meaningless for validation (CEL rules, list-map keys)
        else:
            out[key] = copy.deepcopy(value)
    # OpenAPI 3.0 booleans → JSON Schema numbers.
    for bound, excl in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(excl) is True and bound in node:
            out[excl] = out.pop(bound)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if reject_unknown and out.get("type") == "object" and "properties" in node and not preserve \
            and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def object_schema(crd_schema: JSONSchema, *, reject_unknown: bool = True) -> JSONSchema:
    """A JSON Schema for whole objects: apiVersion/kind/metadata are always allowed."""
    root = to_json_schema(crd_schema, reject_unknown=reject_unknown)
    root.setdefault("properties", {})
    for key in _ROOT_KEYS:
        root["properties"].setdefault(key, {"type": "object" if key == "metadata" else "string"})
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return root


def validation_errors(obj: dict[str, Any], crd_schema: JSONSchema, *, reject_unknown: bool = True) -> list[str]:
    """Human-readable errors, each prefixed with the field path (`spec.trainBudget: ...`)."""
    validator = jsonschema.Draft202012Validator(object_schema(crd_schema, reject_unknown=reject_unknown))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def _is_closed_object(schema: JSONSchema) -> bool:
    return "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")


def prune(obj: Any, schema: JSONSchema, path: str = "", *, root: bool = True) -> list[str]:
    """Drop, in place, every field the schema does not declare; return their paths."""
    pruned: list[str] = []
    if isinstance(obj, dict):
        if _is_closed_object(schema):
            props = schema["properties"]
            for key in list(obj):
                if root and key == "metadata":
                    continue  # the server keeps all of metadata; a schema may only constrain name
                if key in props:
                    pruned += prune(obj[key], props[key], f"{path}.{key}" if path else key, root=False)
                elif not (root and key in _ROOT_KEYS):
                    del obj[key]
                    pruned.append(f"{path}.{key}" if path else key)
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, value in obj.items():
                pruned += prune(value, schema["additionalProperties"], f"{path}.{key}", root=False)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            pruned += prune(item, schema["items"], f"{path}[{i}]", root=False)
    return pruned


def apply_defaults(obj: Any, schema: JSONSchema) -> None:
    """Fill `default`s in place, recursively — also inside defaults just filled in."""
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for value in obj.values():
                apply_defaults(value, schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


IMMUTABLE_RULE = "self == oldSelf"


def transition_errors(new: Any, old: Any, schema: JSONSchema, path: str = "") -> list[str]:
    """Errors for fields whose `self == oldSelf` rule an update breaks (a real server's CEL
    transition rules: checked only where the field exists in both the old and new object)."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        if rule.get("rule", "").strip() == IMMUTABLE_RULE and new != old:
            errors.append(f"{path or '<root>'}: Invalid value: {rule.get('message') or 'is immutable'}")
    if isinstance(new, dict) and isinstance(old, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in new and key in old:
                errors += transition_errors(new[key], old[key], sub, f"{path}.{key}" if path else key)
    return errors
