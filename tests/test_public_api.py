"""`import adaptinf` is the public API: every exported name resolves, and importing the package
(and its spec models) does not pull in torch — the operator image has none."""
from __future__ import annotations

import subprocess
import sys


def test_every_exported_name_resolves():
    import adaptinf
    for name in adaptinf.__all__:
        assert getattr(adaptinf, name) is not None, name
    assert adaptinf.get_strategy("random").name == "random"
    assert adaptinf.register_strategy is adaptinf.get_strategy.__globals__["register"]
    assert set(adaptinf.STRATEGIES) >= {"adapt-inf", "lite-adapt-inf", "random"}


def test_unknown_name_is_an_attribute_error():
    import adaptinf
    try:
        adaptinf.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("no AttributeError")


def test_spec_models_come_without_torch():
    code = ("import sys, adaptinf; adaptinf.LifelongRunSpec; adaptinf.load_resources; adaptinf.open_store; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
