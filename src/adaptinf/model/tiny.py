"""Tiny LLaVA-style (and text-only) models built from a config, for the demo and the tests.

The result is a normal model directory (config, safetensors weights, tokenizer, image
processor) that `load_base` reads with `from_pretrained`, the same code path a user's
`llava-hf/...` model takes on a cluster.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..file_modes import share_folder
from .loading import llava_processor
from .tokenizer import IMAGE, build_char_tokenizer


def _text_config(vocab_size: int, hidden: int, layers: int, heads: int, special: dict):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=512, tie_word_embeddings=False, **special)


def build_tiny_model(out: str | Path, multimodal: bool = True, hidden: int = 128, layers: int | None = None,
                     vision_hidden: int = 64, vision_layers: int = 2, image_size: int = 32, patch: int = 8,
                     seed: int = 0) -> Path:
    """Write a randomly initialised tiny model directory and return its path.

    Defaults (hidden 128, 2 vision layers, 32×32 images, patch 8) give ~0.5M parameters that
    learn the demo skills in minutes on 2 CPU cores. LM layers default to 6 for a multimodal
    model, so the "middle" layer whose gradients and hidden states are the features is not the
    last one (with 2 layers it was, and its gradients grouped by answer string), and 2 for the
    text-only one.
    """
    if layers is None:
        layers = 6 if multimodal else 2
    from transformers import CLIPVisionConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration
    out = Path(out)
    tok = build_char_tokenizer()
    special = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    text_cfg = _text_config(len(tok), hidden, layers, max(1, hidden // 32), special)
    torch.manual_seed(seed)
    if multimodal:
        vision_cfg = CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                      num_hidden_layers=vision_layers, num_attention_heads=max(1, vision_hidden // 32),
                                      image_size=image_size, patch_size=patch, projection_dim=vision_hidden)
        cfg = LlavaConfig(vision_config=vision_cfg, text_config=text_cfg,
                          image_token_index=tok.convert_tokens_to_ids(IMAGE),
                          image_seq_length=(image_size // patch) ** 2,
                          vision_feature_select_strategy="default", vision_feature_layer=-1, **special)
        model = LlavaForConditionalGeneration(cfg)
    else:
        model = LlamaForCausalLM(text_cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out)
    if multimodal:  # a processor that AutoProcessor loads and that expands <image> itself
        llava_processor(cfg, tok, _image_processor(image_size)).save_pretrained(out)
    else:
        tok.save_pretrained(out)
    share_folder(out)
    return out


def _image_processor(image_size: int):
    # Pixels in [-1, 1]: with CLIP's default mean/std, black backgrounds left colour at chance.
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5
        from transformers import CLIPImageProcessor as Processor
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                     image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
