"""Per-sample gradients of chosen LoRA layers from ONE batched backward pass.

Forward hooks on each chosen LoRA module keep its input x (into lora_A), the rank-r
activation a = A·x (into lora_B) and lora_B's output o. After one forward of the whole batch,
`torch.autograd.grad(Σ_i loss_i, o)` gives g = ∂L/∂o for every token, where loss_i is sample
i's mean answer-token loss; samples do not interact, so g restricted to sample i is the
gradient of loss_i alone. Then, per sample,

    ∂loss_i/∂B = Σ_t g_t a_tᵀ            ∂loss_i/∂A = Σ_t (Bᵀ g_t) x_tᵀ

peft's scaling multiplies lora_B's output after the module, so it is already inside g.
Only the chosen layers' LoRA weights require grad, so backward stops at the lowest of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class _Capture:
    name: str
    lora_a: torch.nn.Linear
    lora_b: torch.nn.Linear
    x: torch.Tensor | None = None
    a: torch.Tensor | None = None
    o: torch.Tensor | None = None
    handles: list = field(default_factory=list)


def lora_modules(layer: torch.nn.Module, adapter: str = "default") -> list[tuple[str, Any]]:
    """(name, peft LoraLayer) for every LoRA-wrapped linear inside a decoder layer, sorted."""
    found = []
    for name, mod in layer.named_modules():
        if hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {}):
            found.append((name, mod))
    return sorted(found, key=lambda t: t[0])


class LoraGradCapture:
    """Context manager: hooks the chosen layers' LoRA modules, yields per-sample grads."""

    def __init__(self, layers: list[torch.nn.Module], adapter: str = "default"):
        self.caps: list[_Capture] = []
        for li, layer in enumerate(layers):
            for name, mod in lora_modules(layer, adapter):
                self.caps.append(_Capture(f"{li}.{name}", mod.lora_A[adapter], mod.lora_B[adapter]))
        if not self.caps:
            raise ValueError("no LoRA modules found in the chosen layers: check lora.targetModules and extract.layers")

    @property
    def dim(self) -> int:
        return sum(c.lora_a.weight.numel() + c.lora_b.weight.numel() for c in self.caps)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for c in self.caps for p in (c.lora_a.weight, c.lora_b.weight)]

    def __enter__(self) -> LoraGradCapture:
        for c in self.caps:
            def keep_x(mod, inp, out, c=c):
                c.x = inp[0]
            def keep_ao(mod, inp, out, c=c):
                c.a, c.o = inp[0], out
            c.handles = [c.lora_a.register_forward_hook(keep_x), c.lora_b.register_forward_hook(keep_ao)]
        return self

    def __exit__(self, *exc) -> None:
        for c in self.caps:
            for h in c.handles:
                h.remove()
            c.x = c.a = c.o = None

    def per_sample_grads(self, total_loss: torch.Tensor) -> torch.Tensor:
        """(batch, dim) float32 gradients, in the order of `parameters()` (A then B per module)."""
        outs = [c.o for c in self.caps]
        if any(o is None or not o.requires_grad for o in outs):
            raise RuntimeError("LoRA outputs were not captured with grad: is the adapter trainable and hooked?")
        grads_o = torch.autograd.grad(total_loss, outs)
        pieces = []
        for c, g in zip(self.caps, grads_o):
            g = g.float()
            a, x = c.a.float(), c.x.float()
            grad_b = torch.einsum("blo,blr->bor", g, a)
            gb = g @ c.lora_b.weight.float()                      # Bᵀ g_t, (batch, len, r)
            grad_a = torch.einsum("blr,bli->bri", gb, x)
            pieces += [grad_a.flatten(1), grad_b.flatten(1)]
        return torch.cat(pieces, dim=1).detach()
