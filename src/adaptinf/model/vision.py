"""Image-text model families: how many tokens an image becomes, and which inputs its pixels give.

Supported (`model_type` in the model's config):

- `llava` (LLaVA-1.5): a fixed number of image tokens per image (`image_seq_length`), inputs
  `pixel_values`.
- `llava_next` (LLaVA-NeXT / LLaVA-1.6): the processor picks a tile grid for each image's size
  (anyres), so the number of tokens depends on the image; inputs `pixel_values` (padded to the
  batch's largest tile count) and `image_sizes`.
- `qwen2_vl`, `qwen2_5_vl` (Qwen2-VL, Qwen2.5-VL): the image is resized to a multiple of patch ×
  merge size within a pixel budget and every merged patch is one token, wrapped in
  `<|vision_start|>…<|vision_end|>`; inputs `pixel_values` (all images' patches, flattened),
  `image_grid_thw`, and `mm_token_type_ids` over the sequence (multimodal RoPE needs it).

The counts come from the family's own processor code, the same numbers its `__call__` expands
`<image>` to (tests check it for images of several sizes). Videos are not supported: a record
holds at most one image.
"""
from __future__ import annotations

from typing import Any

import torch

from ..spec_base import SpecError


class ImageFamily:
    """The LLaVA-1.5 way: every image is `n_fixed` image tokens and only `pixel_values`."""

    name = "llava"
    model_types: tuple[str, ...] = ("llava",)
    projector = "multi_modal_projector"      # trained in full beside the adapter (lora.modulesToSave)

    def __init__(self, config: Any, tokenizer: Any, image_processor: Any):
        self.config, self.tokenizer, self.image_processor = config, tokenizer, image_processor
        self.image_token_id = int(getattr(config, "image_token_index", None) or config.image_token_id)

    @property
    def fixed(self) -> bool:
        """Whether every image is the same number of tokens (then images are not opened to encode)."""
        return True

    @property
    def n_fixed(self) -> int:
        config = self.config
        seq = getattr(config, "image_seq_length", 0)
        if seq:
            return int(seq)
        vc = config.vision_config
        n = (vc.image_size // vc.patch_size) ** 2
        return n if getattr(config, "vision_feature_select_strategy", "default") == "default" else n + 1

    def n_tokens(self, width: int, height: int) -> int:
        return self.n_fixed

    def image_ids(self, width: int, height: int) -> list[int]:
        """The ids that stand for one image of this size in the sequence."""
        return [self.image_token_id] * self.n_tokens(width, height)

    def pixel_inputs(self, images: list[Any]) -> dict[str, torch.Tensor]:
        """The model inputs of these PIL images (in batch order)."""
        out = self.image_processor(images=images, return_tensors="pt")
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    def sequence_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-position inputs derived from the ids (none for LLaVA)."""
        return {}

    def processor(self) -> Any:
        """A processor that `AutoProcessor` loads back and that expands `<image>` itself."""
        from transformers import LlavaProcessor
        return LlavaProcessor(**self._llava_processor_kwargs())

    def _llava_processor_kwargs(self) -> dict[str, Any]:
        config = self.config
        # CLIP-style towers emit a CLS position; the "default" strategy drops it again.
        return dict(image_processor=self.image_processor, tokenizer=self.tokenizer,
                    patch_size=config.vision_config.patch_size,
                    vision_feature_select_strategy=getattr(config, "vision_feature_select_strategy", "default"),
                    num_additional_image_tokens=1,
                    image_token=self.tokenizer.convert_ids_to_tokens(self.image_token_id),
                    chat_template=getattr(self.tokenizer, "chat_template", None))


class LlavaNextFamily(ImageFamily):
    """LLaVA-NeXT: the number of tokens follows the image's size (anyres tiles, unpadded)."""

    name = "llava-next"
    model_types = ("llava_next",)

    def __init__(self, config: Any, tokenizer: Any, image_processor: Any):
        super().__init__(config, tokenizer, image_processor)
        self._processor = self.processor()

    @property
    def fixed(self) -> bool:
        return False

    def n_tokens(self, width: int, height: int) -> int:
        # The processor's own count (what vLLM uses too) for an image of this size.
        return int(self._processor._get_num_multimodal_tokens(image_sizes=[(height, width)]).num_image_tokens[0])

    def processor(self) -> Any:
        from transformers import LlavaNextProcessor
        return LlavaNextProcessor(**self._llava_processor_kwargs())


class QwenVLFamily(ImageFamily):
    """Qwen2-VL / Qwen2.5-VL: one token per merged patch of the resized image, wrapped in
    vision start/end tokens; multimodal RoPE reads which positions are image tokens."""

    name = "qwen2-vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    projector = "merger"

    @property
    def fixed(self) -> bool:
        return False

    def n_tokens(self, width: int, height: int) -> int:
        patches = self.image_processor.get_number_of_image_patches(height, width, {})
        return int(patches // self.image_processor.merge_size ** 2)

    def image_ids(self, width: int, height: int) -> list[int]:
        return [self.config.vision_start_token_id, *super().image_ids(width, height), self.config.vision_end_token_id]

    def sequence_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        # 1 at image tokens, 0 elsewhere (2 would be video): what the processor returns.
        return {"mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32)}

    def processor(self) -> Any:
        """Qwen2VLProcessor also needs a video processor, which needs torchvision: where that is
        missing only the tokenizer and the image processor are saved (all adaptinf uses)."""
        return None


FAMILIES: tuple[type[ImageFamily], ...] = (ImageFamily, LlavaNextFamily, QwenVLFamily)


def supported_model_types() -> list[str]:
    return [t for family in FAMILIES for t in family.model_types]


def family_class(config: Any, source: str) -> type[ImageFamily]:
    """The family of an image-text model's config; a clear error for any other (before any
    weight or processor is loaded)."""
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise SpecError(f"model {source!r}: image-text model type {model_type!r} is not supported; supported: "
                    f"{', '.join(supported_model_types())} (and any text-only causal LM); "
                    f"see docs/options.md#11-model-families")


def image_family(config: Any, tokenizer: Any, image_processor: Any, source: str) -> ImageFamily:
    return family_class(config, source)(config, tokenizer, image_processor)


def save_family_preprocessing(family: ImageFamily, out: Any) -> None:
    """The family's processor (with the tokenizer and its chat template), or the tokenizer and the
    image processor where the processor cannot be built here."""
    processor = family.processor()
    if processor is not None:
        processor.save_pretrained(out)
        return
    family.tokenizer.save_pretrained(out)
    family.image_processor.save_pretrained(out)
