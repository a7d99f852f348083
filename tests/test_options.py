"""The options beyond the default setting, end to end through `adaptinf compare` on the quick
*text* stream (a language-only causal LM): zero-order and proxy gradients as strategy variants
next to the EWC and model-expansion regimes, plus the small pieces they rest on."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adaptinf import layout
from adaptinf.model.loading import TEXT_LORA_TARGETS, lora_target_modules
from adaptinf.runner import variants
from adaptinf.runner.compare import CompareConfig
from adaptinf.spec import LoraSpec

STRATEGIES = ("lite-adapt-inf@zero-order", "lite-adapt-inf@proxy", "ewc", "lite-adapt-inf@ewc", "expansion",
              "image-grounding")


def test_variant_names_and_overrides(tmp_path):
    assert variants.split("lite-adapt-inf@proxy") == ("lite-adapt-inf", "proxy")
    assert variants.split("random") == ("random", None)
    with pytest.raises(ValueError, match="unknown variant"):
        variants.split("random@gpu")
    with pytest.raises(ValueError, match="no-such"):
        CompareConfig(out=tmp_path, strategies=("no-such@zero-order",))
    cfg = CompareConfig(out=tmp_path, strategies=STRATEGIES, modality="text")
    assert "image-grounding" not in cfg.strategies and cfg.notes and "image-grounding" in cfg.notes[0]
    assert "image-grounding" in CompareConfig(out=tmp_path, strategies=STRATEGIES).strategies


def test_default_lora_targets_fit_a_language_only_model():
    assert lora_target_modules(LoraSpec(), multimodal=True) == LoraSpec().target_modules
    assert lora_target_modules(LoraSpec(), multimodal=False) == TEXT_LORA_TARGETS
    mine = LoraSpec(target_modules=r".*q_proj")
    assert lora_target_modules(mine, multimodal=False) == mine.target_modules   # as written


STEPS = 3   # step 0 (shared) and two steps per run: enough for every check, and fast


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from adaptinf.runner.compare import compare
    out = tmp_path_factory.mktemp("options")
    compare(CompareConfig(out=out, strategies=STRATEGIES, seeds=(0,), quick=True, modality="text", jobs=2,
                          tracking=False, steps=STEPS), progress=False)
    return out


def _step(out, strategy: str, step: int, stage: str):
    return out / "runs" / strategy / "seed-0" / layout.stage_prefix("demo-text", step, stage)


def _marker(path) -> dict:
    return json.loads((path / "_COMMITTED.json").read_text())


def _shard(out, strategy: str, step: int):
    return _step(out, strategy, step, "extract") / "shard-00000-of-00001"



@pytest.mark.slow
def test_table_has_every_option_and_its_cost(compared):
    rows = {r["strategy"]: r for r in json.loads((compared / "table.json").read_text())}
    assert set(rows) == {"sequential", "lite-adapt-inf@zero-order", "lite-adapt-inf@proxy", "ewc", "lite-adapt-inf@ewc",
                         "expansion"}
    for name in ("lite-adapt-inf@zero-order", "lite-adapt-inf@proxy"):
        assert rows[name]["seconds"]["extract"] > 0 and rows[name]["trained_samples"] > 0
    md = (compared / "table.md").read_text()
    assert all(f"| {name} |" in md for name in rows) and "left out on the text stream" in md
    assert "image-grounding" in json.loads((compared / "meta.json").read_text())["notes"][0]


@pytest.mark.slow
def test_language_only_run_notes_the_skipped_scorer(compared):
    for step in range(1, STEPS):
        report = json.loads((_step(compared, "lite-adapt-inf@proxy", step, "cluster-select") / "selection.json")
                            .read_text())["report"]
        assert report["skipped_scorers"] == {"image-grounding": "the model has no vision tower"}
        assert all(c["scorer"] != "image-grounding" for c in report["clusters"])
    metrics = json.loads((_step(compared, "sequential", STEPS - 1, "eval") / "metrics.json").read_text())
    assert len(metrics["skills"]) == 7 and not metrics["skipped"]


@pytest.mark.slow
def test_zero_order_and_proxy_gradients(compared):
    proxy_dir = compared / "stream" / variants.PROXY_DIR
    assert json.loads((proxy_dir / "config.json").read_text())["hidden_size"] == 64
    for step in range(1, STEPS):
        zo, px = _marker(_shard(compared, "lite-adapt-inf@zero-order", step)), \
            _marker(_shard(compared, "lite-adapt-inf@proxy", step))
        assert zo["summary"]["gradient_source"] == "zero-order" and "proxy_model" not in zo["summary"]
        assert px["summary"]["proxy_model"] == str(proxy_dir)
        # The proxy is narrower: fewer LoRA weights in its middle layer than the trained model's.
        assert px["summary"]["grad_dim"] < zo["summary"]["grad_dim"]
        grads = np.load(_shard(compared, "lite-adapt-inf@zero-order", step) / "grads.npy")
        assert grads.shape[0] == zo["summary"]["samples"]
        assert np.allclose(np.linalg.norm(grads, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "lite-adapt-inf@ewc"])
def test_ewc_stores_and_uses_an_accumulated_fisher(compared, strategy):
    from adaptinf.training.ewc import FISHER_FILE, load_fisher
    # Step 0 was trained by the shared sequential run: its Fisher is estimated at step 1.
    assert not (_step(compared, strategy, 0, "train") / "adapter" / FISHER_FILE).exists()
    fishers = []
    for step in range(1, STEPS):
        summary = _marker(_step(compared, strategy, step, "train"))["summary"]
        assert summary["ewc"] == {"lambda": variants.EWC_LAMBDA, "fisher_upto_step": step - 1}
        fishers.append(load_fisher(_step(compared, strategy, step, "train") / "adapter" / FISHER_FILE))
    for earlier, later in zip(fishers, fishers[1:]):
        assert set(earlier) == set(later)
        # F_≤t = F_t + F_≤t−1, and F_t ≥ 0 is not nothing.
        growth = sum((later[k] - earlier[k]).sum().item() for k in later)
        assert growth > 0 and all((later[k] >= earlier[k]).all() for k in later)


@pytest.mark.slow
def test_ewc_variant_selects_like_its_strategy(compared):
    # `lite-adapt-inf@ewc` trains under the penalty on Lite's selection (a subset of the pool,
    # pruned), not on the new dataset in full as the `ewc` strategy does.
    for step in range(1, STEPS):
        report = json.loads((_step(compared, "lite-adapt-inf@ewc", step, "cluster-select") / "selection.json")
                            .read_text())["report"]
        assert report["strategy"] == "lite-adapt-inf"
        trained = _marker(_step(compared, "lite-adapt-inf@ewc", step, "train"))["summary"]["samples"]
        assert trained == report["selected"] == report["budget"] < report["pool_size"]
    assert (_step(compared, "lite-adapt-inf@ewc", 1, "prune") / "_COMMITTED.json").exists()


@pytest.mark.slow
def test_expansion_routes_every_eval_sample_to_one_adapter(compared):
    from adaptinf.evaluation.routing import ROUTING_KEY_FILE
    n_eval = 7 * 16   # quick text stream: 7 skills × 16 held-out samples
    for step in range(1, STEPS):   # step 0 is the shared sequential one
        metrics = json.loads((_step(compared, "expansion", step, "eval") / "metrics.json").read_text())
        routing = metrics["routing"]   # task → adapter → samples
        assert set(routing) == set(metrics["tasks"])
        assert {a for r in routing.values() for a in r} <= {f"step-{s}" for s in range(step + 1)}
        assert sum(n for r in routing.values() for n in r.values()) == n_eval
    for step in range(1, STEPS):
        assert (_step(compared, "expansion", step, "train") / "adapter" / ROUTING_KEY_FILE).exists()


def test_gradient_sources_bench_runs(capsys, demo_quick):
    """bench/gradient_sources.py at a toy size: one JSON line, every source timed, and the
    zero-order features' pairwise cosines following backprop's."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "bench" / "gradient_sources.py"
    spec = importlib.util.spec_from_file_location("bench_gradient_sources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--pool", "24", "--batch-size", "8", "--proj-dim", "512", "--threads", "1",
                          "--stream", str(demo_quick)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(result))
    for source in ("backprop", "zero_order", "proxy"):
        assert result[source]["wall_s"] > 0 and result[source]["grad_dim"] > 0
    assert result["proxy"]["grad_dim"] < result["backprop"]["grad_dim"] == result["zero_order"]["grad_dim"]
    assert result["zero_order"]["cosine_agreement_with_backprop"] > 0.3


def test_table3_and_paper_variants_set_the_spec():
    from adaptinf.spec import LifelongRunSpec, Resource
    spec = LifelongRunSpec.model_validate({"model": {"base": "m"}, "trainBudget": 10, "storage": {"uri": "s"}})
    run = Resource(kind="LifelongRun", name="r", spec=spec)
    hidden, strategy = variants.apply(run, "adapt-inf@hidden-clusters", ".")
    assert strategy == "adapt-inf" and hidden.spec.clustering.features == "hidden"
    assert run.spec.clustering.features == "gradients"                   # the original is untouched
    assert variants.apply(run, "adapt-inf@density-split", ".")[0].spec.selection.budget_split == "density"
    assert variants.apply(run, "adapt-inf@mastered-size", ".")[0].spec.selection.mastered_budget == "size"
    paper = variants.apply(run, "lite-adapt-inf@paper", ".")[0].spec
    assert (paper.clustering.k_rule, paper.clustering.nredo, paper.selection.ccs_bin_rule,
            paper.selection.diffuse, paper.selection.mastered, paper.prune.max_cluster_fraction,
            paper.prune.redundancy) == ("elbow", 1, "fixed", "none", "none", 1.0, "hidden")


def test_clustering_seed_offsets_only_the_selection_seed():
    """clustering.seed re-draws the clustering alone: the selection's seed is spec.seed +
    clustering.seed + step; 0 (the default) leaves every earlier run's selections as they were."""
    from types import SimpleNamespace

    from adaptinf.spec import LifelongRunSpec
    from stages.cluster_select import selection_context

    def spec(**clustering):
        return LifelongRunSpec.model_validate({"model": {"base": "m"}, "trainBudget": 4, "seed": 5,
                                               "storage": {"uri": "s"}, "clustering": clustering})
    default, offset = spec(), spec(seed=3)
    assert selection_context(SimpleNamespace(spec=default, step=2), ("perplexity",)).seed == 7
    assert selection_context(SimpleNamespace(spec=offset, step=2), ("perplexity",)).seed == 10
    assert offset.training.seed == default.training.seed and offset.seed == default.seed
    with pytest.raises(ValueError, match="seed"):
        spec(seed=-1)
