"""Tiny image-text (and text-only) models built from a config, for the demo and the tests.

The result is a normal model directory (config, safetensors weights, tokenizer, image
processor) that `load_base` reads with `from_pretrained`, the same code path a user's
`llava-hf/...` or `Qwen/Qwen2-VL-...` model takes on a cluster. `family` picks the image-text
architecture (`vision.py`): `llava` (LLaVA-1.5, the demo's default), `llava-next`, `qwen2-vl`
or `qwen2.5-vl`, each with the same offline character tokenizer and a Llama / Qwen2 decoder of
the same size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..file_modes import share_folder
from .families import TINY_FAMILIES
from .tokenizer import IMAGE, build_char_tokenizer
from .vision import image_family, save_family_preprocessing
# Qwen-VL's own special tokens (the image is <|vision_start|><|image_pad|>…<|vision_end|>).
QWEN_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _text_config(vocab_size: int, hidden: int, layers: int, heads: int, special: dict):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=512, tie_word_embeddings=False, **special)


def build_tiny_model(out: str | Path, multimodal: bool = True, hidden: int = 128, layers: int | None = None,
                     vision_hidden: int = 64, vision_layers: int = 2, image_size: int = 32, patch: int | None = None,
                     seed: int = 0, family: str = "llava") -> Path:
    """Write a randomly initialised tiny model directory and return its path.

    Defaults (hidden 128, 2 vision layers, 32×32 images, patch 8) give ~0.5M parameters that
    learn the demo skills in minutes on 2 CPU cores. LM layers default to 6 for a multimodal
    model, so the "middle" layer whose gradients and hidden states are the features is not the
    last one (with 2 layers it was, and its gradients grouped by answer string), and 2 for the
    text-only one.

    A 32×32 image (`image_size`) is 16 tokens for `llava`. `llava-next` tiles images up to 2×2
    tiles of `image_size` (36 tokens for 32×32, more for larger or oblong images); `qwen2-vl`
    and `qwen2.5-vl` use patch 4 (merged 2×2: 16 tokens + the start and end tokens for 32×32)
    and resize images within (2·image_size)² pixels, so the count follows each image's size.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}: one of {', '.join(TINY_FAMILIES)}")
    if layers is None:
        layers = 6 if multimodal else 2
    from transformers import LlamaForCausalLM
    out = Path(out)
    qwen = multimodal and family.startswith("qwen")
    tok = build_char_tokenizer(extra_specials=QWEN_SPECIALS if qwen else ())
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    if not multimodal:
        model = LlamaForCausalLM(_text_config(len(tok), hidden, layers, max(1, hidden // 32), special))
    elif qwen:
        cfg, image_processor = _qwen_config(family, tok, hidden, layers, vision_hidden, vision_layers, image_size,
                                            patch or 4, special)
    else:
        cfg, image_processor = _llava_config(family, tok, hidden, layers, vision_hidden, vision_layers, image_size,
                                             patch or 8, special)
    if multimodal:
        model = _model_class(cfg)(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out)
    if multimodal:  # a processor that AutoProcessor loads and that expands <image> itself, where one can be built
        save_family_preprocessing(image_family(cfg, tok, image_processor, str(out)), out)
    else:
        tok.save_pretrained(out)
    share_folder(out)
    return out


def _model_class(cfg: Any) -> type:
    """The family's model class, built directly (as the demo's tiny LLaVA always was: same seed,
    same weights)."""
    import transformers
    return getattr(transformers, {"llava": "LlavaForConditionalGeneration",
                                  "llava_next": "LlavaNextForConditionalGeneration",
                                  "qwen2_vl": "Qwen2VLForConditionalGeneration",
                                  "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}[cfg.model_type])


def _vision_heads(width: int) -> int:
    return max(1, width // 32)


def _llava_config(family: str, tok: Any, hidden: int, layers: int, vision_hidden: int, vision_layers: int,
                  image_size: int, patch: int, special: dict) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaNextConfig
    text_cfg = _text_config(len(tok), hidden, layers, max(1, hidden // 32), special)
    vision_cfg = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                  num_hidden_layers=vision_layers, num_attention_heads=_vision_heads(vision_hidden),
                                  image_size=image_size, patch_size=patch, projection_dim=vision_hidden)
    common = dict(vision_config=vision_cfg, text_config=text_cfg, image_token_index=tok.convert_tokens_to_ids(IMAGE),
                  vision_feature_select_strategy="default", vision_feature_layer=-1, **special)
    if family == "llava":
        cfg = LlavaConfig(image_seq_length=(image_size // patch) ** 2, **common)
        return cfg, _image_processor(image_size)
    # LLaVA-NeXT's anyres: the best of these grids (in pixels) for each image, plus a base view.
    pinpoints = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size],
                 [2 * image_size, 2 * image_size]]
    cfg = LlavaNextConfig(image_grid_pinpoints=pinpoints, **common)
    return cfg, _llava_next_image_processor(image_size, pinpoints)


def _qwen_config(family: str, tok: Any, hidden: int, layers: int, vision_hidden: int, vision_layers: int,
                 image_size: int, patch: int, special: dict) -> tuple[Any, Any]:
    from transformers import Qwen2VLImageProcessorPil
    heads = max(1, hidden // 32)
    half = hidden // heads // 2
    # Multimodal RoPE splits each head's rotary frequencies over time, height and width, in
    # Qwen2-VL's proportions (16, 24, 24 of 64).
    section = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    text_cfg = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                    num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                    rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
                    **special)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(
        ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id"), QWEN_SPECIALS)}
    merge = 2
    if family == "qwen2-vl":
        from transformers import Qwen2VLConfig
        vision_cfg = dict(depth=vision_layers, embed_dim=vision_hidden, hidden_size=hidden,
                          num_heads=_vision_heads(vision_hidden), mlp_ratio=2, patch_size=patch,
                          spatial_merge_size=merge, temporal_patch_size=2)
        cfg = Qwen2VLConfig(text_config=text_cfg, vision_config=vision_cfg, tie_word_embeddings=False, **ids)
    else:
        from transformers import Qwen2_5_VLConfig
        # Window attention over windows of 2×2 merged patches; the last block attends globally.
        vision_cfg = dict(depth=vision_layers, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                          num_heads=_vision_heads(vision_hidden), out_hidden_size=hidden, patch_size=patch,
                          spatial_merge_size=merge, temporal_patch_size=2, window_size=2 * patch * merge,
                          fullatt_block_indexes=[vision_layers - 1])
        cfg = Qwen2_5_VLConfig(text_config=text_cfg, vision_config=vision_cfg, tie_word_embeddings=False, **ids)
    factor = patch * merge
    processor = Qwen2VLImageProcessorPil(min_pixels=4 * factor ** 2, max_pixels=(2 * image_size) ** 2,
                                         patch_size=patch, merge_size=merge, temporal_patch_size=2,
                                         image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return cfg, processor


def _image_processor(image_size: int):
    # Pixels in [-1, 1]: with CLIP's default mean/std, black backgrounds left colour at chance.
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor as Processor
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                     image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def _llava_next_image_processor(image_size: int, pinpoints: list[list[int]]):
    # The PIL backend: the default one needs torchvision.
    from transformers import LlavaNextImageProcessorPil
    return LlavaNextImageProcessorPil(size={"shortest_edge": image_size},
                                      crop_size={"height": image_size, "width": image_size},
                                      image_grid_pinpoints=pinpoints, image_mean=[0.5, 0.5, 0.5],
                                      image_std=[0.5, 0.5, 0.5])
