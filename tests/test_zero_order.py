"""Zero-order gradient estimates (`extract.gradientSource: zero-order`) against backprop.

Known answers: the rerun of the top of the decoder gives the full forward's logits exactly;
each SPSA coefficient is the directional derivative u_k · ∇loss_i that backprop gives; the
perturbed weights are restored bit for bit. And what the estimates are for: pairwise cosines
of the projected estimates follow those of the backpropagated gradients (JL error ~ 1/√K).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptinf.data.demo import write_demo_stream
from adaptinf.data.records import Record, read_records
from adaptinf.features.extract import ExtractConfig, _model_inputs, extract_features, prepare_model
from adaptinf.features.upper import UpperStack
from adaptinf.features.zero_order import ZeroOrderGrads, answer_nll, rademacher_directions
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, attach_adapter, load_base
from adaptinf.model.tiny import build_tiny_model
from adaptinf.spec import LoraSpec

LAYER = 1   # the middle of three decoder layers: one below (skipped by the reruns), one above


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bundle(model_dir: Path) -> ModelBundle:
    bundle = attach_adapter(load_base(str(model_dir), "float32", torch.device("cpu")), LoraSpec(rank=4), None,
                            trainable=False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_B" in name:  # non-zero B, as after training (peft starts it at zero)
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return bundle


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory) -> ModelBundle:
    return _bundle(build_tiny_model(tmp_path_factory.mktemp("tiny-text"), multimodal=False, hidden=64, layers=3))


@pytest.fixture(scope="module")
def text_records(tmp_path_factory) -> list[Record]:
    """Two datasets' worth of text records (different skills, different lengths)."""
    info = write_demo_stream(tmp_path_factory.mktemp("text-stream"), size="quick", modality="text")
    out = []
    for ds in info["datasets"][:2]:
        recs, _ = read_records(ds["path"], ds["name"], image_root=info["root"])
        out += recs[:10]
    return out


def _batch(bundle: ModelBundle, records: list[Record]):
    enc = Encoder(bundle, 256)
    batch = enc.collate([enc.encode(r) for r in records])
    return _model_inputs(batch, bundle.device, torch.float32), batch["labels"]


def test_directions_are_seeded_signs():
    u = rademacher_directions(3, 8, 1000)
    assert u.shape == (8, 1000) and set(u.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(u, rademacher_directions(3, 8, 1000))
    assert not torch.equal(u, rademacher_directions(4, 8, 1000))
    assert abs(u.mean().item()) < 0.05


def test_upper_stack_reproduces_the_full_forward(text_bundle, text_records, demo_quick, tmp_path):
    inputs, _ = _batch(text_bundle, text_records[:6])
    upper = UpperStack(text_bundle.model, LAYER)
    assert upper.supported
    with torch.no_grad():
        with upper:
            full = text_bundle.model(**inputs, use_cache=False).logits
        assert torch.equal(upper.logits(), full)
    # LLaVA: the image merge and the vision tower are below the rerun, images included.
    mm = _bundle(build_tiny_model(tmp_path / "mm", hidden=64, layers=3, vision_hidden=32, vision_layers=1))
    recs, _ = read_records(str(demo_quick / "datasets" / "00-basics.jsonl"), "basics", image_root=str(demo_quick))
    inputs, _ = _batch(mm, [r for r in recs if r.image is not None][:4])
    upper = UpperStack(mm.model, LAYER)
    with torch.no_grad():
        with upper:
            full = mm.model(**inputs, use_cache=False).logits
        assert torch.equal(upper.logits(), full)


def test_coefficients_are_directional_derivatives(text_bundle, text_records):
    inputs, labels = _batch(text_bundle, text_records[:8])
    capture = prepare_model(text_bundle, ExtractConfig(layers=[LAYER], scorers=()))
    with capture:
        out = text_bundle.model(**inputs, use_cache=False)
        exact = capture.per_sample_grads(answer_nll(out.logits, labels).sum())          # (8, d)
    before = [p.detach().clone() for p in capture.parameters()]
    zo = ZeroOrderGrads(capture.parameters(), directions=8, seed=0)
    upper = UpperStack(text_bundle.model, LAYER)
    with torch.no_grad():
        with upper:
            text_bundle.model(**inputs, use_cache=False)
        coeffs = zo.coefficients(lambda: answer_nll(upper.logits(), labels))
    expected = exact.double() @ zo.u.double().T
    # Central differences in fp32 with ε = 1e-3: O(ε²) truncation plus rounding.
    assert (coeffs - expected).norm() / expected.norm() < 1e-2
    assert all(torch.equal(p, b) for p, b in zip(capture.parameters(), before))


def test_projected_estimates_keep_the_gradient_geometry(text_bundle, text_records):
    enc = Encoder(text_bundle, 256)
    cfg = dict(layers=[LAYER], projection_dim=512, batch_size=8, scorers=("perplexity",))
    bp = extract_features(text_bundle, enc, text_records, ExtractConfig(**cfg), progress=False)
    zo = extract_features(text_bundle, enc, text_records,
                          ExtractConfig(**cfg, gradient_source="zero-order", zo_directions=32), progress=False)
    assert zo.grads.shape == bp.grads.shape and zo.grad_dim == bp.grad_dim
    assert np.allclose(np.linalg.norm(zo.grads, axis=1), 1.0, atol=1e-5)
    # Scores and hidden states come from the same unperturbed forward in both modes.
    assert np.array_equal(zo.hidden, bp.hidden)
    np.testing.assert_allclose(zo.scores["perplexity"], bp.scores["perplexity"], rtol=1e-6)
    iu = np.triu_indices(len(text_records), 1)
    cos_bp, cos_zo = (bp.grads @ bp.grads.T)[iu], (zo.grads @ zo.grads.T)[iu]
    # K = 32 directions: JL error ~ 1/√32 ≈ 0.18 per pair; the pattern across pairs must hold.
    assert np.corrcoef(cos_bp, cos_zo)[0, 1] > 0.85
    assert np.abs(cos_bp - cos_zo).mean() < 0.18
    # Each single estimate is not its gradient's direction (cosine ≈ √(K/d)): the geometry is
    # what survives, which is what clustering uses.
    assert np.mean(np.sum(bp.grads * zo.grads, axis=1)) < 0.5
