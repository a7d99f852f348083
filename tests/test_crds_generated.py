"""The committed CRDs are what tools/gen-crds.py generates from the spec models (adaptinf.crd_schema
and adaptinf.crd_extras), in crds/ and byte for byte in the Helm chart's copy."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from adaptinf import crd_extras, crd_schema
from adaptinf.spec import LifelongRunSpec
from adaptinf.spec_base import SpecModel

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "adaptinf"


def test_committed_crds_are_the_generated_ones():
    assert crd_schema.drift(REPO) == [], "run tools/gen-crds.py (the CRDs are generated from adaptinf.spec)"


def test_chart_crds_are_byte_identical_to_crds_folder():
    src = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    dst = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*"))}
    fix = "run tools/gen-crds.py (it writes crds/ and the chart's byte-identical copy)"
    assert sorted(dst) == sorted(src), f"chart CRD files {sorted(dst)} != crds/ {sorted(src)}: {fix}"
    for name in src:
        assert dst[name] == src[name], f"charts/adaptinf/crds/{name} drifted from crds/{name}: {fix}"


def test_the_check_mode_reports_drift_and_the_write_mode_fixes_it(tmp_path):
    for folder in crd_schema.CRD_DIRS:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "lifelongruns.yaml").write_text("# edited by hand\n", encoding="utf-8")
        (tmp_path / folder / "old.yaml").write_text("{}\n", encoding="utf-8")
    with pytest.raises(crd_schema.SchemaError, match="kopfpeerings.yaml: the source of a vendored CRD"):
        crd_schema.drift(tmp_path)
    vendored = "kopfpeerings.yaml"   # Kopf's CRD: crds/ is its source, the chart's copy follows
    (tmp_path / "crds" / vendored).write_text((REPO / "crds" / vendored).read_text(encoding="utf-8"), encoding="utf-8")
    drift = crd_schema.drift(tmp_path)
    assert f"charts/adaptinf/crds/{vendored}: missing" in drift
    assert "crds/lifelongruns.yaml: differs from the generated CRD" in drift
    assert "charts/adaptinf/crds/instructiondatasets.yaml: missing" in drift
    assert any(line.startswith("crds/old.yaml: not generated") for line in drift)
    crd_schema.write(tmp_path)
    assert crd_schema.drift(tmp_path) == []
    assert not (tmp_path / "crds" / "old.yaml").exists()
    assert (tmp_path / "charts/adaptinf/crds" / vendored).read_bytes() == (REPO / "crds" / vendored).read_bytes()


def test_the_script_checks_this_checkout():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "gen-crds.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


class _New(SpecModel):
    """A model as spec.py writes them: the generator needs nothing else for a new field."""
    count: int = Field(3, ge=1, lt=10, description="how many")
    mode: Literal["a", "b"] = "a"
    names: list[str] = Field(default_factory=lambda: ["x"], min_length=1)
    labels: dict[str, str] | None = None
    anything: dict[str, Any] = Field(default_factory=dict)
    where: str = Field(..., min_length=1, max_length=9, pattern=r"^/")


def test_a_new_field_needs_no_schema_by_hand():
    node = crd_schema.model_schema(_New)
    assert node["required"] == ["where"]
    props = node["properties"]
    assert props["count"] == {"type": "integer", "description": "how many", "default": 3, "minimum": 1,
                              "maximum": 10, "exclusiveMaximum": True}
    assert props["mode"] == {"type": "string", "enum": ["a", "b"], "default": "a"}
    assert props["names"] == {"type": "array", "default": ["x"], "minItems": 1, "items": {"type": "string"}}
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["anything"] == {"type": "object", "default": {}, "x-kubernetes-preserve-unknown-fields": True}
    assert props["where"] == {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^/"}


def test_a_field_without_a_crd_form_is_refused_by_name():
    class Bad(SpecModel):
        when: set[str] = Field(default_factory=set)
    with pytest.raises(crd_schema.SchemaError, match=r"spec.when: no CRD type for set\[str\]"):
        crd_schema.model_schema(Bad)


def test_an_extra_may_not_contradict_the_model(monkeypatch):
    monkeypatch.setitem(crd_extras.FIELD_EXTRAS, (LifelongRunSpec, "trainBudget"), {"minimum": 0})
    with pytest.raises(crd_schema.SchemaError, match=r"spec.trainBudget: the extra minimum=0 contradicts the model"):
        crd_schema.generated()


def test_an_extra_naming_no_field_is_refused(monkeypatch):
    monkeypatch.setitem(crd_extras.FIELD_EXTRAS, (LifelongRunSpec, "trainBugdet"), {"description": "typo"})
    with pytest.raises(crd_schema.SchemaError, match=r"names what no CRD contains: LifelongRunSpec.trainBugdet"):
        crd_schema.generated()


def test_selectable_fields_are_expressible():
    with_run = dataclasses.replace(crd_extras.CRDS["InstructionDataset"], selectable_fields=[".spec.run"])
    (version,) = yaml.safe_load(crd_schema.render(with_run))["spec"]["versions"]
    assert version["selectableFields"] == [{"jsonPath": ".spec.run"}]
