"""The CRDs generated from the spec models: `tools/gen-crds.py` writes them to `crds/` and the chart.

Each field of a model becomes a structural-schema node: its type (a nested model an object, a
`list` an array, a `dict` an object with `additionalProperties`, `dict[str, Any]` an open object,
a `Literal` a string enum, `int | Literal[...]` an int-or-string with a pattern), its bounds,
length limits and pattern, its default (a nested model's is `{}`, which the API server fills from
the nested defaults) and `required`. What the models check in code and the CRD-only parts
(names, printer columns, CEL rules, status) come from `adaptinf.crd_extras`. The output is
deterministic, so a test compares the committed files with it byte for byte.
"""
from __future__ import annotations

import copy
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from adaptinf import crd_extras as extras
from adaptinf.spec import API_GROUP, API_VERSION

Node = dict[str, Any]
GENERATOR = "tools/gen-crds.py"
# Where the CRDs are written, relative to the repository root: the single source and the Helm
# chart's copy (Helm installs a chart's crds/ folder as it is).
CRD_DIRS = ("crds", "charts/adaptinf/crds")

_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}
# Key order of a node in the output (for reading; the API server does not care).
_ORDER = ("type", "x-kubernetes-int-or-string", "description", "enum", "default", "minimum", "exclusiveMinimum",
          "maximum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "format",
          "required", "not", "oneOf", "minProperties", "maxProperties")
_LAST = ("additionalProperties", "items", "properties")


class SchemaError(TypeError):
    """A model field the generator cannot express in a structural schema, or a bad extra."""


def _sorted(node: Node) -> Node:
    def rank(key: str) -> tuple[int, int]:
        if key in _ORDER:
            return 0, _ORDER.index(key)
        if key in _LAST:
            return 2, _LAST.index(key)
        return 1, 0
    return {k: node[k] for k in sorted(node, key=rank)}


def _merge(node: Node, extra: Node, where: str) -> None:
    """Lay `extra` over `node`: new keys are added, nested objects merged; a generated value may not
    change, except a description."""
    for key, value in extra.items():
        if key not in node or key == "description":
            node[key] = copy.deepcopy(value)
        elif isinstance(node[key], dict) and isinstance(value, dict):
            node[key] = dict(node[key])   # copied: a model's properties are shared by its uses
            _merge(node[key], value, f"{where}.{key}")
        elif node[key] != value:
            raise SchemaError(f"{where}: the extra {key}={value!r} contradicts the model's {node[key]!r}")


class _Generator:
    def __init__(self) -> None:
        self.used_models: set[type[BaseModel]] = set()
        self.used_fields: set[tuple[type[BaseModel], str]] = set()
        # One `properties` object per model, shared by all its uses: the YAML names it once
        # (an anchor) and refers to it elsewhere, as StageResources in every resources.<stage>.
        self.properties: dict[type[BaseModel], Node] = {}

    def model(self, model: type[BaseModel], where: str) -> Node:
        node: Node = {"type": "object"}
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        required = [alias for alias, info in fields.items() if info.is_required()]
        if required:
            node["required"] = required
        if model.model_config.get("extra") == "allow":   # unknown keys are kept: an open object
            node["x-kubernetes-preserve-unknown-fields"] = True
        if model not in self.properties:
            self.properties[model] = {alias: self.field(model, alias, info, f"{where}.{alias}")
                                      for alias, info in fields.items()}
        node["properties"] = self.properties[model]
        if model in extras.MODEL_EXTRAS:
            self.used_models.add(model)
            _merge(node, extras.MODEL_EXTRAS[model], where)
        return _sorted(node)

    def field(self, model: type[BaseModel], alias: str, info: FieldInfo, where: str) -> Node:
        node = self.type(info.annotation, list(info.metadata), where)
        if info.description:
            node["description"] = info.description
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            if default is not None:
                node["default"] = self.default(default, node, where)
        if (model, alias) in extras.FIELD_EXTRAS:
            self.used_fields.add((model, alias))
            _merge(node, extras.FIELD_EXTRAS[(model, alias)], where)
        return _sorted(node)

    def default(self, value: Any, node: Node, where: str) -> Any:
        if isinstance(value, BaseModel):
            # `{}`: the API server fills in the nested defaults, which must give the model's default.
            filled: Any = {}
            _fill_defaults(filled, node)
            if filled != value.model_dump(by_alias=True, mode="json", exclude_none=True):
                raise SchemaError(f"{where}: the default differs from its fields' defaults; a CRD cannot say it")
            return {}
        return to_jsonable_python(value, by_alias=True)

    def type(self, tp: Any, metadata: list[Any], where: str) -> Node:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Annotated:
            return self.type(args[0], metadata + list(args[1:]), where)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) == 1:   # Optional: a field that may be left out (the CRD has no nulls)
                return self.type(members[0], metadata, where)
            return _constrained(_int_or_literal(members, where), metadata, where)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.model(tp, where)
        if origin is list:
            return _constrained({"type": "array", "items": self.type(args[0], [], f"{where}[]")}, metadata, where)
        if origin is dict:
            if args[0] is not str:
                raise SchemaError(f"{where}: a map needs string keys, got {args[0]}")
            if args[1] is Any:   # keys checked in code (strategyOptions: they depend on the strategy)
                return _constrained({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, metadata, where)
            return _constrained({"type": "object", "additionalProperties": self.type(args[1], [], f"{where}.*")},
                                metadata, where)
        if origin is typing.Literal:
            if not all(isinstance(a, str) for a in args):
                raise SchemaError(f"{where}: only string Literals are supported, got {args}")
            return _constrained({"type": "string", "enum": list(args)}, metadata, where)
        if tp in _SCALARS:
            node = _constrained({"type": _SCALARS[tp]}, metadata, where)
            if node == {"type": "string", "pattern": extras.QUANTITY}:
                return copy.deepcopy(extras.QUANTITY_NODE)
            return node
        raise SchemaError(f"{where}: no CRD type for {tp!r}")


def model_schema(model: type[BaseModel], where: str = "spec") -> Node:
    """One model's structural schema, with the extras that name it."""
    return _Generator().model(model, where)


def _int_or_literal(members: list[Any], where: str) -> Node:
    """`int | Literal["a", "b"]` → an int-or-string whose strings are the Literal's."""
    literals = [a for a in members if typing.get_origin(a) is typing.Literal]
    if int not in members or len(literals) + 1 != len(members):
        raise SchemaError(f"{where}: only Optional[...] and int | Literal[...] unions are supported, got {members}")
    names = [v for lit in literals for v in typing.get_args(lit)]
    return {"x-kubernetes-int-or-string": True, "pattern": f"^({'|'.join(names)})$"}


def _constrained(node: Node, metadata: list[Any], where: str) -> Node:
    """`node` with the bounds, lengths and pattern of pydantic's field metadata."""
    kind = node.get("type")
    length = {"array": "Items", "object": "Properties"}.get(kind or "", "Length")
    for m in metadata:
        if isinstance(m, at.Ge):
            node["minimum"] = m.ge
        elif isinstance(m, at.Gt):
            node["minimum"], node["exclusiveMinimum"] = m.gt, True
        elif isinstance(m, at.Le):
            node["maximum"] = m.le
        elif isinstance(m, at.Lt):
            node["maximum"], node["exclusiveMaximum"] = m.lt, True
        elif isinstance(m, at.MinLen):
            node[f"min{length}"] = m.min_length
        elif isinstance(m, at.MaxLen):
            node[f"max{length}"] = m.max_length
        elif type(m).__name__ == "_PydanticGeneralMetadata":   # Field(pattern=...)
            given = {k: v for k, v in vars(m).items() if v is not None}
            if set(given) - {"pattern"}:
                raise SchemaError(f"{where}: no CRD keyword for {sorted(set(given) - {'pattern'})}")
            node["pattern"] = given["pattern"]
        elif not callable(getattr(m, "func", None)):   # a validator function is checked in code
            raise SchemaError(f"{where}: no CRD keyword for the constraint {m!r}")
    return node


def _fill_defaults(obj: dict[str, Any], node: Node) -> None:
    """What the API server fills into `obj` from `node`'s defaults, recursively."""
    for key, sub in (node.get("properties") or {}).items():
        if key not in obj and "default" in sub:
            obj[key] = copy.deepcopy(sub["default"])
        if isinstance(obj.get(key), dict):
            _fill_defaults(obj[key], sub)


def _root_schema(info: extras.CrdInfo, gen: _Generator) -> Node:
    return {"type": "object", "description": info.description, "required": ["spec"], "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": copy.deepcopy(extras.METADATA),
        "spec": gen.model(info.spec_model, "spec"),
        "status": copy.deepcopy(info.status)}}


def crd_document(info: extras.CrdInfo, gen: _Generator | None = None) -> dict[str, Any]:
    """One CustomResourceDefinition as a dict."""
    gen = gen or _Generator()
    version: dict[str, Any] = {"name": API_VERSION, "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "additionalPrinterColumns": copy.deepcopy(info.printer_columns)}
    if info.selectable_fields:
        version["selectableFields"] = [{"jsonPath": path} for path in info.selectable_fields]
    version["schema"] = {"openAPIV3Schema": _root_schema(info, gen)}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{API_GROUP}", "labels": dict(extras.LABELS)},
        "spec": {"group": API_GROUP, "scope": "Namespaced",
                 "names": {"kind": info.kind, "listKind": f"{info.kind}List", "plural": info.plural,
                           "singular": info.kind.lower(), "shortNames": [info.short_name],
                           "categories": list(extras.CATEGORIES)},
                 "versions": [version]}}


class _Dumper(yaml.SafeDumper):
    """Block style, with lists of scalars and short all-scalar maps on one line (as a person
    writes a CRD); a model's shared properties get an anchor named after the model."""
    shared_names: dict[int, str] = {}   # id(properties object) → anchor name, set by `render`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.node_anchors: dict[int, str] = {}

    def ignore_aliases(self, data: Any) -> bool:
        return id(data) not in self.shared_names

    def represent_dict(self, data: Any) -> yaml.Node:
        node = self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=_one_line(data))
        if id(data) in self.shared_names:
            self.node_anchors[id(node)] = self.shared_names[id(data)]
        return node

    def generate_anchor(self, node: yaml.Node) -> str:
        return self.node_anchors[id(node)]

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)   # list items indented below their key


def _one_line(data: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    if isinstance(data, list):
        return all(isinstance(v, scalar) for v in data)
    flat = all(isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(x, scalar) for x in v))
               for v in data.values())
    return flat and len(json.dumps(data, ensure_ascii=False)) <= 110


_Dumper.add_representer(dict, _Dumper.represent_dict)
_Dumper.add_representer(list, lambda d, data: d.represent_sequence("tag:yaml.org,2002:seq", data,
                                                                   flow_style=_one_line(data)))


def render(info: extras.CrdInfo, gen: _Generator | None = None) -> str:
    header = (f"# {info.kind}: generated by {GENERATOR} from adaptinf.spec.{info.spec_model.__name__} and\n"
              f"# adaptinf.crd_extras (names, printer columns, CEL rules, status). Do not edit: change those\n"
              f"# and run {GENERATOR}; tests/test_crds_generated.py checks the files are current.\n")
    gen = gen or _Generator()
    doc = crd_document(info, gen)
    dumper = type("Dumper", (_Dumper,), {"shared_names": {id(props): model.__name__[0].lower() + model.__name__[1:]
                                                     for model, props in gen.properties.items()}})
    body = yaml.dump(doc, Dumper=dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
    return header + body


def generated() -> dict[str, str]:
    """File name → text of every CRD; refuses extras that name no model or field in use (a typo)."""
    gen = _Generator()
    files = {f"{info.plural}.yaml": render(info, gen) for info in extras.CRDS.values()}
    unused = [m.__name__ for m in extras.MODEL_EXTRAS if m not in gen.used_models]
    unused += [f"{m.__name__}.{alias}" for m, alias in extras.FIELD_EXTRAS if (m, alias) not in gen.used_fields]
    if unused:
        raise SchemaError(f"crd_extras names what no CRD contains: {', '.join(unused)}")
    return files


# Third-party CRDs the chart installs as they are (Kopf's peering resources): crds/ holds the
# source, the chart's copy must equal it.
VENDORED = ("kopfpeerings.yaml",)


def vendored(root: Path) -> dict[str, str]:
    """File name → text of the third-party CRDs, read from `root`/crds."""
    out = {}
    for name in VENDORED:
        path = root / CRD_DIRS[0] / name
        if not path.is_file():
            raise SchemaError(f"{CRD_DIRS[0]}/{name}: the source of a vendored CRD is missing (restore it from git)")
        out[name] = path.read_text(encoding="utf-8")
    return out


def drift(root: Path) -> list[str]:
    """How the committed CRDs under `root` differ from the generated ones ([] when current)."""
    want = generated() | vendored(root)
    out = []
    for folder in CRD_DIRS:
        have = {p.name for p in (root / folder).glob("*.yaml")}
        for name in sorted(have - set(want)):
            out.append(f"{folder}/{name}: not generated (no such CRD in adaptinf.crd_extras.CRDS)")
        for name, text in want.items():
            path = root / folder / name
            if not path.is_file():
                out.append(f"{folder}/{name}: missing")
            elif path.read_text(encoding="utf-8") != text:
                out.append(f"{folder}/{name}: differs from the generated CRD")
    return out


def write(root: Path) -> list[str]:
    """Write every generated CRD under `root` (and the chart's copy of the vendored ones) and
    remove stale ones; the paths changed."""
    want = generated() | vendored(root)
    changed = []
    for folder in CRD_DIRS:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for path in sorted((root / folder).glob("*.yaml")):
            if path.name not in want:
                path.unlink()
                changed.append(f"removed {folder}/{path.name}")
        for name, text in want.items():
            path = root / folder / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                changed.append(f"wrote {folder}/{name}")
    return changed
