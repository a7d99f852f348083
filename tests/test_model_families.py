"""Image-text families whose processor decides the number of image tokens (LLaVA-NeXT, Qwen2-VL,
Qwen2.5-VL), on tiny random-init models built offline from a config: the token count per image
is the processor's, and extraction, training, generation and saving work with images of
different sizes in one batch.

The equality checks are those of tests/test_features.py (fused per-sample gradients vs the
public code's batch-size-1 loop), here with batches whose images differ in size, so that their
token counts, tile counts (LLaVA-NeXT) and patch grids (Qwen-VL) differ within a batch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptinf.data.records import Record
from adaptinf.evaluation.generate import generate_answers
from adaptinf.features.extract import ExtractConfig, _model_inputs, _per_sample_loss, extract_features, prepare_model
from adaptinf.features.reference import reference_extract, reference_grads
from adaptinf.model.encoding import Encoder, EncodingError
from adaptinf.model.loading import ModelBundle, load_base, save_preprocessing
from adaptinf.model.tiny import build_tiny_model
from adaptinf.spec import SpecError
from adaptinf.training import TrainConfig, train_model
from lora_bundles import live_lora_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILIES = ["llava-next", "qwen2-vl", "qwen2.5-vl"]
LAYER = 1                   # the middle of three decoder layers
IMAGE_SIZE = 16             # the tiny models' base image size
# (width, height): square, wide, tall, large (Qwen-VL scales it down to its pixel budget), tiny.
SIZES = [(16, 16), (40, 16), (8, 24), (64, 64), (12, 12)]


@pytest.fixture(scope="module", params=FAMILIES)
def model_dir(request, tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp(request.param), hidden=64, layers=3, vision_hidden=32,
                            vision_layers=1, image_size=IMAGE_SIZE, family=request.param)


@pytest.fixture(scope="module")
def bundle(model_dir: Path) -> ModelBundle:
    return live_lora_bundle(model_dir)


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    """Images of five sizes and colours, and two text-only records, interleaved."""
    root = tmp_path_factory.mktemp("images")
    recs = []
    for i, (w, h) in enumerate(SIZES):
        path = root / f"{i}.png"
        Image.new("RGB", (w, h), (50 * i, 120, 220 - 40 * i)).save(path)
        recs.append(Record(id=f"img{i}", dataset="d", image=str(path),
                           conversations=(("human", "<image>\nWhat colour is it?"), ("gpt", f"colour {i}"))))
    text = [Record(id=f"txt{i}", dataset="d", conversations=(("human", f"What is {i}+{i}?"), ("gpt", str(2 * i))))
            for i in range(2)]
    return [recs[0], text[0], recs[1], recs[2], text[1], recs[3], recs[4]]


@pytest.fixture(scope="module")
def encoder(bundle: ModelBundle) -> Encoder:
    return Encoder(bundle, max_length=512)


def _image_tokens(bundle: ModelBundle, ids) -> int:
    return int((torch.as_tensor(ids) == bundle.image_token_id).sum())


def test_image_token_count_is_the_processors_and_follows_the_image_size(bundle, encoder, records, model_dir):
    """The ids an image becomes: as many image tokens as the family's own processing makes of it."""
    from transformers import AutoProcessor
    with_image = [r for r in records if r.image is not None]
    counts = [_image_tokens(bundle, encoder.encode(r).input_ids) for r in with_image]
    assert len(set(counts)) >= 3, counts   # the point of these families
    assert bundle.n_image_tokens == 0 and not bundle.family.fixed
    for rec, count in zip(with_image, counts):
        image = Image.open(rec.image).convert("RGB")
        if bundle.family.name == "llava-next":
            # The processor saved beside the model expands <image> itself: the same count.
            proc = AutoProcessor.from_pretrained(model_dir)
            expanded = proc(images=[image], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt")
            assert _image_tokens(bundle, expanded["input_ids"]) == count
        else:
            grid = bundle.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
            assert int(grid.prod()) // bundle.image_processor.merge_size ** 2 == count
            ids = encoder.encode(rec).input_ids
            start = ids.index(bundle.image_token_id)
            assert ids[start - 1] == bundle.config.vision_start_token_id
            assert ids[start + count] == bundle.config.vision_end_token_id


def test_batch_carries_the_familys_image_inputs(bundle, encoder, records):
    batch = encoder.collate([encoder.encode(r) for r in records])
    n_images = sum(r.image is not None for r in records)
    if bundle.family.name == "llava-next":
        assert batch["image_sizes"].tolist() == [[h, w] for w, h in SIZES]
        assert batch["pixel_values"].shape[:2] == (n_images, 5)   # padded to the largest tile count (2×2 + base)
    else:
        assert batch["image_grid_thw"].shape == (n_images, 3)
        assert torch.equal(batch["mm_token_type_ids"].bool(), batch["input_ids"] == bundle.image_token_id)
    text = encoder.collate([encoder.encode(r) for r in records if r.image is None])
    assert "pixel_values" not in text and "image_sizes" not in text and "image_grid_thw" not in text


def test_batched_raw_grads_equal_batch_size_one_loop(bundle, encoder, records):
    """tests/test_features.py's check on this family: one padded batch of mixed image sizes."""
    capture = prepare_model(bundle, ExtractConfig(layers=[LAYER]))
    batch = encoder.collate([encoder.encode(r) for r in records])
    with torch.enable_grad(), capture:
        out = bundle.model(**_model_inputs(batch, bundle.device, torch.float32))
        fused = capture.per_sample_grads(_per_sample_loss(out.logits, batch["labels"]).sum()).numpy()
    ref = reference_grads(bundle, encoder, records, [LAYER])
    assert fused.shape == ref.shape == (len(records), capture.dim)
    scale = np.abs(ref).max()
    assert scale > 0 and np.abs(fused - ref).max() <= 1e-5 * scale
    n_a = capture.caps[0].lora_a.weight.numel()
    assert np.abs(ref[:, :n_a]).max() > 1e-3 * scale


@pytest.mark.parametrize("pad_to_multiple", [None, 16])
def test_fused_extraction_equals_reference_mode(bundle, encoder, records, pad_to_multiple):
    cfg = ExtractConfig(layers=[LAYER], projection_dim=128, batch_size=3, pad_to_multiple=pad_to_multiple)
    fused = extract_features(bundle, encoder, records, cfg, progress=False)
    ref = reference_extract(bundle, encoder, records, cfg, project_interval=3)
    assert fused.grads.shape == ref.grads.shape == (len(records), 128)
    assert np.abs(fused.grads - ref.grads).max() < 1e-5
    np.testing.assert_allclose(fused.hidden, ref.hidden, rtol=1e-5, atol=1e-5)
    for name in cfg.scorers:
        np.testing.assert_allclose(fused.scores[name], ref.scores[name], rtol=1e-5, err_msg=name)
    is_text = np.array([r.image is None for r in records])
    assert (fused.scores["image-grounding"][is_text] == 1.0).all()
    assert (fused.scores["image-grounding"][~is_text] != 1.0).all()


def test_zero_order_upper_stack_reproduces_the_full_forward(bundle, encoder, records):
    """Zero-order extraction re-runs the decoder from the chosen layer; with multimodal RoPE
    (Qwen-VL) the captured layer arguments must carry the 3-D positions."""
    from adaptinf.features.upper import UpperStack
    inputs = _model_inputs(encoder.collate([encoder.encode(r) for r in records]), bundle.device, torch.float32)
    upper = UpperStack(bundle.model, LAYER)
    assert upper.supported
    with torch.no_grad():
        with upper:
            full = bundle.model(**inputs, use_cache=False).logits
        torch.testing.assert_close(upper.logits(), full, rtol=1e-5, atol=1e-5)


def test_one_training_step_moves_the_adapter_and_the_familys_projector(model_dir, records):
    bundle = live_lora_bundle(model_dir, trainable=True)
    trained = {n: p.detach().clone() for n, p in bundle.model.named_parameters() if p.requires_grad}
    projector = bundle.family.projector
    assert any("lora_" in n for n in trained) and any(f"{projector}.modules_to_save" in n for n in trained)
    result = train_model(bundle, Encoder(bundle, 512), records, TrainConfig(epochs=1, batch_size=len(records)),
                         progress=False)
    assert result.optimizer_steps == 1 and np.isfinite(result.final_loss)
    after = dict(bundle.model.named_parameters())
    moved = {n for n, before in trained.items() if not torch.equal(before, after[n].detach())}
    assert any("lora_B" in n for n in moved) and any(f"{projector}.modules_to_save" in n for n in moved)


def test_batched_generation_equals_one_record_at_a_time(bundle, encoder, records):
    """Left padding, mixed image sizes and (Qwen-VL) 3-D positions change no answer."""
    batched = generate_answers(bundle, encoder, records, max_new_tokens=6, batch_size=4)
    single = generate_answers(bundle, encoder, records, max_new_tokens=6, batch_size=1)
    assert batched == single and len(batched) == len(records)
    assert any(batched)


def test_ewc_fisher_and_routing_states_take_the_family_inputs(bundle, encoder, records):
    """EWC's Fisher and expansion's routing batch through the same collate."""
    from adaptinf.evaluation.routing import prompt_states
    from adaptinf.training.ewc import diagonal_fisher
    fisher = diagonal_fisher(bundle, encoder, records, batch_size=4)
    lora = {n for n, _ in bundle.model.named_parameters() if "lora_" in n}
    assert set(fisher) == lora and all(torch.isfinite(v).all() for v in fisher.values())
    assert sum(float(v.sum()) for v in fisher.values()) > 0
    states = prompt_states(bundle, encoder, records, LAYER, batch_size=4)
    assert states.shape == (len(records), bundle.config.text_config.hidden_size) and np.isfinite(states).all()


def test_saved_base_reloads_as_the_same_family(model_dir, bundle, records, tmp_path):
    """What step 0's initial tuning stores: the weights and the preprocessing, loaded back."""
    base = load_base(str(model_dir), "float32", torch.device("cpu"))
    base.model.save_pretrained(tmp_path / "saved")
    save_preprocessing(base, tmp_path / "saved")
    again = load_base(str(tmp_path / "saved"), "float32", torch.device("cpu"))
    assert type(again.family) is type(base.family) and type(again.model) is type(base.model)
    enc, enc_again = Encoder(base, 512), Encoder(again, 512)
    assert [enc.encode(r).input_ids for r in records] == [enc_again.encode(r).input_ids for r in records]
    batch = enc.collate([enc.encode(r) for r in records[:3]])
    with torch.no_grad():
        torch.testing.assert_close(again.model(**_model_inputs(batch, again.device, torch.float32)).logits,
                                   base.model(**_model_inputs(batch, base.device, torch.float32)).logits)


def test_truncation_never_cuts_an_image(bundle, records):
    """An image in a later turn, after an answer: truncation inside its tokens refuses the record
    (the model needs all of them), and keeps it once the image is whole."""
    rec = next(r for r in records if r.image is not None)
    two_turns = Record(id="later-image", dataset="d", image=rec.image, conversations=(
        ("human", "Say hi."), ("gpt", "hi"), ("human", "<image>\nWhat colour is it?"), ("gpt", "red")))
    ids = Encoder(bundle, 512).encode(two_turns).input_ids
    first, last = ids.index(bundle.image_token_id), len(ids) - ids[::-1].index(bundle.image_token_id)
    with pytest.raises(EncodingError, match="later-image: the image's tokens do not fit within maxLength"):
        Encoder(bundle, max_length=first + 2).encode(two_turns)
    kept = Encoder(bundle, max_length=last + 1).encode(two_turns)
    assert _image_tokens(bundle, kept.input_ids) == last - first and len(kept.input_ids) == last + 1


def test_unsupported_image_text_family_is_refused_before_loading(tmp_path):
    from transformers import PaliGemmaConfig
    PaliGemmaConfig().save_pretrained(tmp_path)
    with pytest.raises(SpecError, match="image-text model type 'paligemma' is not supported; supported: llava, "
                                        "llava_next, qwen2_vl, qwen2_5_vl"):
        load_base(str(tmp_path), weights=False)


@pytest.mark.slow
def test_run_local_on_a_qwen2_vl_demo_stream(tmp_path):
    """`demo-data --family qwen2-vl` and two steps of `run-local` (initial full tuning, extract,
    selection, LoRA training, eval): the stored base and the adapter are Qwen2-VL's."""
    import json

    import yaml

    from adaptinf.cli import main
    demo, work = tmp_path / "demo", tmp_path / "work"
    assert main(["demo-data", "--out", str(demo), "--size", "quick", "--family", "qwen2-vl"]) == 0
    assert json.loads((demo / "model" / "config.json").read_text())["model_type"] == "qwen2_vl"
    assert main(["run-local", str(demo / "lifelongrun.yaml"), str(demo / "datasets" / "00-basics.yaml"),
                 str(demo / "datasets" / "01-spatial.yaml"), "--workdir", str(work), "--no-mlflow",
                 "--no-progress"]) == 0
    summary = json.loads((work / "demo" / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [0, 1] and not summary["failed_steps"]
    budget = yaml.safe_load((demo / "lifelongrun.yaml").read_text())["spec"]["trainBudget"]
    assert summary["steps"][1]["selected"] == budget and summary["final"]["avg_acc"] > 0
    base = load_base(str(work / "demo" / "base"), "float32", torch.device("cpu"), weights=False)
    assert base.family.name == "qwen2-vl"
    adapter = json.loads((Path(summary["final"]["adapter"]) / "adapter_config.json").read_text())
    assert adapter["modules_to_save"] == ["merger"]


def test_demo_data_refuses_an_image_text_family_for_a_text_stream(tmp_path, capsys):
    from adaptinf.cli import main
    assert main(["demo-data", "--out", str(tmp_path / "d"), "--modality", "text", "--family", "llava-next"]) == 2
    assert "--family llava-next is an image-text family: it needs --modality multimodal" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
