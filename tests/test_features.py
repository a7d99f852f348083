"""Feature extraction: fused per-sample LoRA gradients, projection, hidden states, shards.

The yardstick is `features/reference.py`, the public code's way (batch size 1, every layer's
LoRA trainable, full backward). The tiny LLaVA here has three decoder layers, so the chosen
middle layer has one layer below it (where the fused backward must stop) and one above.
peft initialises LoRA B to zero, which makes every gradient w.r.t. A exactly zero; the fixture
sets B to random values so that both halves of the gradient are tested.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptinf.data.demo import write_demo_stream
from adaptinf.data.records import Record, read_records
from adaptinf.features.extract import (ExtractConfig, Features, _model_inputs, _per_sample_loss, extract_features,
                                       prepare_model)
from adaptinf.features.projection import RademacherProjector, l2_normalise, rademacher_block
from adaptinf.features.reference import reference_extract, reference_grads
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, decoder_layers
from adaptinf.model.tiny import build_tiny_model
from adaptinf.stages.extract import shard_range
from lora_bundles import live_lora_bundle

LAYER = 1           # the middle of three decoder layers
HIDDEN = 64
PROJ_DIM = 256      # below the gradient dimension (see `test_fixture_is_what_the_tests_claim`)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llava"), hidden=HIDDEN, layers=3, vision_hidden=32,
                            vision_layers=1, image_size=16, patch=8)


@pytest.fixture(scope="module")
def bundle(model_dir: Path) -> ModelBundle:
    return live_lora_bundle(model_dir)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    """Image (French colour) and text-only (arithmetic) records of different lengths."""
    info = write_demo_stream(tmp_path_factory.mktemp("stream"), size="quick")
    french = next(d for d in info["datasets"] if d["name"].endswith("french"))
    recs, report = read_records(french["path"], "french", image_root=info["root"])  # images/… under the root
    assert not report.rejected
    with_image = [r for r in recs if r.image is not None][:5]
    text_only = [r for r in recs if r.image is None][:2]
    return [with_image[0], text_only[0], *with_image[1:3], text_only[1], *with_image[3:]]


@pytest.fixture(scope="module")
def encoder(bundle: ModelBundle) -> Encoder:
    return Encoder(bundle, max_length=256)


def _cfg(**kw) -> ExtractConfig:
    return ExtractConfig(**{"layers": [LAYER], "projection_dim": PROJ_DIM, "batch_size": 4, **kw})


def test_fixture_is_what_the_tests_claim(bundle: ModelBundle, encoder: Encoder, records: list[Record]) -> None:
    lengths = [len(encoder.encode(r).input_ids) for r in records[:4]]
    assert len(set(lengths)) > 1, "the first batch must need padding"
    assert any(r.image is None for r in records[:4]) and any(r.image is not None for r in records[:4])
    assert len(decoder_layers(bundle.model)) == 3
    b = [p for n, p in bundle.model.named_parameters() if "lora_B" in n]
    assert b and all(p.abs().sum() > 0 for p in b)


def test_batched_raw_grads_equal_batch_size_one_loop(bundle: ModelBundle, encoder: Encoder,
                                                     records: list[Record]) -> None:
    """The math of grads.py alone: one padded batch, no projection, scale included."""
    capture = prepare_model(bundle, _cfg())
    batch = encoder.collate([encoder.encode(r) for r in records])
    assert (batch["attention_mask"] == 0).any()
    with torch.enable_grad(), capture:
        out = bundle.model(**_model_inputs(batch, bundle.device, torch.float32))
        fused = capture.per_sample_grads(_per_sample_loss(out.logits, batch["labels"]).sum()).numpy()
    ref = reference_grads(bundle, encoder, records, [LAYER])
    assert fused.shape == ref.shape == (len(records), capture.dim)
    scale = np.abs(ref).max()
    assert np.abs(fused - ref).max() <= 1e-5 * scale
    # Both halves are live: the A gradients are non-zero because B is.
    n_a = capture.caps[0].lora_a.weight.numel()
    assert np.abs(ref[:, :n_a]).max() > 1e-3 * scale
    # Backward stopping at the chosen layer changes nothing.
    frozen_rest = reference_grads(bundle, encoder, records[:2], [LAYER], all_layers_trainable=False)
    assert np.abs(frozen_rest - ref[:2]).max() <= 1e-5 * scale


@pytest.mark.parametrize("pad_to_multiple", [None, 16])
def test_fused_extraction_equals_reference_mode(bundle: ModelBundle, encoder: Encoder, records: list[Record],
                                                pad_to_multiple: int | None) -> None:
    """extract_features (batches of 4, padded, mixed image/text) vs the public code's loop;
    padding to a multiple of 16 (what a GPU does with 64) changes nothing either."""
    cfg = _cfg(pad_to_multiple=pad_to_multiple)
    fused = extract_features(bundle, encoder, records, cfg, progress=False)
    ref = reference_extract(bundle, encoder, records, cfg, project_interval=3)
    assert fused.grads.shape == ref.grads.shape == (len(records), PROJ_DIM)
    assert np.abs(fused.grads - ref.grads).max() < 1e-5
    np.testing.assert_allclose(fused.hidden, ref.hidden, rtol=1e-5, atol=1e-5)
    assert fused.scores.keys() == ref.scores.keys() == set(cfg.scorers)
    for name in cfg.scorers:
        np.testing.assert_allclose(fused.scores[name], ref.scores[name], rtol=1e-5, err_msg=name)
    # Image grounding is exactly 1 for text-only samples and a real ratio for the others.
    is_text = np.array([r.image is None for r in records])
    assert (fused.scores["image-grounding"][is_text] == 1.0).all()
    assert (fused.scores["image-grounding"][~is_text] != 1.0).all()


def test_projected_rows_are_unit_length(bundle: ModelBundle, encoder: Encoder, records: list[Record]) -> None:
    feats = extract_features(bundle, encoder, records[:3], _cfg(scorers=()), progress=False)
    np.testing.assert_allclose(np.linalg.norm(feats.grads, axis=1), 1.0, rtol=1e-6)
    assert feats.grads.dtype == np.float32
    # A zero row stays finite.
    out = l2_normalise(torch.zeros(2, 5))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_hidden_features_are_the_mean_pooled_middle_layer(bundle: ModelBundle, encoder: Encoder,
                                                          records: list[Record]) -> None:
    feats = extract_features(bundle, encoder, records, _cfg(grads=False, scorers=()), progress=False)
    assert feats.grads is None and feats.scores == {}
    assert feats.hidden.shape == (len(records), HIDDEN) and feats.hidden.dtype == np.float32
    # By hand for one padded sample: its own tokens only, output of decoder layer LAYER.
    batch = encoder.collate([encoder.encode(records[1])])
    with torch.no_grad():
        out = bundle.model(**_model_inputs(batch, bundle.device, torch.float32), output_hidden_states=True)
    expected = out.hidden_states[LAYER + 1][0].mean(0).numpy()
    np.testing.assert_allclose(feats.hidden[1], expected, rtol=1e-5, atol=1e-5)


def test_shards_concatenate_to_one_pass(bundle: ModelBundle, encoder: Encoder, records: list[Record]) -> None:
    """Two contiguous shards (as the extract stage cuts them) give the one-pass vectors; the
    batch boundaries differ (batch size 3: 3+1 | 3 vs 3+3+1), so padding differs too."""
    cfg = _cfg(batch_size=3)
    whole = extract_features(bundle, encoder, records, cfg, progress=False)
    parts = [extract_features(bundle, encoder, records[slice(*shard_range(len(records), i, 2))], cfg, progress=False)
             for i in range(2)]
    assert sum(len(p.grads) for p in parts) == len(records)
    np.testing.assert_allclose(np.concatenate([p.grads for p in parts]), whole.grads, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p.hidden for p in parts]), whole.hidden, rtol=1e-5, atol=1e-6)
    for name in cfg.scorers:
        np.testing.assert_allclose(np.concatenate([p.scores[name] for p in parts]), whole.scores[name], rtol=1e-6)


def test_bf16_model_gives_fp32_features_close_to_fp32(model_dir: Path, bundle: ModelBundle, encoder: Encoder,
                                                      records: list[Record]) -> None:
    """The mixed-precision path (GPU's default) also runs on CPU: bf16 weights and activations,
    fp32 per-sample grads, projection and pooling."""
    bf = live_lora_bundle(model_dir, "bfloat16")
    cfg = _cfg()
    low: Features = extract_features(bf, Encoder(bf, 256), records[:4], cfg, progress=False)
    full = extract_features(bundle, encoder, records[:4], cfg, progress=False)
    assert low.grads.dtype == low.hidden.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(low.grads, axis=1), 1.0, rtol=1e-6)
    cosine = (low.grads * full.grads).sum(1)
    assert cosine.min() > 0.95, cosine


# ---- the projection ------------------------------------------------------------------------

def _numpy_block(seed: int, row_start: int, n_rows: int, k: int) -> np.ndarray:
    """An independent implementation in uint64 numpy — the textbook splitmix64 finaliser with
    logical shifts, 64 signs per hash — that every device's torch kernels must reproduce."""
    def mix(z: np.ndarray) -> np.ndarray:
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    words = -(-k // 64)
    with np.errstate(over="ignore"):
        rows = np.arange(row_start, row_start + n_rows, dtype=np.uint64)[:, None]
        cols = np.arange(words, dtype=np.uint64)[None, :]
        h = mix(rows * np.uint64(words) + cols + mix(np.uint64(seed)))
    bits = (h[..., None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    bits = bits.reshape(n_rows, words * 64)[:, :k].astype(np.float64)
    return (bits * 2 - 1) / np.sqrt(k)


def test_rademacher_matrix_is_seeded_and_device_independent() -> None:
    d, k = 300, 64
    p = rademacher_block(7, 0, d, k, torch.device("cpu"))
    assert torch.equal(p, rademacher_block(7, 0, d, k, torch.device("cpu")))
    assert not torch.equal(p, rademacher_block(8, 0, d, k, torch.device("cpu")))
    # Bit-for-bit the integer hash, independent of torch's kernels and so of the device.
    np.testing.assert_array_equal(p.double().numpy(), _numpy_block(7, 0, d, k))
    odd = rademacher_block(7, 5, 20, 100, torch.device("cpu"))  # k not a multiple of 64, offset rows
    np.testing.assert_array_equal(np.sign(odd.numpy()), np.sign(_numpy_block(7, 5, 20, 100)))
    np.testing.assert_allclose(odd.double().numpy(), _numpy_block(7, 5, 20, 100), rtol=1e-7)  # fp32 1/√100
    # ±1/√k, balanced, and columns nearly orthogonal (what JL needs).
    assert set((p * k ** 0.5).unique().tolist()) == {-1.0, 1.0}
    assert abs(p.sign().mean().item()) < 0.05
    gram = (p.T @ p) * k / d
    off = gram - torch.diag(torch.diag(gram))
    assert off.abs().max() < 0.35 and torch.allclose(torch.diag(gram), torch.ones(k))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rademacher_matrix_same_on_cuda() -> None:
    cpu = rademacher_block(3, 100, 500, 128, torch.device("cpu"))
    cuda = rademacher_block(3, 100, 500, 128, torch.device("cuda")).cpu()
    assert torch.equal(cpu, cuda)


def test_row_blocks_are_slices_of_the_whole_matrix() -> None:
    whole = rademacher_block(5, 0, 1000, 32, torch.device("cpu"))
    for start, n in [(0, 1), (17, 100), (999, 1)]:
        assert torch.equal(rademacher_block(5, start, n, 32, torch.device("cpu")), whole[start:start + n])


def test_blockwise_projection_equals_dense_product() -> None:
    d, k = 1000, 48
    x = torch.randn(6, d, generator=torch.Generator().manual_seed(0))
    dense = x.double() @ rademacher_block(11, 0, d, k, torch.device("cpu"), torch.float64)
    cached = RademacherProjector(d, k, seed=11)
    blocked = RademacherProjector(d, k, seed=11, block_elems=7 * k, cache_elems=0)  # 143 blocks of 7 rows
    assert cached._cache is not None and blocked._cache is None
    for proj in (cached, blocked):
        out = proj(x)
        assert out.dtype == torch.float32 and out.shape == (6, k)
        np.testing.assert_allclose(out.double().numpy(), dense.numpy(), rtol=1e-5, atol=1e-5)
    # bf16 input is accumulated in fp32: the same as projecting its fp32 upcast.
    xb = x.bfloat16()
    assert torch.equal(blocked(xb), blocked(xb.float()))
    with pytest.raises(ValueError, match="expects dimension"):
        cached(torch.zeros(1, d + 1))


def test_gradients_are_projected_several_batches_at_once() -> None:
    """Buffered projection (flushes after 3 rows here) writes every row where it belongs."""
    from adaptinf.features.extract import _PendingProjection
    proj = RademacherProjector(40, 8, seed=2)
    x = torch.randn(7, 40, generator=torch.Generator().manual_seed(3))
    out = np.zeros((7, 8), np.float32)
    pending = _PendingProjection(proj, out, max_rows=3)
    order = [[6, 0], [3], [1, 5], [2, 4]]       # batches arrive sorted by length, not by index
    for idx in order:
        pending.add(idx, x[idx])
    assert len(pending.idx) < 3                 # earlier rows were already flushed
    pending.flush()
    np.testing.assert_allclose(out, l2_normalise(proj(x)).numpy(), rtol=1e-6, atol=1e-7)
    # A row cap from the byte budget: a huge gradient dimension projects batch by batch.
    assert _PendingProjection(RademacherProjector(1 << 20, 8, cache_elems=0), out, max_bytes=1 << 20).max_rows == 1
