"""The EWC regime's parts: the diagonal Fisher against a batch-size-1 loop, the penalty's value
and gradient, its effect through `train_model`'s penalty hook, and storage beside an adapter."""
from __future__ import annotations

import pytest
import torch

from adaptinf.data.demo import write_demo_stream
from adaptinf.data.records import read_records
from adaptinf.features.zero_order import answer_nll
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import attach_adapter, load_base
from adaptinf.model.tiny import build_tiny_model
from adaptinf.spec import LoraSpec
from adaptinf.training import TrainConfig, train_model
from adaptinf.training.ewc import EwcPenalty, accumulate, diagonal_fisher, load_fisher, save_fisher


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-text"), multimodal=False, hidden=64, layers=3)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    info = write_demo_stream(tmp_path_factory.mktemp("text-stream"), size="quick", modality="text")
    recs, _ = read_records(info["datasets"][0]["path"], "basics", image_root=info["root"])
    return recs[:12]


def _bundle(model_dir, trainable: bool):
    bundle = attach_adapter(load_base(str(model_dir), "float32", torch.device("cpu")), LoraSpec(rank=4), None,
                            trainable=trainable)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:  # non-zero B: the A half of the Fisher is tested too
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return bundle


def test_fisher_is_the_mean_squared_per_sample_gradient(model_dir, records):
    bundle = _bundle(model_dir, trainable=False)
    enc = Encoder(bundle, 256)
    fisher = diagonal_fisher(bundle, enc, records, batch_size=5)   # uneven last batch, padding
    lora = {n: p for n, p in bundle.model.named_parameters() if "lora_" in n}
    assert set(fisher) == set(lora) and len(lora) == 3 * 7 * 2   # every layer's A and B
    assert not any(p.requires_grad for p in lora.values())     # frozen again, as it was given
    for p in lora.values():
        p.requires_grad_(True)
    expected = {n: torch.zeros_like(p) for n, p in lora.items()}
    for rec in records:   # batch size 1, plain autograd
        batch = enc.collate([enc.encode(rec)])
        loss = answer_nll(bundle.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                          batch["labels"]).sum()
        for n, g in zip(lora, torch.autograd.grad(loss, list(lora.values())), strict=True):
            expected[n] += g ** 2 / len(records)
    for n in lora:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-9)


def test_penalty_value_and_gradient():
    model = torch.nn.Linear(3, 2)
    fisher = {"weight": torch.rand(2, 3), "bias": torch.rand(2)}
    penalty = EwcPenalty(model, fisher, lam=7.0)
    assert penalty().item() == 0.0                      # at the anchor
    shift = {"weight": torch.randn(2, 3), "bias": torch.randn(2)}
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(shift[n])
    value = penalty()
    expected = 0.5 * 7.0 * sum((fisher[n] * shift[n] ** 2).sum() for n in fisher)
    torch.testing.assert_close(value, expected)
    value.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 7.0 * fisher[n] * shift[n])
    with pytest.raises(ValueError, match="does not have"):
        EwcPenalty(model, {"nope": torch.ones(1)})


def test_penalty_hook_holds_the_weights_near_the_anchor(model_dir, records):
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, seed=0)

    def moved(lam: float | None) -> float:
        bundle = _bundle(model_dir, trainable=True)
        lora = {n: p for n, p in bundle.model.named_parameters() if "lora_" in n}
        anchor = {n: p.detach().clone() for n, p in lora.items()}
        penalty = EwcPenalty(bundle.model, {n: torch.ones_like(p) for n, p in lora.items()}, lam) if lam else None
        train_model(bundle, Encoder(bundle, 256), records, cfg, progress=False, penalty=penalty)
        params = dict(bundle.model.named_parameters())
        return sum(((params[n] - anchor[n]) ** 2).sum().item() for n in lora) ** 0.5

    free, held = moved(None), moved(1e4)
    assert free > 0.05 and held < 0.2 * free


def test_fisher_accumulates_and_round_trips(tmp_path):
    old = {"a": torch.ones(2), "b": torch.full((1,), 2.0)}
    new = {"a": torch.full((2,), 3.0), "c": torch.zeros(3)}
    total = accumulate(new, old)
    assert total["a"].tolist() == [4.0, 4.0] and total["b"].tolist() == [2.0] and total["c"].tolist() == [0.0] * 3
    assert accumulate(new, None) == new
    save_fisher(total, tmp_path / "f.safetensors")
    back = load_fisher(tmp_path / "f.safetensors")
    assert set(back) == set(total) and all(torch.equal(back[k], total[k]) for k in total)


# ---- training.ewc: the penalty under another strategy's selection ---------------------------

def _run(strategy: str, **ewc_fields) -> dict:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "r"},
            "spec": {"model": {"base": "m"}, "strategy": strategy, "trainBudget": 80, "storage": {"uri": "s"},
                     "training": {"ewc": ewc_fields}}}


def test_training_ewc_turns_continual_lora_into_the_ewc_regime():
    from adaptinf.spec import parse_resource
    from adaptinf.training.regimes import ewc as ewc_regime, regime_for_run
    off = parse_resource(_run("lite-adapt-inf")).spec
    assert off.to_dict()["training"]["ewc"] == {"lambda": 0.0, "fisherSamples": 1024}
    assert regime_for_run(off).name == "continue"
    on = parse_resource(_run("lite-adapt-inf", **{"lambda": 300.0, "fisherSamples": 32})).spec
    assert regime_for_run(on).name == "ewc" and ewc_regime.settings(on) == (300.0, 32)
    # The ewc strategy keeps its own options; training.ewc is off there.
    strategy = parse_resource({**_run("ewc"), "spec": {**_run("ewc")["spec"], "strategyOptions": {"lambda": 7.0}}}).spec
    assert regime_for_run(strategy).name == "ewc" and ewc_regime.settings(strategy) == (7.0, 1024)


@pytest.mark.parametrize("strategy, message", [
    ("ewc", "spec.training.ewc.lambda: the ewc strategy sets its penalty in strategyOptions.lambda"),
    ("expansion", "spec.training.ewc.lambda: the expansion strategy trains a new adapter per step"),
    ("multitask", "spec.training.ewc.lambda: multitask trains once on all the data"),
])
def test_training_ewc_is_refused_where_it_cannot_apply(strategy, message):
    from adaptinf.spec import SpecError, parse_resource
    with pytest.raises(SpecError) as err:
        parse_resource(_run(strategy, **{"lambda": 1.0}))
    assert message in str(err.value)


def test_ewc_variant_sets_the_strategys_default_lambda(demo_quick):
    from pydantic import ValidationError

    from adaptinf.runner import collect, variants
    run, _ = collect([demo_quick])
    varied, strategy = variants.apply(run, "lite-adapt-inf@ewc", "stream")
    assert strategy == "lite-adapt-inf" and varied.spec.training.ewc.lambda_ == variants.EWC_LAMBDA == 1e5
    assert run.spec.training.ewc.lambda_ == 0
    with pytest.raises(ValidationError, match="the expansion strategy trains a new adapter per step"):
        variants.validated(run, "expansion@ewc", "stream")
