"""Decode the Kubernetes protobuf request bodies the emulator receives, for the few kinds clients
send that way: kubectl's `create namespace|secret|configmap` and helm's release Secrets (and
helm's DeleteOptions).

A protobuf body is the magic `k8s\\x00` followed by a `runtime.Unknown` (typeMeta, raw bytes); the
raw bytes are the object's message as in k8s.io/api (generated.proto). Only the fields those
clients set are decoded (unknown fields are skipped): ObjectMeta's name, generateName, namespace,
labels, annotations and finalizers; a Secret's data, stringData, type and immutable; a
ConfigMap's data, binaryData and immutable; a Namespace's spec.finalizers; DeleteOptions'
gracePeriodSeconds and propagationPolicy. The result is the
object as JSON would carry it (Secret data base64-encoded). Answers stay JSON, which every
client accepts.
"""
from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf message this module can read."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) in wire order: an int for varints, bytes for length-delimited
    fields; fixed-width fields are skipped (none of the decoded kinds has one)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ProtobufError("truncated field")
            out.append((number, buf[pos:pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _bytes(fs: list[tuple[int, int | bytes]], number: int) -> list[bytes]:
    return [v for n, v in fs if n == number and isinstance(v, bytes)]


def _string(fs: list[tuple[int, int | bytes]], number: int) -> str | None:
    found = _bytes(fs, number)
    return found[-1].decode() if found else None


def _map(fs: list[tuple[int, int | bytes]], number: int) -> dict[str, bytes]:
    """A map<string, string|bytes> field: repeated entries of (key = 1, value = 2)."""
    out = {}
    for entry in _bytes(fs, number):
        e = fields(entry)
        out[_string(e, 1) or ""] = (_bytes(e, 2) or [b""])[-1]
    return out


def _object_meta(buf: bytes) -> dict[str, Any]:
    fs = fields(buf)
    meta: dict[str, Any] = {}
    for key, number in (("name", 1), ("generateName", 2), ("namespace", 3)):
        if value := _string(fs, number):
            meta[key] = value
    for key, number in (("labels", 11), ("annotations", 12)):
        if entries := _map(fs, number):
            meta[key] = {k: v.decode() for k, v in entries.items()}
    if finalizers := [b.decode() for b in _bytes(fs, 14)]:
        meta["finalizers"] = finalizers
    return meta


def _secret(fs: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": _object_meta((_bytes(fs, 1) or [b""])[-1])}
    if data := _map(fs, 2):
        obj["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    if type_ := _string(fs, 3):
        obj["type"] = type_
    if string_data := _map(fs, 4):
        obj["stringData"] = {k: v.decode() for k, v in string_data.items()}
    if immutable := [v for n, v in fs if n == 5]:
        obj["immutable"] = bool(immutable[-1])
    return obj


def _config_map(fs: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": _object_meta((_bytes(fs, 1) or [b""])[-1])}
    if data := _map(fs, 2):
        obj["data"] = {k: v.decode() for k, v in data.items()}
    if binary := _map(fs, 3):
        obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    if immutable := [v for n, v in fs if n == 4]:
        obj["immutable"] = bool(immutable[-1])
    return obj


def _namespace(fs: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": _object_meta((_bytes(fs, 1) or [b""])[-1])}
    spec = fields((_bytes(fs, 2) or [b""])[-1])
    if finalizers := [b.decode() for b in _bytes(spec, 1)]:
        obj["spec"] = {"finalizers": finalizers}
    return obj


def _delete_options(fs: list[tuple[int, int | bytes]]) -> dict[str, Any]:
    """The body of a DELETE (helm uninstall sends one): gracePeriodSeconds = 1, propagationPolicy = 4."""
    obj: dict[str, Any] = {}
    if grace := [v for n, v in fs if n == 1 and isinstance(v, int)]:
        obj["gracePeriodSeconds"] = grace[-1]
    if policy := _string(fs, 4):
        obj["propagationPolicy"] = policy
    return obj


KINDS = {"Secret": _secret, "ConfigMap": _config_map, "Namespace": _namespace, "DeleteOptions": _delete_options}


def decode(body: bytes) -> dict[str, Any]:
    """The object a protobuf request body carries, as a JSON-shaped dict."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (no k8s\\x00 prefix)")
    unknown = fields(body[len(MAGIC):])
    type_meta = fields((_bytes(unknown, 1) or [b""])[-1])
    api_version, kind = _string(type_meta, 1) or "", _string(type_meta, 2) or ""
    if api_version not in ("v1", "meta.k8s.io/v1") or kind not in KINDS:
        raise ProtobufError(f"protobuf bodies of {api_version}/{kind} are not decoded here; send JSON")
    raw = fields((_bytes(unknown, 2) or [b""])[-1])
    return {"apiVersion": api_version, "kind": kind, **KINDS[kind](raw)}
