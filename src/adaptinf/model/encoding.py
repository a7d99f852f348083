"""Turn records into model inputs with answer-only labels.

The conversation template is LLaVA-1.5's ("USER: <image>\\n{q} ASSISTANT: {a}</s>"): only gpt
turns are labelled, prompt and image positions are masked with -100. Each `<image>` becomes
exactly `n_image_tokens` image-token ids, as the model's merge step expects. "Without image"
(for image grounding) removes the placeholder and the pixels altogether, rather than zeroing
pixels as the reference code did: the text-only model then sees the same words and nothing else.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import torch

from ..data.records import GPT, IMAGE_TOKEN, Record
from ..store import read_uri
from .loading import ModelBundle

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image: str | None   # image URI when the input carries one


class EncodingError(ValueError):
    pass


class Encoder:
    def __init__(self, bundle: ModelBundle, max_length: int):
        self.b = bundle
        self.tok = bundle.tokenizer
        self.max_length = max_length

    def _text_ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _prompt_ids(self, text: str, with_image: bool) -> list[int]:
        if IMAGE_TOKEN not in text:
            return self._text_ids(text)
        before, _, after = text.partition(IMAGE_TOKEN)
        if not with_image:
            return self._text_ids(before + after.lstrip("\n"))
        image_ids = [self.b.image_token_id] * self.b.n_image_tokens
        return self._text_ids(before) + image_ids + self._text_ids(after)

    def encode(self, rec: Record, with_image: bool = True, include_answer: bool = True) -> Encoded:
        """Full sequence with labels; `include_answer=False` gives the generation prompt for the
        last answer (used by eval)."""
        use_image = with_image and rec.image is not None and self.b.multimodal
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
                prompt = self._prompt_ids(("USER: " if i == 0 else "\nUSER: ") + text + " ASSISTANT:", use_image)
                ids += prompt
                labels += [IGNORE] * len(prompt)
        if include_answer and len(ids) > self.max_length:
            if all(l == IGNORE for l in labels[:self.max_length]):
                raise EncodingError(f"{rec.uid}: prompt leaves no answer token within maxLength={self.max_length}")
            ids, labels = ids[:self.max_length], labels[:self.max_length]
        return Encoded(ids, labels, rec.image if use_image else None)

    def pixels(self, uris: list[str]) -> torch.Tensor:
        from PIL import Image
        images = [Image.open(io.BytesIO(read_uri(u))).convert("RGB") for u in uris]
        return self.b.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def collate(self, batch: list[Encoded], pad_left: bool = False) -> dict[str, torch.Tensor]:
        """Pad to the longest sequence; pixel_values only for the items that carry an image."""
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
            out["pixel_values"] = self.pixels(images)
        return out
