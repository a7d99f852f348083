"""Re-run only the top of the decoder, from a chosen layer, on that layer's cached input.

A perturbation of layer i's weights cannot change anything computed below layer i (the
embeddings, the vision tower and projector, layers 0..i-1). Zero-order estimates need many
forwards that differ only in such a perturbation, so the input of layer i is captured once, in
the ordinary forward, with every upper layer's other arguments (mask, rotary embeddings — kept
per layer, since models with alternating sliding-window layers pass each its own mask), and
each further forward runs layers i.., the final norm and the LM head only. Works for any model whose decoder layers take
the hidden states first and whose layer stack's owner has a `norm` (Llama, Mistral, Qwen, and
LLaVA's language model); `UpperStack.supported` says whether it applies.
"""
from __future__ import annotations

from typing import Any

import torch

# Cache arguments a layer would append to: the reruns must not touch the (absent) cache.
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")


def _stack_owner(model: torch.nn.Module) -> tuple[torch.nn.Module | None, torch.nn.ModuleList | None]:
    """The module holding the language model's decoder layers (`…layers`) and those layers."""
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and "vision" not in name:
            return modules.get(name.rsplit(".", 1)[0] if "." in name else ""), module
    return None, None


class UpperStack:
    """Context manager: inside it, every forward of `model` records the input of layer `start`;
    `logits()` then recomputes the last recorded forward's logits from there with the weights as
    they are at that call."""

    def __init__(self, model: torch.nn.Module, start: int):
        self.model, self.start = model, start
        owner, layers = _stack_owner(model)
        self.layers = list(layers)[start:] if layers is not None else []
        self.norm = getattr(owner, "norm", None)
        self.head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self._hidden: torch.Tensor | None = None
        self._calls: list[tuple[tuple, dict[str, Any]] | None] = [None] * len(self.layers)
        self._handles: list = []

    @property
    def supported(self) -> bool:
        return bool(self.layers) and self.norm is not None and self.head is not None

    def __enter__(self) -> UpperStack:
        def keep(module, args, kwargs, i):
            kwargs = {k: v for k, v in kwargs.items() if k not in _CACHE_KWARGS}
            kwargs["use_cache"] = False
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if i == 0:
                self._hidden = hidden
            self._calls[i] = (args[1:], kwargs)
        self._handles = [layer.register_forward_pre_hook(lambda m, a, k, i=i: keep(m, a, k, i), with_kwargs=True)
                         for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        # The captured inputs stay (until the next capture): the reruns happen after the forward.
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def logits(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, len, vocab) logits of the last captured forward, recomputed from layer `start`;
        at `positions` only when given (`answer_logits`: the LM head is most of a rerun)."""
        if self._hidden is None or any(c is None for c in self._calls):
            raise RuntimeError("no forward was captured: call the model inside the context first")
        hidden = self._hidden
        for layer, (rest, kwargs) in zip(self.layers, self._calls):
            out = layer(hidden, *rest, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out   # older transformers return tuples
        hidden = self.norm(hidden)
        return self.head(hidden if positions is None else hidden[:, positions])
