"""`spec.strategyOptions`: one declaration per strategy (adaptinf.strategy_options), checked by
the spec as the operator reads it, in the CRD, reaching the strategies, EWC's training, MLflow
and the docs."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from adaptinf import strategy_options
from adaptinf.runner.local import _overridden
from adaptinf.selection import PoolFeatures, available, get_strategy
from adaptinf.spec import FULL_API_VERSION, STRATEGIES, LifelongRunSpec, Resource, SpecError, parse_resource
from adaptinf.store import LocalStore

REPO = Path(__file__).resolve().parent.parent
MIN = {"model": {"base": "m"}, "trainBudget": 40, "storage": {"uri": "s"}}


def spec(strategy: str, **options) -> LifelongRunSpec:
    return LifelongRunSpec.model_validate({**MIN, "strategy": strategy, "strategyOptions": options})


def error(strategy: str, options: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_resource({"apiVersion": FULL_API_VERSION, "kind": "LifelongRun", "metadata": {"name": "r"},
                        "spec": {**MIN, "strategy": strategy, "strategyOptions": options}})
    return str(err.value)


# ---- the spec ---------------------------------------------------------------------------

def test_valid_options_are_normalised_and_fill_the_defaults():
    s = spec("density", temperature=1, within="hard", k=None)
    assert s.strategy_options == {"temperature": 1.0, "within": "hard", "k": None}
    assert isinstance(s.strategy_options["temperature"], float)        # an int is a number
    assert s.effective_strategy_options() == {"k": None, "temperature": 1.0, "neighbours": 20, "within": "hard",
                                              "balance": 0.0}
    assert s.to_dict()["strategyOptions"] == {"temperature": 1.0, "within": "hard", "k": None}
    # PyYAML reads `1e5` as a string: a numeric string is the number, as elsewhere in the spec
    assert spec("ewc", **{"lambda": "1e3"}).strategy_options == {"lambda": 1000.0}
    assert spec("semdedup", k=4.0).strategy_options == {"k": 4}
    assert spec("random").strategy_options == {} and spec("random").effective_strategy_options() == {}
    assert LifelongRunSpec.model_validate(MIN).strategy_options == {}


@pytest.mark.parametrize(("strategy", "options", "message"), [
    ("density", {"temperatur": 0.2},
     "spec.strategyOptions.temperatur: strategy 'density' has no option 'temperatur' "
     "(its options: balance, k, neighbours, temperature, within)"),
    ("random", {"k": 3}, "spec.strategyOptions.k: strategy 'random' has no option 'k' (it takes none)"),
    ("lite-adapt-inf", {"fraction": 0.5}, "spec.strategyOptions.fraction: strategy 'lite-adapt-inf' has no option"),
    ("density", {"temperature": True}, "spec.strategyOptions.temperature: must be a number, got True"),
    ("density", {"neighbours": 2.5}, "spec.strategyOptions.neighbours: must be an integer, got 2.5"),
    ("density", {"neighbours": True}, "spec.strategyOptions.neighbours: must be an integer"),
    ("density", {"within": 3}, "spec.strategyOptions.within: must be a string, got 3"),
    ("density", {"within": "best"}, "spec.strategyOptions.within: must be one of dedup, hard, random, got 'best'"),
    ("density", {"temperature": 0}, "spec.strategyOptions.temperature: must be > 0, got 0"),
    ("replay", {"fraction": 1.5}, "spec.strategyOptions.fraction: must be <= 1, got 1.5"),
    ("replay", {"fraction": "half"}, "spec.strategyOptions.fraction: must be a number, got 'half'"),
    ("ewc", {"lambda": -1}, "spec.strategyOptions.lambda: must be >= 0, got -1"),
    ("ewc", {"lambda": [1]}, "spec.strategyOptions.lambda: must be a number, got [1]"),
    ("coincide", {"k": "many"}, "spec.strategyOptions.k: must be an integer or null, got 'many'"),
    ("semdedup", {"k": 0}, "spec.strategyOptions.k: must be >= 1, got 0"),
])
def test_invalid_options_name_the_option(strategy, options, message):
    assert message in error(strategy, options)


def test_an_unknown_strategy_is_reported_once():
    msg = error("densty", {"temperature": 0.2})
    assert "spec.strategy: " in msg and "strategyOptions" not in msg


def test_the_spec_module_stays_torch_free():
    import subprocess
    import sys
    code = ("import sys; from adaptinf.spec import LifelongRunSpec; "
            "LifelongRunSpec.model_validate({'model': {'base': 'm'}, 'trainBudget': 1, 'storage': {'uri': 's'}, "
            "'strategy': 'density', 'strategyOptions': {'temperature': 0.2}}); "
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---- one source ---------------------------------------------------------------------------

def test_registered_defaults_are_the_declared_ones():
    assert set(strategy_options.STRATEGY_OPTIONS) <= set(STRATEGIES)
    for name in available():
        assert get_strategy(name).defaults == strategy_options.defaults(name), name
    assert get_strategy("ewc").defaults == {"lambda": 1e5, "fisher_samples": 1024}


def test_ewc_module_defaults_come_from_the_declaration():
    from adaptinf.training import ewc
    assert ewc.DEFAULT_LAMBDA == strategy_options.defaults("ewc")["lambda"]
    assert ewc.DEFAULT_MAX_SAMPLES == strategy_options.defaults("ewc")["fisher_samples"]


def test_docs_table_lists_exactly_the_declared_options():
    text = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    section = text.split("## 8. Strategy options", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z-]+)` \| `(\w+)` \| ([^|]+) \|", section, re.M)
    documented = {(s, o): yaml.safe_load(d.strip()) for s, o, d in rows}
    declared = {(s, o): opt.default for s, opts in strategy_options.STRATEGY_OPTIONS.items() for o, opt in opts.items()}
    assert documented == declared


# ---- the CRD ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["crds/lifelongruns.yaml", "charts/adaptinf/crds/lifelongruns.yaml"])
def test_crd_declares_an_open_strategy_options_object(path):
    crd = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    node = props["strategyOptions"]
    assert node["type"] == "object" and node["default"] == {}
    assert node["x-kubernetes-preserve-unknown-fields"] is True   # the names depend on `strategy`
    assert "properties" not in node and node["description"]


# ---- reaching the strategies, training and MLflow ------------------------------------------

def _stage_ctx(s: LifelongRunSpec, step: int = 1) -> SimpleNamespace:
    return SimpleNamespace(spec=s, step=step)


def test_replay_fraction_reaches_the_strategy_through_the_stage_context():
    from adaptinf.stages.cluster_select import selection_context
    n_old, n_new = 200, 20
    is_new = np.arange(n_old + n_new) >= n_old
    feats = PoolFeatures(uids=[f"d/{i}" for i in range(len(is_new))], datasets=["d"] * len(is_new), is_new=is_new)
    sel_ctx = selection_context(_stage_ctx(spec("replay", fraction=0.5)), ())
    assert sel_ctx.options == {"fraction": 0.5}
    result = get_strategy("replay").select(feats, sel_ctx)
    assert result.report["replayed"] == 100 and len(result.indices) == 100 + n_new
    default = get_strategy("replay").select(feats, selection_context(_stage_ctx(spec("replay")), ()))
    assert default.report["replayed"] == 20                        # the paper's 10%


def test_density_temperature_reaches_the_selection_report():
    from adaptinf.stages.cluster_select import selection_context
    rng = np.random.default_rng(0)
    hidden = (np.repeat(np.eye(3, 8) * 10, 20, axis=0) + rng.normal(size=(60, 8))).astype(np.float32)
    feats = PoolFeatures(uids=[f"d/{i}" for i in range(60)], datasets=["d"] * 60, is_new=np.zeros(60, bool),
                         hidden=hidden)
    sel_ctx = selection_context(_stage_ctx(spec("density", temperature=0.2, k=3)), ())
    report = get_strategy("density").select(feats, sel_ctx).report
    assert report["options"] == {"k": 3, "temperature": 0.2, "neighbours": 20, "within": "dedup", "balance": 0.0}


def test_library_options_are_checked_like_the_spec():
    from adaptinf.selection import SelectionContext
    feats = PoolFeatures(uids=["d/0", "d/1"], datasets=["d", "d"], is_new=[False, True])
    with pytest.raises(ValueError, match=r"options\.fraction: must be <= 1, got 2"):
        get_strategy("replay").select(feats, SelectionContext(budget=1, seed=0, options={"fraction": 2}))


def test_ewc_options_reach_the_train_stage(monkeypatch):
    from adaptinf.training.regimes import ewc as ewc_regime, regime_for
    s = spec("ewc", **{"lambda": 250.0, "fisher_samples": 64})
    monkeypatch.setattr(ewc_regime, "latest_trained", lambda ctx, step: (0, Path("adapter")))
    monkeypatch.setattr(ewc_regime, "_fisher_upto", lambda ctx, bundle, step, adapter: {"w": "F"})
    monkeypatch.setattr(ewc_regime.ewc, "EwcPenalty", lambda model, fisher, lam: ("penalty", fisher, lam))
    regime = regime_for("ewc")                 # the hooks the train stage calls, in its order
    note = regime.before_train(_stage_ctx(s), SimpleNamespace(model=None))
    penalty = regime.loss_penalty()
    assert penalty == ("penalty", {"w": "F"}, 250.0)
    assert note == {"ewc": {"lambda": 250.0, "fisher_upto_step": 0}}
    assert ewc_regime._fisher_samples(_stage_ctx(s)) == 64
    assert ewc_regime._fisher_samples(_stage_ctx(spec("ewc"))) == 1024


class _FakeMlflow:
    def __init__(self):
        self.params: dict[str, str] = {}

    def get_experiment_by_name(self, name):
        return SimpleNamespace(experiment_id="1")

    def search_runs(self, *args, **kwargs):
        return []

    def create_run(self, *args, **kwargs):
        return SimpleNamespace(info=SimpleNamespace(run_id="parent"))

    def log_param(self, run_id, key, value):
        self.params[key] = value


def test_parent_run_params_hold_the_options_in_effect(tmp_path):
    from adaptinf.stages.cluster_select import run_params
    from adaptinf.tracking import Tracker
    tracker = Tracker("http://mlflow.invalid", "e", "r", LocalStore(tmp_path))
    tracker._client = fake = _FakeMlflow()
    assert tracker.parent_id(params=run_params(_stage_ctx(spec("density", temperature=0.2)))) == "parent"
    options = {k: v for k, v in fake.params.items() if k.startswith("strategyOptions.")}
    assert options == {"strategyOptions.k": "None", "strategyOptions.temperature": "0.2",
                       "strategyOptions.neighbours": "20", "strategyOptions.within": "dedup",
                       "strategyOptions.balance": "0.0"}
    assert fake.params["strategy"] == "density"


# ---- run-local / compare overrides ---------------------------------------------------------

def test_options_belong_to_the_specs_strategy(tmp_path):
    run = Resource(kind="LifelongRun", name="r", spec=spec("density", temperature=0.2))
    assert _overridden(run, tmp_path, None, None).strategy_options == {"temperature": 0.2}
    assert _overridden(run, tmp_path, "density", None).strategy_options == {"temperature": 0.2}
    other = _overridden(run, tmp_path, "coincide", None)        # compare's other strategies
    assert other.strategy == "coincide" and other.strategy_options == {}
