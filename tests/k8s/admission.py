"""Built-in admission of a real kube-apiserver that the emulator applies (emulator.py).

- metadata validation: label values of at most 63 characters, `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
  (also a pod template's labels), 422 Invalid naming the field;
- ResourceQuota: `count/<plural>.<group>` (or `count/<plural>` for the core group), `pods`, and
  `requests.<resource>` / `limits.<resource>` summed over the namespace's pods that have not ended:
  a create that would go over `spec.hard` is 403 Forbidden "exceeded quota", as the quota plugin says it;
- ServiceAccount: a pod naming a ServiceAccount that does not exist in its namespace is 403 Forbidden
  (`default` always exists, as the token controller creates it in every namespace);
- LimitRanger, `type: Container` items: missing limits and requests are filled from `default` /
  `defaultRequest` (defaulted as the API does: default ← max, defaultRequest ← default, then min),
  then a container over `max` or under `min` is 403 Forbidden with the plugin's message.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any
from collections.abc import Callable

import kmock

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
SUFFIXES = {"": 1, "m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


class Forbidden(kmock.KubernetesError):
    pass


def label_errors(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for each invalid label value of the object (and of a pod template)."""
    out = []
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for where, labels in (("metadata.labels", (obj.get("metadata") or {}).get("labels")),
                          ("spec.template.metadata.labels", template.get("labels"))):
        for value in map(str, (labels or {}).values()):
            if len(value) > 63:
                out.append((where, f'Invalid value: "{value}": must be no more than 63 characters'))
            elif not LABEL_VALUE.fullmatch(value):
                out.append((where, (f'Invalid value: "{value}": a valid label must be an empty string or consist '
                                    "of alphanumeric characters, '-', '_' or '.'")))
    return out


def quantity(text: Any) -> Fraction:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not m or m[2] not in SUFFIXES:
        raise ValueError(f"not a quantity: {text!r}")
    return Fraction(m[1]) * SUFFIXES[m[2]]


def _pod_usage(pod: dict[str, Any], key: str) -> Fraction:
    kind, _, resource = key.partition(".")
    total = Fraction(0)
    for c in (pod.get("spec") or {}).get("containers") or []:
        value = ((c.get("resources") or {}).get(kind) or {}).get(resource)
        total += quantity(value) if value is not None else 0
    return total


def admit_create(plural: str, group: str, kind: str, obj: dict[str, Any], ns: str,
                 objects: Callable[[str], list[dict[str, Any]]]) -> None:
    name = obj["metadata"]["name"]
    what = f"{plural}.{group}" if group else plural
    if plural == "pods":
        sa = (obj.get("spec") or {}).get("serviceAccountName")
        if sa and sa != "default" and not any(o["metadata"]["name"] == sa for o in objects("serviceaccounts")):
            raise Forbidden(403, "Forbidden", f'pods "{name}" is forbidden: error looking up service account '
                                              f'{ns}/{sa}: serviceaccount "{sa}" not found',
                            {"name": name, "kind": "pods"})
        if errors := limit_range_errors(obj, objects("limitranges")):
            raise Forbidden(403, "Forbidden", f'pods "{name}" is forbidden: ' + ", ".join(errors),
                            {"name": name, "kind": "pods"})
    live_pods = None
    for quota in objects("resourcequotas"):
        for key, hard in ((quota.get("spec") or {}).get("hard") or {}).items():
            if key in (f"count/{what}", *(["pods"] if plural == "pods" else [])):
                used, asked = Fraction(len(objects(plural))), Fraction(1)
            elif plural == "pods" and key.startswith(("requests.", "limits.")):
                if live_pods is None:
                    live_pods = [p for p in objects("pods")
                                 if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
                used, asked = sum((_pod_usage(p, key) for p in live_pods), Fraction(0)), _pod_usage(obj, key)
                if not asked:
                    continue
            else:
                continue
            if used + asked > quantity(hard):
                raise Forbidden(403, "Forbidden", f'{what} "{name}" is forbidden: exceeded quota: '
                                                  f"{quota['metadata']['name']}, requested: {key}={_fmt(asked)}, "
                                                  f"used: {key}={_fmt(used)}, limited: {key}={hard}",
                                {"name": name, "kind": plural})


def _container_item(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A `type: Container` LimitRange item with the API server's defaulting applied."""
    out = {k: dict(item.get(k) or {}) for k in ("max", "min", "default", "defaultRequest")}
    for source, target in (("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")):
        for key, value in out[source].items():
            out[target].setdefault(key, value)
    return out


def limit_range_errors(pod: dict[str, Any], limit_ranges: list[dict[str, Any]]) -> list[str]:
    """Fills the pod's containers' missing limits/requests from the namespace's LimitRanges (the
    plugin mutates the pod) and returns what goes over `max` or under `min`."""
    errors = []
    for lr in limit_ranges:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type") != "Container":
                continue
            rules = _container_item(item)
            for c in (pod.get("spec") or {}).get("containers") or []:
                res = c.setdefault("resources", {})
                limits, requests = res.setdefault("limits", {}), res.setdefault("requests", {})
                for key, value in limits.items():  # the pod's own defaulting: a limit alone is the request too
                    requests.setdefault(key, value)
                for key, value in rules["default"].items():
                    limits.setdefault(key, value)
                for key, value in rules["defaultRequest"].items():
                    requests.setdefault(key, value)
                for key, bound in rules["max"].items():
                    if key in limits and quantity(limits[key]) > quantity(bound):
                        errors.append(f"maximum {key} usage per Container is {bound}, but limit is {limits[key]}")
                    elif key in requests and quantity(requests[key]) > quantity(bound):
                        errors.append(f"maximum {key} usage per Container is {bound}, but request is {requests[key]}")
                for key, bound in rules["min"].items():
                    if key in requests and quantity(requests[key]) < quantity(bound):
                        errors.append(f"minimum {key} usage per Container is {bound}, but request is {requests[key]}")
    return errors


def _fmt(value: Fraction) -> str:
    return str(int(value)) if value.denominator == 1 else str(float(value))
