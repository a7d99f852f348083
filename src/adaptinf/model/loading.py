"""Load a base model (local path, s3:// URI or hub id) and its adapter.

Supported families: the image-text families of `vision.py` (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL /
Qwen2.5-VL) and any causal LM (Llama, SmolLM2, Qwen2, Gemma, ...: `AutoModelForCausalLM`); all
load through `from_pretrained`, and the tiny demo models and the prepared SmolLM2
(`adaptinf models prepare`) take the very same path.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..spec import DEFAULT_LORA_TARGETS, LoraSpec, SpecError
from ..store import open_store
from .hub import HUB, hub_kwargs
from .vision import ImageFamily, family_class, save_family_preprocessing

log = logging.getLogger(__name__)


@dataclass
class ModelBundle:
    model: Any                     # the HF model (a PeftModel once an adapter is attached)
    tokenizer: Any
    image_processor: Any | None    # None for language-only models
    image_token_id: int | None
    n_image_tokens: int            # per image for a fixed-count family (LLaVA-1.5), else 0
    source: str
    config: Any = None             # the model's config (also without weights)
    family: ImageFamily | None = None   # how images become tokens and inputs (None: text-only)

    @property
    def multimodal(self) -> bool:
        return self.image_processor is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU; bf16 on a GPU unless the spec says otherwise."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def materialise(uri: str, cache: Path | None = None) -> str:
    """A local directory for a model named by an s3:// URI (downloaded once per cache: the model
    cache volume when there is one, shared by the stage pods); others unchanged."""
    if not uri.startswith("s3://"):
        return uri
    configured = HUB.cache()
    cache = cache or (Path(configured) / "store" if configured else Path(tempfile.gettempdir()) / "adaptinf-models")
    dest = cache / uri[len("s3://"):].replace("/", "_")
    if not (dest / "config.json").exists():
        # Downloaded beside it and renamed: a pod sharing the cache never sees half a model.
        part = dest.with_name(f"{dest.name}.part-{uuid.uuid4().hex[:8]}")
        bucket_prefix, _, last = uri.rstrip("/").rpartition("/")
        open_store(bucket_prefix).download_dir(last, part)
        try:
            part.rename(dest)
        except OSError:   # another pod finished first
            shutil.rmtree(part, ignore_errors=True)
    return str(dest)


def load_base(source: str, dtype: str = "auto", device: torch.device | None = None,
              weights: bool = True, revision: str | None = None) -> ModelBundle:
    """The model with its tokenizer and image processor; `weights=False` loads only what
    encoding needs (ingest checks lengths without the model). `revision` (else the run's
    `model.revision` for its base) is passed to every from_pretrained of a hub id."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer
    device = device or pick_device()
    path = materialise(source)
    if not Path(path).exists() and (path.startswith(("/", ".", "~")) or path.count("/") > 1):
        # Not a hub id: without this, transformers reports a hub "Repo id must be …" error.
        raise SpecError(f"model {source!r}: local path {path} does not exist")
    hub = hub_kwargs(path, revision)
    config = AutoConfig.from_pretrained(path, **hub)
    multimodal = getattr(config, "vision_config", None) is not None
    # An unsupported image-text family fails here, before the tokenizer or any weight is read.
    family_type = family_class(config, source) if multimodal else None
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path, **hub)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = None
    if family_type is not None:
        from transformers import AutoModelForImageTextToText
        family = family_type(config, tokenizer, AutoImageProcessor.from_pretrained(path, **hub))
        image_processor = family.image_processor
        image_token_id = family.image_token_id
        n_image_tokens = family.n_fixed if family.fixed else 0
        if weights:
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, **hub)
    else:
        if weights:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **hub)
        image_processor, image_token_id, n_image_tokens, family = None, None, 0, None
    if model is not None:
        model.to(device)
        model.eval()
        log.info("loaded %s (%s, %.2fM parameters) on %s", source, type(model).__name__,
                 sum(p.numel() for p in model.parameters()) / 1e6, device)
    return ModelBundle(model, tokenizer, image_processor, image_token_id, n_image_tokens, source, config, family)


def save_preprocessing(bundle: ModelBundle, out: str | Path) -> None:
    """Save what `AutoTokenizer` / `AutoProcessor` load beside the weights: the tokenizer (with
    its chat template) and, for an image-text model, a processor that expands `<image>` itself
    (without `patch_size`, a folder holding only a tokenizer and an image processor loads a
    LLaVA processor that fails on its first image), or the image processor where the family's
    processor cannot be built here (`ImageFamily.processor`)."""
    if bundle.family is not None:
        save_family_preprocessing(bundle.family, out)
        return
    bundle.tokenizer.save_pretrained(out)


# A causal LM's decoder linears are `model.layers.N.self_attn.q_proj`: no `language_model` in
# the name, so the LLaVA default would match nothing there.
TEXT_LORA_TARGETS = r".*layers\.\d+\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def lora_target_modules(spec: LoraSpec, multimodal: bool) -> str:
    """The spec's regex; the default (every language-model linear) means the same linears on a
    language-only model. A regex the user set is used as written."""
    if not multimodal and spec.target_modules == DEFAULT_LORA_TARGETS:
        return TEXT_LORA_TARGETS
    return spec.target_modules


def modules_to_save(spec: LoraSpec, family: ImageFamily | None) -> list[str] | None:
    """The spec's list; the default (LLaVA's projector) means the family's projector (Qwen-VL's
    is `merger`). None for a text-only model, which has none."""
    if family is None:
        return None
    if list(spec.modules_to_save) == list(LoraSpec().modules_to_save):
        return [family.projector]
    return list(spec.modules_to_save)


def lora_config(spec: LoraSpec, family: ImageFamily | None):
    from peft import LoraConfig
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=lora_target_modules(spec, family is not None),
                      modules_to_save=modules_to_save(spec, family), bias="none")


def attach_adapter(bundle: ModelBundle, spec: LoraSpec, adapter_dir: str | Path | None,
                   trainable: bool, seed: int = 0) -> ModelBundle:
    """Wrap the model with a LoRA adapter: the given one, or a fresh (seeded) one."""
    from peft import PeftModel, get_peft_model
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(bundle.model, str(adapter_dir), is_trainable=trainable)
    else:
        torch.manual_seed(seed)
        model = get_peft_model(bundle.model, lora_config(spec, bundle.family))
        if not trainable:
            for p in model.parameters():
                p.requires_grad_(False)
    model.to(bundle.device)
    bundle.model = model
    return bundle


def decoder_layers(model: Any) -> list[Any]:
    """The language model's decoder layers, through any peft/LLaVA wrapping."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and "vision" not in name:
            return list(module)
    raise ValueError(f"cannot find decoder layers in {type(model).__name__}")


def resolve_layers(spec_layers: list, n_layers: int) -> list[int]:
    """'middle'/'first'/'last'/'all' or indices → sorted decoder-layer indices."""
    named = {"first": [0], "middle": [n_layers // 2], "last": [n_layers - 1], "all": list(range(n_layers))}
    out: set[int] = set()
    for item in spec_layers:
        if isinstance(item, str):
            out.update(named[item])
        else:
            idx = item if item >= 0 else n_layers + item
            if not 0 <= idx < n_layers:
                raise SpecError(f"extract.layers: layer {item} out of range for a {n_layers}-layer model "
                                f"(layers 0..{n_layers - 1}, or -{n_layers}..-1 from the end)")
            out.add(idx)
    return sorted(out)
