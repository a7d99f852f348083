"""The strategy and scorer names spec.py accepts are the registries' (adaptinf.manifest reads them
from the modules' source: the operator validates specs without importing the registries, which
need torch and faiss)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from adaptinf import manifest
from adaptinf.spec import SCORERS, STRATEGIES, LifelongRunSpec

MIN = {"model": {"base": "m"}, "trainBudget": 1, "storage": {"uri": "s"}}


def test_names_match_the_registries():
    from adaptinf.scorers import available as scorers
    from adaptinf.selection import available as strategies
    assert sorted(STRATEGIES) == sorted(strategies()), "a registered strategy sets no literal `name`"
    assert sorted(SCORERS) == sorted(scorers()), "a registered scorer sets no literal `name`"
    assert STRATEGIES == tuple(sorted(STRATEGIES)) and SCORERS == tuple(sorted(SCORERS))


def test_reading_the_names_imports_nothing_heavy():
    code = ("import sys; from adaptinf.spec import STRATEGIES, SCORERS; import adaptinf.crd_schema; "
            "print(len(STRATEGIES), len(SCORERS), *[m for m in ('torch', 'numpy', 'faiss') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(STRATEGIES)), str(len(SCORERS))]
    assert {"lite-adapt-inf", "ewc", "expansion", "random"} <= set(STRATEGIES)


def test_a_strategy_module_declares_its_names_by_its_registered_classes(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent('''
        from adaptinf.selection.base import Strategy, register
        from adaptinf.selection import base

        class _Helper(Strategy):
            name = "not-registered"

        @register
        class Mine(_Helper):
            """doc"""
            name = "mine"

        @base.register
        class Other(Strategy):
            name: str = "other"
    '''), encoding="utf-8")
    assert manifest.module_names(path) == ["mine", "other"]


def test_a_registered_class_without_a_literal_name_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from x import register\nNAME = 'a'\n\n@register\nclass Bad:\n    name = NAME\n", encoding="utf-8")
    with pytest.raises(manifest.ManifestError, match=r"bad.py:5: class Bad is @register-ed but sets no literal"):
        manifest.module_names(path)


def test_the_registry_check_names_both_sides():
    with pytest.raises(manifest.ManifestError, match=r"not registered \['b'\], registered but not read \['c'\]"):
        manifest.check_registered({"a": "m", "b": "m"}, ["a", "c"], "strategy")
    manifest.check_registered({"a": "m"}, ["a"], "strategy")


def test_variants_keep_naming_a_registered_strategy():
    from adaptinf.runner import variants
    assert variants.split("lite-adapt-inf@paper") == ("lite-adapt-inf", "paper")
    assert variants.split("lite-adapt-inf@paper")[0] in STRATEGIES


def test_unknown_names_are_rejected_with_the_known_ones():
    with pytest.raises(ValidationError, match=r"unknown strategy 'adapt-infinity'; known: adapt-inf,"):
        LifelongRunSpec.model_validate({**MIN, "strategy": "adapt-infinity"})
    with pytest.raises(ValidationError, match=r"unknown scorer\(s\) loss; known: el2n"):
        LifelongRunSpec.model_validate({**MIN, "scorers": ["el2n", "loss"]})
    assert LifelongRunSpec.model_validate({**MIN, "strategy": "random"}).strategy == "random"
