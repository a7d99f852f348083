"""The manifests shown in docs/install.md are valid: CRD schema (as the API server checks it) and
the pydantic models the operator validates with."""
from __future__ import annotations

import importlib.util
import re

import jsonschema
import pytest
import yaml

from chart_helpers import REPO

DOC = REPO / "docs" / "install.md"
CRDS = {"LifelongRun": REPO / "crds" / "lifelongruns.yaml",
        "InstructionDataset": REPO / "crds" / "instructiondatasets.yaml"}


def doc_objects() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [d for b in blocks for d in yaml.safe_load_all(b) if d]


def test_install_doc_shows_both_kinds():
    assert {d["kind"] for d in doc_objects()} == set(CRDS)


@pytest.mark.parametrize("obj", doc_objects(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_install_doc_manifests_are_valid(obj):
    # tests/k8s/schema.py (the CRD schema as JSON Schema), under a name of its own.
    spec = importlib.util.spec_from_file_location("adaptinf_k8s_crdschema", REPO / "tests" / "k8s" / "schema.py")
    crdschema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crdschema)
    from adaptinf.spec import InstructionDatasetSpec, LifelongRunSpec

    crd = crdschema.load_crd(CRDS[obj["kind"]])
    jsonschema.validate(obj, crdschema.to_json_schema(crdschema.version_schema(crd)))
    model = LifelongRunSpec if obj["kind"] == "LifelongRun" else InstructionDatasetSpec
    model.model_validate(obj["spec"])
    storage = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    assert obj["apiVersion"] == f"{crd['spec']['group']}/{storage}"
