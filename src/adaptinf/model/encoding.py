"""Turn records into model inputs with answer-only labels.

Prompt format: the tokenizer's own chat template when it has one (`tokenizer.chat_template`, as
a real instruct model ships); otherwise LLaVA-1.5's "USER: <image>\\n{q} ASSISTANT: {a}</s>", the
format the tiny demo models are trained in. Only gpt turns are labelled, prompt and image
positions are masked with -100. With a chat template each turn is the text that rendering one
more message adds (so the generation prompt at eval time is exactly the training prefix), and an
answer's labels end with the template's end-of-turn token; what the template writes after it
(a newline) is context, not label. Each `<image>` becomes the ids the model's family gives an
image of that size (`vision.py`): LLaVA-1.5's fixed `n_image_tokens`, or as many as LLaVA-NeXT's /
Qwen-VL's processor makes of it (the image's header is read for its size, once per image), as
the model's merge step expects. "Without image"
(for image grounding) removes the placeholder and the pixels altogether, rather than zeroing
pixels as the reference code did: the text-only model then sees the same words and nothing else.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from ..data.records import GPT, HUMAN, IMAGE_TOKEN, Record
from ..store import read_uri
from .loading import ModelBundle

IGNORE = -100


def sequence_pad_values(pad_id: int) -> dict[str, int]:
    """The fill of each per-position input a batch may hold, for padding it further."""
    return {"input_ids": pad_id, "labels": IGNORE, "attention_mask": 0, "mm_token_type_ids": 0}


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image: str | None   # image URI when the input carries one


class EncodingError(ValueError):
    pass


ROLES = {HUMAN: "user", GPT: "assistant"}
_PROBE_ANSWER = "probe answer 7"
_PROBE = [{"role": "user", "content": "probe question"}, {"role": "assistant", "content": _PROBE_ANSWER}]


class Encoder:
    def __init__(self, bundle: ModelBundle, max_length: int, chat_template: bool | None = None):
        """`chat_template`: None uses the tokenizer's template when it has one; False forces the
        built-in format; True requires a template."""
        self.b = bundle
        self.tok = bundle.tokenizer
        self.max_length = max_length
        has = bool(getattr(self.tok, "chat_template", None))
        if chat_template and not has:
            raise EncodingError(f"{bundle.source}: the tokenizer has no chat template")
        self.chat = has if chat_template is None else chat_template
        self.end_of_turn = self._find_end_of_turn() if self.chat else self.tok.eos_token_id
        self._image_sizes: dict[str, tuple[int, int]] = {}

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a generated answer: the end-of-turn token and the EOS token(s)."""
        ids = [self.end_of_turn, self.tok.eos_token_id]
        gen = getattr(getattr(self.b.model, "generation_config", None), "eos_token_id", None)
        ids += gen if isinstance(gen, list) else [gen]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def _find_end_of_turn(self) -> int | None:
        """The first special token the template writes after an answer ("<|im_end|>",
        "<end_of_turn>", "<|eot_id|>"); None if it writes none (EOS is appended then)."""
        prefix = self._render(_PROBE[:1], True)
        full = self._render(_PROBE, False)
        delta = full[len(prefix):] if full.startswith(prefix) else ""
        tail = delta[delta.find(_PROBE_ANSWER) + len(_PROBE_ANSWER):] if _PROBE_ANSWER in delta else ""
        special = set(self.tok.all_special_ids) | {
            i for i, t in getattr(self.tok, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
        return next((i for i in self._text_ids(tail) if i in special), None)

    def _chat_segments(self, rec: Record, include_answer: bool) -> list[tuple[str, bool]]:
        """(text, is_answer) per turn: what rendering that message adds to the rendering before
        it. Raises if the template renders an earlier turn differently once a later one
        follows: the prompt/answer boundary would then not be a boundary."""
        messages = [{"role": ROLES[role], "content": text.strip() if role == GPT else text}
                    for role, text in rec.conversations]
        last = len(messages) - 1
        segments: list[tuple[str, bool]] = []
        for i, msg in enumerate(messages):
            answer = msg["role"] == "assistant"
            if answer and i == last and not include_answer:
                break
            before = self._render(messages[:i], generation_prompt=answer)
            # A user turn ends with the generation prompt when an answer follows (or is asked for).
            after = self._render(messages[:i + 1], generation_prompt=not answer and (i < last or not include_answer))
            if not after.startswith(before):
                raise EncodingError(f"{rec.uid}: the chat template renders turn {i} differently once turn {i + 1} "
                                    f"follows; answer-only labels need a prefix-stable template")
            segments.append((after[len(before):], answer))
        return segments

    def _answer_ids(self, text: str) -> tuple[list[int], list[int]]:
        """An answer segment's ids and labels: labelled through the end-of-turn token."""
        ids = self._text_ids(text)
        if self.end_of_turn is None:
            ids.append(self.tok.eos_token_id)
            return ids, list(ids)
        if self.end_of_turn not in ids:
            raise EncodingError(f"chat template answer {text!r} has no end-of-turn token")
        cut = ids.index(self.end_of_turn) + 1
        return ids, ids[:cut] + [IGNORE] * (len(ids) - cut)

    def _text_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, text: str, image: str | None) -> list[int]:
        """A prompt's ids; `<image>` becomes `image`'s ids, or is removed when `image` is None."""
        if IMAGE_TOKEN not in text:
            return self._text_ids(text)
        before, _, after = text.partition(IMAGE_TOKEN)
        if image is None:
            return self._text_ids(before + after.lstrip("\n"))
        return self._text_ids(before) + self._image_ids(image) + self._text_ids(after)

    def _image_ids(self, uri: str) -> list[int]:
        family = self.b.family
        if family is None:  # a bundle built by hand, LLaVA-1.5-style
            return [self.b.image_token_id] * self.b.n_image_tokens
        return family.image_ids(*(self._image_size(uri) if not family.fixed else (0, 0)))

    def _image_size(self, uri: str) -> tuple[int, int]:
        """(width, height) of the image (PIL reads only the header), kept per URI."""
        if uri not in self._image_sizes:
            from PIL import Image
            with Image.open(io.BytesIO(read_uri(uri))) as im:
                self._image_sizes[uri] = im.size
        return self._image_sizes[uri]

    def encode(self, rec: Record, with_image: bool = True, include_answer: bool = True) -> Encoded:
        """Full sequence with labels; `include_answer=False` gives the generation prompt for the
        last answer (used by eval)."""
        use_image = with_image and rec.image is not None and self.b.multimodal
        image = rec.image if use_image else None
        if self.chat:
            ids, labels = [], []
            for text, answer in self._chat_segments(rec, include_answer):
                seg, seg_labels = self._answer_ids(text) if answer else (self._prompt_ids(text, image), None)
                ids += seg
                labels += seg_labels if seg_labels is not None else [IGNORE] * len(seg)
            return self._truncate(rec, ids, labels, include_answer, use_image)
        ids: list[int] = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        labels: list[int] = [IGNORE] * len(ids)
        last = len(rec.conversations) - 1
        for i, (role, text) in enumerate(rec.conversations):
            if role == GPT:
                if i == last and not include_answer:
                    break
                ans = self._text_ids(" " + text.strip()) + [self.tok.eos_token_id]
                ids += ans
                labels += ans
            else:
                prompt = self._prompt_ids(("USER: " if i == 0 else "\nUSER: ") + text + " ASSISTANT:", image)
                ids += prompt
                labels += [IGNORE] * len(prompt)
        return self._truncate(rec, ids, labels, include_answer, use_image)

    def _truncate(self, rec: Record, ids: list[int], labels: list[int], include_answer: bool,
                  use_image: bool) -> Encoded:
        if include_answer and len(ids) > self.max_length:
            if all(l == IGNORE for l in labels[:self.max_length]):
                raise EncodingError(f"{rec.uid}: prompt leaves no answer token within maxLength={self.max_length}")
            if use_image and self.b.image_token_id in ids[self.max_length:]:
                # Part of an image would be cut off: the model needs all of its tokens.
                raise EncodingError(f"{rec.uid}: the image's tokens do not fit within maxLength={self.max_length} "
                                    f"({len(ids)} tokens with the image)")
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        return Encoded(ids, labels, rec.image if use_image else None)

    def image_inputs(self, uris: list[str]) -> dict[str, torch.Tensor]:
        """The image processor's model inputs for these images: `pixel_values`, and what the
        family needs beside it (`image_sizes`, `image_grid_thw`)."""
        from PIL import Image
        images = [Image.open(io.BytesIO(read_uri(u))).convert("RGB") for u in uris]
        if self.b.family is None:
            return {"pixel_values": self.b.image_processor(images=images, return_tensors="pt")["pixel_values"]}
        return self.b.family.pixel_inputs(images)

    def collate(self, batch: list[Encoded], pad_left: bool = False) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence; image inputs only for the items that carry an image."""
        width = max(len(e.input_ids) for e in batch)
        pad = self.tok.pad_token_id
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):
            n = len(e.input_ids)
            sl = slice(width - n, width) if pad_left else slice(0, n)
            ids[i, sl] = torch.tensor(e.input_ids)
            labels[i, sl] = torch.tensor(e.labels)
            mask[i, sl] = 1
        out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        images = [e.image for e in batch if e.image is not None]
        if images:
            out.update(self.image_inputs(images))
        if self.b.family is not None:
            out.update(self.b.family.sequence_inputs(ids))
        return out
