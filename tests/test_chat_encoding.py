"""Prompts through the tokenizer's chat template, answer-only labels at the exact boundary, the
built-in fallback, the first-line comparison rule and a processor that loads (issues 15, 18).

The tokenizer is the tiny demo one with a ChatML-like template set on it: every character is a
token, so each label position can be read back as text.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptinf.data.records import Record
from adaptinf.evaluation.generate import cut_at_stop
from adaptinf.metrics import exact_match, first_line
from adaptinf.model.encoding import IGNORE, Encoder, EncodingError
from adaptinf.model.loading import ModelBundle, load_base, save_preprocessing
from adaptinf.model.tiny import build_tiny_model

CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
# An answer turn followed by no special token: EOS is appended to the labels then.
PLAIN = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")
# Renders the first user turn differently once a reply follows: no stable boundary.
UNSTABLE = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}A:{% endif %}")

RECORD = Record("r1", (("human", "opposite of day?"), ("gpt", " night "), ("human", "and of up?"), ("gpt", "down")),
                dataset="d")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-text"), multimodal=False, hidden=32, layers=1)


def _bundle(path: Path, template: str | None) -> ModelBundle:
    bundle = load_base(str(path), "float32", torch.device("cpu"), weights=False)
    bundle.tokenizer.chat_template = template
    return bundle


def _labelled_text(enc, tok) -> list[str]:
    """The labelled spans, each decoded with its special tokens."""
    spans, cur = [], []
    for i, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            assert label == i  # labels are the input ids themselves, not shifted
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return [tok.decode(s, skip_special_tokens=False) for s in spans]


def _messages(rec: Record) -> list[dict[str, str]]:
    return [{"role": "user" if r == "human" else "assistant", "content": t.strip() if r == "gpt" else t}
            for r, t in rec.conversations]


def test_chat_template_ids_are_the_template_rendering_and_labels_only_the_answers(text_model):
    b = _bundle(text_model, CHATML)
    tok = b.tokenizer
    enc = Encoder(b, 512)
    assert enc.chat and enc.end_of_turn == tok.eos_token_id
    e = enc.encode(RECORD)
    full = tok.apply_chat_template(_messages(RECORD), tokenize=False)
    assert e.input_ids == tok(full, add_special_tokens=False)["input_ids"]
    # Each answer, stripped, up to and including the end-of-turn token; the newline the template
    # writes after it is context.
    assert _labelled_text(e, tok) == ["night</s>", "down</s>"]


def test_generation_prompt_ends_exactly_where_the_last_answer_label_starts(text_model):
    b = _bundle(text_model, CHATML)
    enc = Encoder(b, 512)
    full, prompt = enc.encode(RECORD), enc.encode(RECORD, include_answer=False)
    n = len(prompt.input_ids)
    assert full.input_ids[:n] == prompt.input_ids and full.labels[:n] == prompt.labels
    assert full.labels[n] != IGNORE and full.labels[n - 1] == IGNORE
    assert b.tokenizer.decode([l for l in full.labels[n:] if l != IGNORE]) == "down</s>"
    assert b.tokenizer.decode(prompt.input_ids).endswith("<|assistant|>\n")


def test_template_without_end_of_turn_token_gets_eos_appended(text_model):
    b = _bundle(text_model, PLAIN)
    enc = Encoder(b, 512)
    assert enc.end_of_turn is None and enc.stop_ids == [b.tokenizer.eos_token_id]
    e = enc.encode(Record("r", (("human", "q"), ("gpt", "a b")), dataset="d"))
    assert _labelled_text(e, b.tokenizer) == [" a b\n</s>"]


def test_template_that_rewrites_earlier_turns_is_refused(text_model):
    enc = Encoder(_bundle(text_model, UNSTABLE), 512)
    with pytest.raises(EncodingError, match="prefix-stable"):
        enc.encode(RECORD)


def test_builtin_format_without_template_or_when_forced(text_model):
    plain = Encoder(_bundle(text_model, None), 512)
    forced = Encoder(_bundle(text_model, CHATML), 512, chat_template=False)
    for enc in (plain, forced):
        e = enc.encode(RECORD)
        assert not enc.chat
        assert enc.tok.decode(e.input_ids, skip_special_tokens=True).startswith("USER: opposite of day? ASSISTANT:")
        assert _labelled_text(e, enc.tok) == [" night</s>", " down</s>"]
    with pytest.raises(EncodingError, match="no chat template"):
        Encoder(_bundle(text_model, None), 512, chat_template=True)


def test_truncation_keeps_answer_only_labels(text_model):
    whole = Encoder(_bundle(text_model, CHATML), 512).encode(RECORD)
    e = Encoder(_bundle(text_model, CHATML), 60).encode(RECORD)
    assert len(whole.input_ids) > 60 and e.input_ids == whole.input_ids[:60] and e.labels == whole.labels[:60]
    with pytest.raises(EncodingError, match="no answer token"):
        Encoder(_bundle(text_model, CHATML), 16).encode(Record("r", (("human", "x" * 40), ("gpt", "y")), dataset="d"))


@pytest.mark.parametrize("pred,ref,expected", [
    ("night\n\nWhat is the opposite of day?", "night", 1.0),   # what follows the first line is ignored
    ("\n  Night.\nmore", "night", 1.0),                        # first non-blank line
    ("The opposite of dark is light.", "light", 0.0),          # a sentence is not the answer
    ("a\nb", "a\nb", 1.0),                                     # a multi-line reference: whole text
    ("a", "a\nb", 0.0),
])
def test_exact_match_compares_the_first_line(pred, ref, expected):
    assert exact_match(pred, ref) == expected


def test_first_line_and_cut_at_stop():
    assert first_line("\n\n x \ny") == "x "
    assert first_line("") == ""
    assert cut_at_stop([5, 6, 2, 7, 2], [2, 9]) == [5, 6]
    assert cut_at_stop([5, 6], [2]) == [5, 6]
    assert cut_at_stop([9, 1], [2, 9]) == []


def test_saved_llava_base_loads_with_autoprocessor_and_expands_images(tmp_path):
    """Issue 18: AutoProcessor on a saved base failed at its first image (patch_size None)."""
    from PIL import Image
    from transformers import AutoProcessor, AutoTokenizer
    src = build_tiny_model(tmp_path / "tiny", multimodal=True, hidden=32, layers=1, vision_hidden=32,
                           vision_layers=1, image_size=16, patch=8)
    bundle = load_base(str(src), "float32", torch.device("cpu"))
    out = tmp_path / "saved"
    bundle.model.save_pretrained(out)
    save_preprocessing(bundle, out)
    for folder in (src, out):
        proc = AutoProcessor.from_pretrained(folder)
        batch = proc(images=[Image.new("RGB", (16, 16))], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt")
        assert int((batch["input_ids"] == bundle.image_token_id).sum()) == bundle.n_image_tokens
        assert AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids("<image>") == bundle.image_token_id
    assert load_base(str(out), "float32", torch.device("cpu"), weights=False).n_image_tokens == bundle.n_image_tokens
