"""Zero-order (forward-only) per-sample gradient estimates of the chosen LoRA weights.

The paper's cheaper variant (Table 5: zero-order gradients). SPSA with antithetic pairs
(Spall 1992; MeZO, Malladi et al. 2023): for K seeded Rademacher directions u_k ∈ {±1}^d over
the chosen layers' LoRA weights θ (d of them, in `LoraGradCapture.parameters()` order, so the
coordinates are those of the backpropagated gradient),

    c_ik = (loss_i(θ + ε u_k) − loss_i(θ − ε u_k)) / 2ε  ≈  u_k · ∇loss_i(θ)
    ĝ_i  = (1/K) Σ_k c_ik u_k                          (unbiased: E[u uᵀ] = I)

and ĝ_i is projected and normalised like a backpropagated gradient. Samples in a batch do not
interact, so one batched forward gives every sample's loss: a batch costs 2K forwards of the
layers from the lowest chosen one up (`UpperStack`) and no backward, so no activation is kept
for a backward pass. What survives of the gradient: c_i = U g_i is itself a K-dim random
projection of the true gradient, so inner products between samples' estimates follow the true
ones with a Johnson–Lindenstrauss error of about 1/√K; each single estimate is far from its
gradient in direction (cosine ≈ √(K/d)), which k-means over many samples does not need.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..model.answer_logits import answer_token_logits
from .projection import rademacher_block

DEFAULT_DIRECTIONS = 16
# Perturbation size per weight: small enough for the central difference to be accurate to
# O(ε²), large enough that the loss change stands out of rounding (bf16 weights of ~0.1 are
# spaced ~4e-4 apart). Measured on the tiny model (CPU, 16 directions), relative error of the
# coefficients against backprop: fp32 ε=1e-3 0.25%; bf16 ε=1e-3 15%, 3e-3 6%, 1e-2 16%.
EPSILON = {torch.float32: 1e-3, torch.float64: 1e-4, torch.bfloat16: 3e-3, torch.float16: 3e-3}
# Directions are drawn apart from the projection matrix (which uses the plain seed).
_DIRECTION_SEED_OFFSET = 0x5EED


def rademacher_directions(seed: int, count: int, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(count, dim) ±1 float32, the same on every device and shard for a given seed."""
    return torch.sign(rademacher_block(seed + _DIRECTION_SEED_OFFSET, 0, count, dim, torch.device(device)))


def answer_nll(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """(batch,) float64 mean answer-token NLL (the loss the gradient is of), from fp32 logits of
    the labelled positions only; `positions`: where `logits` was computed (None: everywhere)."""
    sample, sel, y = answer_token_logits(logits, labels, positions)
    nll = -torch.log_softmax(sel, dim=-1).gather(1, y[:, None]).squeeze(1).double()
    total = torch.zeros(labels.shape[0], dtype=torch.float64, device=logits.device).index_add_(0, sample, nll)
    count = torch.zeros_like(total).index_add_(0, sample, torch.ones_like(nll))
    return total / count.clamp_min(1)


class ZeroOrderGrads:
    """Seeded SPSA over a fixed list of parameters (changed in place, always restored)."""

    def __init__(self, params: list[torch.nn.Parameter], directions: int = DEFAULT_DIRECTIONS, seed: int = 0,
                 epsilon: float | None = None):
        if directions < 1:
            raise ValueError(f"zero-order estimates need at least one direction, got {directions}")
        self.params = params
        self.dim = sum(p.numel() for p in params)
        device, dtype = params[0].device, params[0].dtype
        self.epsilon = epsilon if epsilon is not None else EPSILON.get(dtype, 1e-3)
        self.u = rademacher_directions(seed, directions, self.dim, device)     # (K, d)

    @property
    def directions(self) -> int:
        return self.u.shape[0]

    @torch.no_grad()
    def coefficients(self, losses: Callable[[], torch.Tensor]) -> torch.Tensor:
        """(batch, K) directional derivatives c_ik; `losses()` gives per-sample losses with the
        parameters as they are when it is called."""
        saved = [p.detach().clone() for p in self.params]
        columns = []
        try:
            for k in range(self.directions):
                self._shift(saved, k, +self.epsilon)
                plus = losses()
                self._shift(saved, k, -self.epsilon)
                minus = losses()
                columns.append((plus - minus) / (2 * self.epsilon))
        finally:
            for p, s in zip(self.params, saved):
                p.copy_(s)
        return torch.stack(columns, dim=1)

    def estimate(self, coefficients: torch.Tensor) -> torch.Tensor:
        """(batch, d) float32 gradient estimates ĝ = C U / K."""
        return (coefficients.float() @ self.u) / self.directions

    def _shift(self, saved: list[torch.Tensor], k: int, step: float) -> None:
        """Parameters := saved + step · u_k (set from the saved copy: no drift from repeated adds)."""
        offset = 0
        for p, s in zip(self.params, saved):
            n = p.numel()
            p.copy_(s + step * self.u[k, offset:offset + n].view_as(p).to(p.dtype))
            offset += n
