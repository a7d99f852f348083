"""The CRDs in `crds/` against the pydantic models in `adaptinf.spec` (the one validation point).

The CRDs are generated from the models (tools/gen-crds.py); these checks hold the generator and
`adaptinf.crd_extras` to what the models accept.

Three kinds of checks: hand-written valid/invalid examples (errors name the field), a structural
walk that compares every field, type, bound, enum, default and `required` of the two, and many
seeded random objects generated from the CRD schema (plus one invalid mutation per constrained
field) validated through both jsonschema and pydantic, which must agree.
"""
from __future__ import annotations

import copy
import random
import re
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
from pydantic import BaseModel, ValidationError

import schema as crdschema
from adaptinf.data.demo import dataset_manifest, run_manifest
from adaptinf.spec import FULL_API_VERSION, QUANTITY, SCORERS, STRATEGIES, InstructionDatasetSpec, LifelongRunSpec

CRDS = Path(__file__).resolve().parents[2] / "crds"
KINDS = {"LifelongRun": ("lifelongruns.yaml", LifelongRunSpec),
         "InstructionDataset": ("instructiondatasets.yaml", InstructionDatasetSpec)}


def crd_schema(kind: str) -> dict[str, Any]:
    return crdschema.version_schema(crdschema.load_crd(CRDS / KINDS[kind][0]))


def wrap(kind: str, spec: Any, name: str = "x") -> dict[str, Any]:
    return {"apiVersion": FULL_API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def pydantic_errors(kind: str, spec: Any) -> list[str]:
    try:
        KINDS[kind][1].model_validate(spec)
    except ValidationError as err:
        return [".".join(map(str, e["loc"])) for e in err.errors()]
    return []


MIN_RUN = {"model": {"base": "model"}, "trainBudget": 8, "storage": {"uri": "s3://bucket/runs"}}
MIN_DS = {"run": "demo", "source": "s3://bucket/data/00.jsonl"}


# -- the CRD documents themselves ----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_crd_metadata(kind: str) -> None:
    crd = crdschema.load_crd(CRDS / KINDS[kind][0])
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["group"] == "adaptinf.dev" and spec["scope"] == "Namespaced"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.adaptinf.dev"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["shortNames"] == [{"LifelongRun": "llr", "InstructionDataset": "ids"}[kind]]
    assert "adaptinf" in spec["names"]["categories"]
    assert "all" not in spec["names"]["categories"]  # `kubectl delete all --all` must not delete runs
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    expected = {"LifelongRun": ["Step", "Stage", "Phase", "Pool", "AvgAcc", "Forgetting", "Age"],
                "InstructionDataset": ["Run", "Step", "Phase", "Accepted", "Rejected", "Age"]}[kind]
    assert columns == expected


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_declared_fields(kind: str) -> None:
    crd = crdschema.load_crd(CRDS / KINDS[kind][0])
    root = crdschema.version_schema(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        node = root
        for part in column["jsonPath"].strip(".").split("."):
            if part == "creationTimestamp" and node.get("type") == "object":
                break  # metadata is the API server's, not the schema's
            assert part in node.get("properties", {}), f"{column['name']}: {column['jsonPath']} is not declared"
            node = node["properties"][part]
        else:
            want = {"integer": "integer", "number": "number", "string": "string", "date": "string"}[column["type"]]
            assert node["type"] == want, column


@pytest.mark.parametrize("kind", KINDS)
def test_selectable_fields_are_what_the_api_server_accepts(kind: str) -> None:
    """A 1.31+ API server refuses a CRD whose selectableFields are more than 8, under metadata, or
    not scalar fields of the schema; the dataset CRD declares the one the operator selects by."""
    crd = crdschema.load_crd(CRDS / KINDS[kind][0])
    root = crdschema.version_schema(crd)
    fields = [f["jsonPath"] for f in crd["spec"]["versions"][0].get("selectableFields", [])]
    assert len(fields) <= 8 and len(set(fields)) == len(fields)
    for path in fields:
        node = root
        assert not path.startswith(".metadata"), path
        for part in path.strip(".").split("."):
            assert part in node.get("properties", {}), f"{path} is not declared"
            node = node["properties"][part]
        assert node["type"] in ("string", "integer", "boolean"), path
    assert fields == {"LifelongRun": [], "InstructionDataset": [".spec.run"]}[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_status_is_small_and_has_conditions(kind: str) -> None:
    status = crd_schema(kind)["properties"]["status"]["properties"]
    assert {"phase", "step", "observedGeneration", "conditions"} <= set(status)
    cond = status["conditions"]["items"]
    assert set(cond["properties"]) >= {"type", "status", "reason", "message", "lastTransitionTime"}
    # metav1.Condition's shape: the operator's conditions pass it, an empty reason does not.
    assert set(cond["required"]) == {"type", "status", "reason", "message", "lastTransitionTime"}
    from adaptinf.operator.status import set_condition
    conds = set_condition([], "Failed", True, "StageFailed", "m", "2024-01-01T00:00:00Z", 3)
    obj = {"apiVersion": "adaptinf.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"},
           "spec": {**(MIN_RUN if kind == "LifelongRun" else MIN_DS)}, "status": {"conditions": conds}}
    assert crdschema.validation_errors(obj, crd_schema(kind)) == []
    obj["status"]["conditions"][0]["reason"] = ""
    assert crdschema.validation_errors(obj, crd_schema(kind))
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    # Bounded status: no unbounded per-step history arrays besides conditions.
    assert [k for k, v in status.items() if v.get("type") == "array"] == ["conditions"]


def test_run_status_fields() -> None:
    status = crd_schema("LifelongRun")["properties"]["status"]["properties"]
    assert {"phase", "step", "stage", "poolSize", "selected", "avgAcc", "forgettingRate", "mlflowRunId",
            "observedGeneration", "conditions"} <= set(status)


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            names |= {key} | _property_names(sub)
        for key in ("items", "additionalProperties"):
            names |= _property_names(node.get(key))
    return names


@pytest.mark.parametrize("kind", KINDS)
def test_no_credentials_in_spec(kind: str) -> None:
    """Credentials reach Jobs only through Secrets (secretKeyRef), never through a spec."""
    names = {n.lower() for n in _property_names(crd_schema(kind)["properties"]["spec"])}
    # The pod template's references and model.tokenSecret name a Secret (and its key): they hold no secret.
    names -= {"imagepullsecrets", "secretkeyref", "secretref", "tokensecret"}
    assert not {n for n in names if re.search(r"password|secret|accesskey|token$|credential", n)}


# -- hand-written examples ----------------------------------------------------------------

VALID = [
    ("LifelongRun", MIN_RUN),
    ("LifelongRun", {**MIN_RUN, "poolBudget": 8, "strategy": "adapt-inf", "suspend": True,
                     "extract": {"layers": ["middle", 0, -1, "last"], "shards": 4},
                     "resources": {"default": {"gpus": 0, "cpu": "500m", "memory": "1Gi"},
                                   "clusterSelect": {"gpus": 0, "nodeSelector": {"pool": "cpu"}},
                                   "train": {"gpus": 2, "tolerations": [{"key": "gpu", "operator": "Exists",
                                                                         "effect": "NoSchedule"}],
                                             "backoffLimit": 0, "activeDeadlineSeconds": 3600,
                                             "shmSize": "8Gi", "ephemeralStorage": 100,
                                             "podLabels": {"example.com/team": "vision", "tier": ""},
                                             "podAnnotations": {"example.com/note": "any text: at all"},
                                             "runtimeClassName": "nvidia", "imagePullSecrets": ["regcred"],
                                             "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                                                 {"weight": 1, "preference": {"matchExpressions": [
                                                     {"key": "gpu", "operator": "In", "values": ["h100"]}]}}]}},
                                             "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                                                     {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                                                         "name": "hf", "key": "token"}}},
                                                     {"name": "MODE", "valueFrom": {"configMapKeyRef": {
                                                         "name": "cfg", "key": "mode", "optional": True}}}],
                                             "envFrom": [{"configMapRef": {"name": "proxy"}},
                                                         {"secretRef": {"name": "wandb"}, "prefix": "W_"}],
                                             "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "hf"}},
                                                         {"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}}],
                                             "volumeMounts": [{"name": "cache", "mountPath": "/tmp/huggingface"},
                                                              {"name": "scratch", "mountPath": "/scratch",
                                                               "readOnly": False, "subPath": "a/b"}]}},
                     "eval": {"suite": [{"skill": "color", "path": "eval/color.jsonl"}], "maxSamples": 5},
                     "mlflow": {"experiment": "e", "trackingUri": "http://mlflow:5000"}}),
    ("InstructionDataset", MIN_DS),
    ("InstructionDataset", {**MIN_DS, "order": 0, "format": "jsonl", "imageRoot": "s3://bucket/images"}),
]

INVALID = [  # (kind, spec, field path both must name)
    ("LifelongRun", {k: v for k, v in MIN_RUN.items() if k != "trainBudget"}, "spec"),
    ("LifelongRun", {**MIN_RUN, "trainBudget": 0}, "spec.trainBudget"),
    ("LifelongRun", {**MIN_RUN, "trainBudget": "eight"}, "spec.trainBudget"),
    ("LifelongRun", {**MIN_RUN, "model": {"base": ""}}, "spec.model.base"),
    ("LifelongRun", {**MIN_RUN, "model": {"base": "m", "dtype": "int4"}}, "spec.model.dtype"),
    ("LifelongRun", {**MIN_RUN, "extract": {"layers": ["middel"]}}, "spec.extract.layers.0"),
    ("LifelongRun", {**MIN_RUN, "extract": {"shards": 0}}, "spec.extract.shards"),
    ("LifelongRun", {**MIN_RUN, "training": {"learningRate": 0}}, "spec.training.learningRate"),
    ("LifelongRun", {**MIN_RUN, "model": {"base": "m", "lora": {"dropout": 1.0}}}, "spec.model.lora.dropout"),
    ("LifelongRun", {**MIN_RUN, "scorers": []}, "spec.scorers"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"gpus": -1}}}, "spec.resources.train.gpus"),
    # One pod runs on one node, and nodes have at most 8 GPUs: 9 could never be scheduled.
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"gpus": 9}}}, "spec.resources.train.gpus"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"memory": "16GB"}}}, "spec.resources.default.memory"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"cpu": 1.5}}}, "spec.resources.default.cpu"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"tolerations": [{"operator": "Maybe"}]}}},
     "spec.resources.default.tolerations.0.operator"),
    ("LifelongRun", {**MIN_RUN, "storage": {"uri": "s3://b", "accessKey": "AKIA..."}}, "spec.storage"),
    # The pod template: what the CRD can check itself (the operator checks reserved names too).
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"shmSize": "1GB"}}}, "spec.resources.train.shmSize"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"ephemeralStorage": -1}}},
     "spec.resources.default.ephemeralStorage"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"runtimeClassName": "Nvidia"}}},
     "spec.resources.train.runtimeClassName"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"podLabels": {"team": "a b"}}}},
     "spec.resources.train.podLabels.team"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"env": [{"name": "A", "value": "1", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}}}]}}}, "spec.resources.train.env.0"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"env": [{"name": "A", "valueFrom": {}}]}}},
     "spec.resources.train.env.0.valueFrom"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"env": [{"name": "1A=", "value": "1"}]}}},
     "spec.resources.train.env.0.name"),
    ("LifelongRun", {**MIN_RUN, "resources": {"train": {"envFrom": [{"prefix": "X_"}]}}},
     "spec.resources.train.envFrom.0"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"volumes": [{"name": "data"}]}}},
     "spec.resources.default.volumes.0"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"volumes": [{"name": "data", "emptyDir": {},
                                                                       "hostPath": {"path": "/"}}]}}},
     "spec.resources.default.volumes.0"),
    ("LifelongRun", {**MIN_RUN, "resources": {"default": {"volumes": [{"name": "d", "emptyDir": {}}],
                                                          "volumeMounts": [{"name": "d", "mountPath": "data"}]}}},
     "spec.resources.default.volumeMounts.0.mountPath"),
    ("LifelongRun", {**MIN_RUN, "bogus": 1}, "spec"),
    ("InstructionDataset", {"run": "demo"}, "spec"),
    ("InstructionDataset", {**MIN_DS, "format": "csv"}, "spec.format"),
    ("InstructionDataset", {**MIN_DS, "order": -1}, "spec.order"),
]


@pytest.mark.parametrize(("kind", "spec"), VALID)
def test_valid_examples(kind: str, spec: dict) -> None:
    assert crdschema.validation_errors(wrap(kind, spec), crd_schema(kind)) == []
    assert pydantic_errors(kind, spec) == []


@pytest.mark.parametrize(("kind", "spec", "field"), INVALID)
def test_invalid_examples_name_the_field(kind: str, spec: dict, field: str) -> None:
    errors = crdschema.validation_errors(wrap(kind, spec), crd_schema(kind))
    assert errors, "the CRD schema accepted an invalid object"
    assert any(e.split(":")[0] == field for e in errors), errors
    py = pydantic_errors(kind, spec)
    assert py, "pydantic accepted an invalid spec"
    # pydantic's location of a missing field is the field itself; the schema's is its parent.
    assert any(("spec." + p).startswith(field) for p in py), py


def test_numeric_strings_are_the_one_known_difference() -> None:
    """pydantic (lax mode) coerces "8" to 8 for hand-written local YAML; the API server does not."""
    spec = {**MIN_RUN, "trainBudget": "8"}
    assert crdschema.validation_errors(wrap("LifelongRun", spec), crd_schema("LifelongRun"))
    assert LifelongRunSpec.model_validate(spec).train_budget == 8


def test_demo_stream_manifests_are_valid() -> None:
    run = run_manifest("demo", [40, 40, 40], [{"skill": "color", "path": "eval/color.jsonl", "metric": "exact_match"}],
                       "quick")
    assert crdschema.validation_errors(run, crd_schema("LifelongRun")) == []
    ds = dataset_manifest("demo", 0, "00-colors")
    assert crdschema.validation_errors(ds, crd_schema("InstructionDataset")) == []


def test_cel_rules_mirror_model_validators() -> None:
    """The cross-field rules need CEL on a real API server; spec.py enforces the same ones."""
    rules = crd_schema("LifelongRun")["properties"]["spec"]
    assert "self.trainBudget <= self.poolBudget" in rules["x-kubernetes-validations"][0]["rule"]
    assert "kMax >= self.kMin" in rules["properties"]["clustering"]["x-kubernetes-validations"][0]["rule"]
    assert pydantic_errors("LifelongRun", {**MIN_RUN, "trainBudget": 9, "poolBudget": 8})
    assert pydantic_errors("LifelongRun", {**MIN_RUN, "clustering": {"kMin": 9, "kMax": 8}})
    assert "self.strategy != 'expansion'" in rules["x-kubernetes-validations"][1]["rule"]
    assert pydantic_errors("LifelongRun", {**MIN_RUN, "strategy": "expansion", "training": {"repair": {"fraction": 0.1}}})
    assert not pydantic_errors("LifelongRun", {**MIN_RUN, "strategy": "expansion", "training": {"repair": {"fraction": 0}}})
    assert "self.training.ewc.lambda == 0.0" in rules["x-kubernetes-validations"][2]["rule"]
    for strategy in ("ewc", "expansion", "multitask"):
        assert pydantic_errors("LifelongRun", {**MIN_RUN, "strategy": strategy, "training": {"ewc": {"lambda": 1.0}}})
    assert not pydantic_errors("LifelongRun", {**MIN_RUN, "strategy": "random", "training": {"ewc": {"lambda": 1.0}}})
    training = rules["properties"]["training"]["x-kubernetes-validations"][0]["rule"]
    assert "self.repair.placement != 'interleaved'" in training and "self.epochs >= 2" in training
    interleaved = {"epochs": 1, "repair": {"fraction": 0.1, "placement": "interleaved"}}
    assert pydantic_errors("LifelongRun", {**MIN_RUN, "training": interleaved})
    assert not pydantic_errors("LifelongRun", {**MIN_RUN, "training": {**interleaved, "epochs": 2}})


@pytest.mark.parametrize(("kind", "spec"), [("LifelongRun", MIN_RUN), ("InstructionDataset", MIN_DS)])
def test_server_defaults_equal_model_defaults(kind: str, spec: dict) -> None:
    """What the API server fills in is what pydantic would fill in: both backends see one spec."""
    obj = wrap(kind, copy.deepcopy(spec))
    crdschema.apply_defaults(obj, crd_schema(kind))
    assert obj["spec"] == KINDS[kind][1].model_validate(spec).to_dict()


def test_pruning_drops_unknown_fields() -> None:
    obj = wrap("LifelongRun", {**MIN_RUN, "extra": 1, "model": {"base": "m", "nope": 2}})
    obj["status"] = {"phase": "Running", "kopf": {"x": 1}}
    pruned = crdschema.prune(obj, crd_schema("LifelongRun"))
    assert sorted(pruned) == ["spec.extra", "spec.model.nope", "status.kopf"]
    assert crdschema.validation_errors(obj, crd_schema("LifelongRun")) == []


# -- structural agreement: every field, type, bound, enum, default --------------------------

def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007 - built at run time
    return tp, False


def _compare_type(tp: Any, node: dict, path: str, out: list[str]) -> None:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if node.get("type") != "object":
            out.append(f"{path}: model but CRD type {node.get('type')}")
        else:
            compare_model(tp, node, path, out)
    elif origin is list:
        if node.get("type") != "array":
            out.append(f"{path}: list but CRD type {node.get('type')}")
        else:
            _compare_type(typing.get_args(tp)[0], node["items"], f"{path}[]", out)
    elif origin is dict and typing.get_args(tp)[1] is typing.Any:
        # An open object whose keys a validator checks (strategyOptions: they depend on strategy).
        if node.get("type") != "object" or node.get("x-kubernetes-preserve-unknown-fields") is not True \
                or "properties" in node:
            out.append(f"{path}: dict[str, Any] but CRD {node}")
    elif origin is dict:
        if node.get("type") != "object" or node.get("additionalProperties", {}).get("type") != "string":
            out.append(f"{path}: dict[str, str] but CRD {node}")
    elif origin is typing.Literal:
        if node.get("type") != "string" or sorted(node.get("enum", [])) != sorted(typing.get_args(tp)):
            out.append(f"{path}: Literal{typing.get_args(tp)} but CRD enum {node.get('enum')}")
    elif origin in (typing.Union, types.UnionType):  # int | Literal[...] → int-or-string + pattern
        lits = [a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal]
        names = sorted(v for lit in lits for v in typing.get_args(lit))
        pattern = node.get("pattern", "")
        if not node.get("x-kubernetes-int-or-string") or sorted(re.findall(r"\w+", pattern)) != names:
            out.append(f"{path}: int | Literal{names} but CRD {node}")
    elif tp is str and _is_quantity(node):
        pass  # a str field with the QUANTITY pattern that takes whole numbers too (StageResources)
    else:
        want = {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp)
        if want is None or node.get("type") != want:
            out.append(f"{path}: {tp} but CRD type {node.get('type')}")


def _is_quantity(node: dict) -> bool:
    """A Kubernetes quantity: int-or-string, a non-negative number or the QUANTITY pattern."""
    return bool(node.get("x-kubernetes-int-or-string")) and node.get("pattern") == QUANTITY


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, at.Ge):
            out["minimum"] = m.ge
        elif isinstance(m, at.Gt):
            out["minimum"], out["exclusiveMinimum"] = m.gt, True
        elif isinstance(m, at.Le):
            out["maximum"] = m.le
        elif isinstance(m, at.Lt):
            out["maximum"], out["exclusiveMaximum"] = m.lt, True
        elif isinstance(m, at.MinLen):
            out["minLength"] = m.min_length
    return out


def compare_model(model: type[BaseModel], node: dict, path: str, out: list[str]) -> None:
    props = node.get("properties", {})
    fields = {f.alias or name: f for name, f in model.model_fields.items()}
    for missing in sorted(set(fields) - set(props)):
        out.append(f"{path}.{missing}: in {model.__name__} but not in the CRD")
    for extra in sorted(set(props) - set(fields)):
        out.append(f"{path}.{extra}: in the CRD but not in {model.__name__}")
    # A model that keeps unknown keys (a Kubernetes Volume) is an open object in the CRD, and only such.
    if (model.model_config.get("extra") == "allow") != bool(node.get("x-kubernetes-preserve-unknown-fields")):
        out.append(f"{path}: {model.__name__} extra={model.model_config.get('extra')} but CRD {node}")
    required = sorted(a for a, f in fields.items() if f.is_required())
    if required != sorted(node.get("required", [])):
        out.append(f"{path}: required {required} vs CRD {sorted(node.get('required', []))}")
    for alias, field in fields.items():
        if alias not in props:
            continue
        sub, where = props[alias], f"{path}.{alias}"
        tp, _ = _unwrap_optional(field.annotation)
        _compare_type(tp, sub, where, out)
        want = _bounds(field.metadata)
        if _is_quantity(sub):
            want["minimum"] = 0  # the CRD's bound on the whole-number form (the validator's)
        if typing.get_origin(tp) is list and "minLength" in want:
            want["minItems"] = want.pop("minLength")
        got = {k: sub[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
                                   "minItems") if k in sub}
        if want != got:
            out.append(f"{where}: bounds {want} vs CRD {got}")
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.to_dict()
            if default is None:
                if "default" in sub:
                    out.append(f"{where}: no model default but CRD default {sub['default']!r}")
            elif isinstance(default, dict):
                # An object default is `{}` in the CRD; its fields' own defaults fill it in.
                filled = copy.deepcopy(sub.get("default"))
                crdschema.apply_defaults(filled, sub)
                if filled != default:
                    out.append(f"{where}: default {default!r} vs CRD {filled!r}")
            elif sub.get("default") != default or type(sub.get("default")) is not type(default):
                out.append(f"{where}: default {default!r} vs CRD {sub.get('default')!r}")


@pytest.mark.parametrize("kind", KINDS)
def test_crd_mirrors_the_pydantic_model(kind: str) -> None:
    out: list[str] = []
    compare_model(KINDS[kind][1], crd_schema(kind)["properties"]["spec"], "spec", out)
    assert out == []


# -- generated examples through both validators -------------------------------------------

def _gen(node: dict, rng: random.Random, depth: int = 0) -> Any:
    if node.get("x-kubernetes-int-or-string") and node.get("pattern") == QUANTITY:
        return rng.choice([rng.randint(0, 8), "500m", "2", "16Gi", "1.5", "100M"])
    if node.get("x-kubernetes-int-or-string"):
        options = re.findall(r"\w+", node.get("pattern", "")) or ["x"]
        return rng.choice([rng.randint(-2, 8), rng.choice(options)])
    if "enum" in node:
        return rng.choice(node["enum"])
    kind = node.get("type")
    if kind == "object":
        if "additionalProperties" in node:
            return {f"k{i}": _gen(node["additionalProperties"], rng, depth + 1) for i in range(rng.randint(0, 2))}
        out = {}
        for key, sub in node.get("properties", {}).items():
            if key in node.get("required", []) or rng.random() < 0.5:
                out[key] = _gen(sub, rng, depth + 1)
        return out
    if kind == "array":
        n = rng.randint(node.get("minItems", 0), node.get("minItems", 0) + 2)
        items = [_gen(node["items"], rng, depth + 1) for _ in range(n)]
        if node.get("x-kubernetes-list-type") == "set":
            items = [f"s{i}" for i in range(n)]
        return items
    if kind in ("integer", "number"):
        lo = node.get("minimum", -5)
        hi = node.get("maximum", lo + 100)
        if kind == "integer":
            lo += 1 if node.get("exclusiveMinimum") else 0
            hi -= 1 if node.get("exclusiveMaximum") else 0
            return rng.randint(lo, hi)
        value = rng.uniform(lo, hi)
        return value if value > lo or not node.get("exclusiveMinimum") else hi
    if kind == "boolean":
        return rng.random() < 0.5
    if node.get("pattern") == QUANTITY:
        return rng.choice(["500m", "2", "16Gi", "1.5", "100M"])
    return "v" * rng.randint(max(1, node.get("minLength", 0)), 6)


def _fix_cross_field(kind: str, spec: dict) -> dict:
    """Satisfy the CEL rules, which jsonschema cannot evaluate here, and the name checks the
    CRD leaves to the operator (the strategy and scorer registries grow without a CRD change)."""
    if kind == "LifelongRun":
        if "strategy" in spec:
            spec["strategy"] = STRATEGIES[len(spec["strategy"]) % len(STRATEGIES)]
        if "scorers" in spec:
            spec["scorers"] = list(SCORERS[:len(spec["scorers"])])
        if "poolBudget" in spec:
            spec["poolBudget"] = max(spec["poolBudget"], spec["trainBudget"])
        c = spec.get("clustering")
        if c and "kMin" in c and "kMax" in c and c["kMax"] < c["kMin"]:
            c["kMin"], c["kMax"] = c["kMax"], c["kMin"]
        elif c and ("kMin" in c) != ("kMax" in c):
            c.pop("kMin", None), c.pop("kMax", None)
        x = spec.get("extract")
        if x:   # each refresh policy's parameter with it only; policies need the trained model and reuse
            if x.get("proxyModel") is not None or x.get("reuseFeatures") is False:
                x["refresh"] = "every-step"
            policy = x.get("refresh", "every-step")
            for name, field, value in (("every-n-steps", "refreshEvery", 2), ("fraction", "refreshFraction", 0.5)):
                if policy == name:
                    x.setdefault(field, value)
                else:
                    x.pop(field, None)
        repair = (spec.get("training") or {}).get("repair")
        if repair and spec.get("strategy") == "expansion":   # expansion has no repair pass
            repair["fraction"] = 0
        ewc = (spec.get("training") or {}).get("ewc")
        if ewc and spec.get("strategy") in ("ewc", "expansion", "multitask"):   # no training.ewc penalty there
            ewc["lambda"] = 0
        if repair and repair.get("placement") == "interleaved" and spec["training"].get("epochs", 3) < 2:
            repair["placement"] = "after"   # interleaving needs a second epoch
        for res in (spec.get("resources") or {}).values():
            _fix_pod_template(res)
    return spec


def _fix_pod_template(res: dict) -> None:
    """What the CRD leaves to the operator in a generated stage entry (the operator's names are
    refused, env names and volume names unique, each mount names a volume in effect for every
    stage) and the one-of rules jsonschema's generator does not follow (one value source, one
    volume source)."""
    for i, var in enumerate(res.get("env") or []):
        var["name"] = f"E{i}"
        if "value" in var:
            var.pop("valueFrom", None)
        elif "valueFrom" in var:
            ref = var["valueFrom"].get("secretKeyRef") or var["valueFrom"].get("configMapKeyRef")
            var["valueFrom"] = {"secretKeyRef": ref or {"name": "s", "key": "k"}}
    for src in res.get("envFrom") or []:
        ref = src.pop("secretRef", None) or src.pop("configMapRef", None) or {"name": "s"}
        src.pop("configMapRef", None)
        src["secretRef"] = ref
    if "volumes" in res or res.get("volumeMounts"):   # never empty: mounts name v0 in every stage
        res["volumes"] = [{"name": f"v{i}", "emptyDir": {}} for i in range(max(1, len(res.get("volumes") or [])))]
    for i, mount in enumerate(res.get("volumeMounts") or []):
        mount.update(name="v0", mountPath=f"/mnt/{i}")


def _invalid_mutations(node: dict, path: list[Any]) -> list[tuple[list[Any], Any]]:
    """(path, bad value) for every constrained scalar field reachable through objects."""
    out: list[tuple[list[Any], Any]] = []
    if node.get("type") == "object" and "properties" in node:
        out.append((path + ["unknownField"], 1))
        for key, sub in node["properties"].items():
            out += _invalid_mutations(sub, path + [key])
    elif "enum" in node:
        out.append((path, "not-a-choice"))
    elif node.get("type") in ("integer", "number"):
        if "minimum" in node:
            out.append((path, node["minimum"] - (0 if node.get("exclusiveMinimum") else 1)))
        if "maximum" in node:
            out.append((path, node["maximum"] + (0 if node.get("exclusiveMaximum") else 1)))
        out.append((path, "twelve"))
    elif _is_quantity(node):
        out.append((path, "16GB"))  # a unit Kubernetes does not know: the Job would be refused
        out.append((path, -1))
        out.append((path, 0.5))   # a YAML float: Kubernetes takes whole numbers or strings
    elif node.get("type") == "string" and node.get("minLength"):
        out.append((path, ""))
    elif node.get("type") == "array" and node.get("minItems"):
        out.append((path, []))
    return out


def _set_path(obj: dict, path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


@pytest.mark.parametrize("kind", KINDS)
def test_generated_examples_agree(kind: str) -> None:
    root = crd_schema(kind)
    spec_node = root["properties"]["spec"]
    rng = random.Random(1234)
    for _ in range(300):
        spec = _fix_cross_field(kind, _gen(spec_node, rng))
        assert crdschema.validation_errors(wrap(kind, spec), root) == [], spec
        assert pydantic_errors(kind, spec) == [], spec
    base = MIN_RUN if kind == "LifelongRun" else MIN_DS
    mutations = _invalid_mutations(spec_node, [])
    assert len(mutations) >= (60 if kind == "LifelongRun" else 6)
    for path, bad in mutations:
        spec = copy.deepcopy(base)
        _set_path(spec, path, bad)
        where = ".".join(["spec", *map(str, path)])
        schema_errors = crdschema.validation_errors(wrap(kind, spec), root)
        assert schema_errors, f"CRD accepted {where}={bad!r}"
        py = pydantic_errors(kind, spec)
        assert py, f"pydantic accepted {where}={bad!r}"
        field = where if path[-1] != "unknownField" else ".".join(["spec", *map(str, path[:-1])]).rstrip(".")
        assert any(e.split(":")[0] == field for e in schema_errors), (where, schema_errors)


def test_strategy_and_scorer_enums_are_the_registry_lists() -> None:
    """The CRD's enums are spec.STRATEGIES / spec.SCORERS (the registries' names, read by
    adaptinf.manifest); `STRATEGY@VARIANT` belongs to compare only, not to a run."""
    props = crd_schema("LifelongRun")["properties"]["spec"]["properties"]
    assert props["strategy"]["enum"] == list(STRATEGIES)
    assert not any("@" in name for name in props["strategy"]["enum"])
    assert props["scorers"]["items"]["enum"] == list(SCORERS)


@pytest.mark.parametrize("path", [("storage", "uri"), ("model", "base")])
def test_store_and_base_model_are_immutable(path: tuple[str, str]) -> None:
    """An update that changes storage.uri or model.base is refused with a message naming it
    (the emulator applies the same transition_errors on PUT/PATCH)."""
    schema = crd_schema("LifelongRun")
    old = wrap("LifelongRun", copy.deepcopy(MIN_RUN))
    new = copy.deepcopy(old)
    assert crdschema.transition_errors(new, old, schema) == []
    new["spec"][path[0]][path[1]] = "s3://other/elsewhere"
    errors = crdschema.transition_errors(new, old, schema)
    assert len(errors) == 1 and f"spec.{'.'.join(path)} is immutable" in errors[0], errors
