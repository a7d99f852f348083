"""Seeded Rademacher random projection, generated in row blocks.

Entry (i, j) is a sign drawn from a counter-based hash of (seed, i, j), so the matrix is the
same on every device and for every shard without ever being stored whole: memory stays flat
whatever the gradient dimension. Entries are ±1/sqrt(k) (Johnson–Lindenstrauss scaling, as
TRAK/LESS use). Small matrices are cached once generated.
"""
from __future__ import annotations

import torch

_M1 = -4658895280553007687   # 0xBF58476D1CE4E5B9 as a signed int64 (splitmix64 constants)
_M2 = -7723592293110705685   # 0x94D049BB133111EB
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15


def _mix(z: torch.Tensor) -> torch.Tensor:
    # splitmix64 finaliser on int64; wrap-around multiply is the same on CPU and CUDA.
    z = z + _GOLDEN
    z = (z ^ (z >> 30)) * _M1
    z = (z ^ (z >> 27)) * _M2
    return z ^ (z >> 31)


def rademacher_block(seed: int, row_start: int, n_rows: int, k: int, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    rows = torch.arange(row_start, row_start + n_rows, device=device, dtype=torch.int64).unsqueeze(1)
    cols = torch.arange(k, device=device, dtype=torch.int64).unsqueeze(0)
    bits = (_mix(rows * k + cols + _mix(torch.tensor(seed, dtype=torch.int64, device=device))) >> 11) & 1
    return (bits.to(dtype) * 2 - 1) / (k ** 0.5)


class RademacherProjector:
    """x (n, d) → x @ P (n, k), P generated block by block; accumulation in fp32."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, device: torch.device | str = "cpu",
                 block_elems: int = 1 << 24, cache_elems: int = 1 << 27):
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.device = torch.device(device)
        self.block_rows = max(1, block_elems // out_dim)
        self._cache: torch.Tensor | None = None
        if in_dim * out_dim <= cache_elems:
            self._cache = rademacher_block(seed, 0, in_dim, out_dim, self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"projector expects dimension {self.in_dim}, got {x.shape[-1]}")
        x = x.to(device=self.device, dtype=torch.float32)
        if self._cache is not None:
            return x @ self._cache
        out = torch.zeros(x.shape[0], self.out_dim, device=self.device, dtype=torch.float32)
        for start in range(0, self.in_dim, self.block_rows):
            rows = min(self.block_rows, self.in_dim - start)
            out += x[:, start:start + rows] @ rademacher_block(self.seed, start, rows, self.out_dim, self.device)
        return out


def l2_normalise(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
