"""The training-regime registry: every strategy trains with a registered regime, chosen by name,
and the default regime's hooks leave training as plain continual LoRA."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptinf.selection import Strategy, available
from adaptinf.selection import base as selection_base
from adaptinf.training.regimes import Regime, available_regimes, get_regime, regime_for, register_regime


def test_every_strategy_trains_with_a_registered_regime():
    chosen = {name: regime_for(name).name for name in available()}
    assert set(chosen.values()) <= set(available_regimes())
    assert chosen["ewc"] == "ewc" and chosen["expansion"] == "expansion"
    assert {chosen[s] for s in ("sequential", "replay", "multitask", "lite-adapt-inf", "random")} == {"continue"}


def test_each_lookup_is_a_fresh_instance():
    # before_train may keep state (ewc's penalty) for one stage run only
    assert regime_for("ewc") is not regime_for("ewc")


def test_the_default_hooks_add_nothing(tmp_path: Path):
    regime = get_regime("continue")
    ctx, bundle = SimpleNamespace(step=1), SimpleNamespace(model=None)
    assert regime.before_train(ctx, bundle) == {}
    assert regime.loss_penalty() is None
    assert regime.after_train(ctx, bundle, [], tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


def test_a_strategy_naming_an_unknown_regime_is_a_clear_error(monkeypatch):
    class Odd(Strategy):
        name = "odd"
        training_regime = "no-such-regime"
    monkeypatch.setitem(selection_base._REGISTRY, "odd", Odd)
    with pytest.raises(ValueError, match=r"strategy 'odd' trains with regime 'no-such-regime', which is not "
                                         r"registered; known: continue, ewc, expansion"):
        regime_for("odd")
    with pytest.raises(ValueError, match="unknown training regime 'no-such-regime'"):
        get_regime("no-such-regime")


def test_a_regime_name_is_registered_once():
    class Other(Regime):
        name = "ewc"
    with pytest.raises(ValueError, match="registered twice"):
        register_regime(Other)

    class Nameless(Regime):
        pass
    with pytest.raises(TypeError, match="has no name"):
        register_regime(Nameless)
