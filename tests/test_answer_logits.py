"""Logits at the answer positions only (`model/answer_logits.py`) and the hidden-states-only pass
that stops at its layer: the same numbers as a full forward, from less of the model.

A 3-layer tiny LLaVA (images and text) and a 4-layer tiny Llama (text only), each with a live
LoRA adapter (B ≠ 0); batches mix answer lengths so the kept positions are a union.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adaptinf.data.demo import write_demo_stream
from adaptinf.data.records import Record, read_records
from adaptinf.features.extract import ExtractConfig, _model_inputs, extract_features
from adaptinf.model.answer_logits import answer_loss, answer_positions, keeps_logits
from adaptinf.model.encoding import Encoder
from adaptinf.model.loading import ModelBundle, decoder_layers
from adaptinf.model.partial_forward import layer_output
from adaptinf.model.tiny import build_tiny_model
from adaptinf.scorers import token_stats
from adaptinf.training.loop import _batch_loss
from lora_bundles import live_lora_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["llava", "llama"])
def bundle(request, tmp_path_factory) -> ModelBundle:
    out = tmp_path_factory.mktemp(f"tiny-{request.param}")
    if request.param == "llava":
        path = build_tiny_model(out, hidden=64, layers=3, vision_hidden=32, vision_layers=1, image_size=16, patch=8)
    else:
        path = build_tiny_model(out, hidden=64, layers=4, multimodal=False)
    return live_lora_bundle(path, trainable=True)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    info = write_demo_stream(tmp_path_factory.mktemp("stream"), size="quick")
    recs: list[Record] = []
    for d in info["datasets"][:3]:
        got, report = read_records(d["path"], d["name"], image_root=info["root"])
        assert not report.rejected
        recs += got[:3]
    return recs


def _batch(bundle: ModelBundle, records: list[Record], text_only: bool) -> dict[str, torch.Tensor]:
    enc = Encoder(bundle, max_length=256)
    chosen = [r for r in records if r.image is None] if text_only or not bundle.multimodal else records
    batch = enc.collate([enc.encode(r) for r in chosen[:6]])
    return _model_inputs(batch, bundle.device, torch.float32) | {"labels": batch["labels"]}


def test_the_kept_positions_are_the_union_of_the_answers_and_fewer_than_all(bundle, records) -> None:
    batch = _batch(bundle, records, text_only=False)
    labels = batch["labels"]
    positions = answer_positions(labels)
    for row in labels:
        answer = (row[1:] != -100).nonzero().flatten()
        assert answer.numel() > 0 and set(answer.tolist()) <= set(positions.tolist())
    assert 0 < positions.numel() < labels.shape[1] - 1
    assert keeps_logits(bundle.model)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        kept = bundle.model(**inputs, logits_to_keep=positions).logits
    assert kept.shape[:2] == (labels.shape[0], positions.numel())


def test_kept_logits_give_the_full_forwards_token_stats(bundle, records) -> None:
    batch = _batch(bundle, records, text_only=False)
    labels = batch.pop("labels")
    positions = answer_positions(labels)
    with torch.no_grad():
        full = token_stats(bundle.model(**batch).logits, labels)
        kept = token_stats(bundle.model(**batch, logits_to_keep=positions).logits, labels, positions)
    assert torch.equal(full.sample, kept.sample)
    for name in ("nll", "el2n", "entropy"):
        torch.testing.assert_close(getattr(kept, name), getattr(full, name), rtol=1e-5, atol=1e-6)


def test_training_loss_and_its_gradients_equal_transformers_loss(bundle, records) -> None:
    batch = _batch(bundle, records, text_only=False)
    lora = [p for n, p in bundle.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)

    def loss_and_grads(keep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        bundle.model.zero_grad(set_to_none=True)
        loss = _batch_loss(bundle.model, dict(batch), keep)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in lora]

    full_loss, full_grads = loss_and_grads(False)
    kept_loss, kept_grads = loss_and_grads(True)
    torch.testing.assert_close(kept_loss, full_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(kept_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in full_grads)
    # answer_loss reads full logits the same way (the fallback of models without logits_to_keep).
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(bundle.model(**inputs).logits, batch["labels"], None), full_loss,
                                   rtol=1e-5, atol=1e-6)


def test_hidden_only_pass_stops_at_its_layer_with_the_full_forwards_states(bundle, records) -> None:
    batch = _batch(bundle, records, text_only=False)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    layers = decoder_layers(bundle.model)
    layer = len(layers) // 2
    assert layer < len(layers) - 1
    above, head = [], []
    handles = [layers[layer + 1].register_forward_hook(lambda *a: above.append(1)),
               bundle.model.get_output_embeddings().register_forward_hook(lambda *a: head.append(1))]
    try:
        with torch.no_grad():
            stopped = layer_output(bundle.model, layer, inputs)
        assert not above and not head, "the layers above and the LM head must not run"
        with torch.no_grad():
            full = bundle.model(**inputs, output_hidden_states=True).hidden_states[layer + 1]
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(stopped, full, rtol=0, atol=0)
    # And the hook is gone: the next forward runs to the end.
    with torch.no_grad():
        assert bundle.model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_prunes_hidden_states_equal_extracts(bundle, records) -> None:
    """prune's after-training pass (no gradients, no scores) against the full pass that scores."""
    enc = Encoder(bundle, max_length=256)
    layer = len(decoder_layers(bundle.model)) // 2
    hidden_only = extract_features(bundle, enc, records, ExtractConfig(layers=[layer], batch_size=4, grads=False,
                                                                       scorers=()), progress=False)
    scored = extract_features(bundle, enc, records, ExtractConfig(layers=[layer], batch_size=4, grads=False,
                                                                  scorers=("perplexity",)), progress=False)
    assert hidden_only.scores == {} and hidden_only.hidden is not None
    np.testing.assert_allclose(hidden_only.hidden, scored.hidden, rtol=1e-6, atol=1e-6)


def test_a_last_layer_hidden_state_takes_the_full_forward(tmp_path: Path, records) -> None:
    """transformers puts the final norm on the last layer's entry: no early stop there."""
    bundle = live_lora_bundle(build_tiny_model(tmp_path, hidden=64, layers=2, multimodal=False))
    batch = _batch(bundle, records, text_only=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        full = bundle.model(**inputs, output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(layer_output(bundle.model, 1, inputs), full, rtol=0, atol=0)


def test_keeps_logits_sees_through_ddp_and_peft_wrappers(bundle) -> None:
    class Wrapped(torch.nn.Module):          # what DDP / accelerate put around the peft model
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.module = inner

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    class Plain(torch.nn.Module):            # a model whose forward has no logits_to_keep
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    assert keeps_logits(bundle.model) and keeps_logits(Wrapped(bundle.model))
    assert not keeps_logits(Plain()) and not keeps_logits(Wrapped(Plain()))
