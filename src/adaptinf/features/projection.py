"""Seeded Rademacher random projection, generated in row blocks.

Entry (i, j) is bit (j mod 64) of a counter-based 64-bit hash (splitmix64's finaliser, with
logical shifts) of (seed, i, j div 64), so the matrix is the same on every device and for every
shard without ever being stored whole: memory stays flat whatever the gradient dimension. One
hash gives 64 signs, unpacked a byte at a time through a 256×8 sign table: generation is a few
passes over the output, not a dozen int64 passes per entry. Entries are ±1/sqrt(k)
(Johnson–Lindenstrauss scaling, as TRAK/LESS use). Matrices up to `cache_elems` entries are
generated once (still block by block, so the int64 temporaries stay small) and kept.
"""
from __future__ import annotations

import torch

_M1 = -4658895280553007687   # 0xBF58476D1CE4E5B9 as a signed int64 (splitmix64 constants)
_M2 = -7723592293110705685   # 0x94D049BB133111EB
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_WORD = 64


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic: mask the sign copies away)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    # splitmix64 finaliser on int64; wrap-around multiply is the same on CPU and CUDA.
    z = z + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _sign_table(k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(256, 8): row b holds the ±1/sqrt(k) signs of the bits of byte b, lowest bit first."""
    bits = (torch.arange(256, device=device)[:, None] >> torch.arange(8, device=device)) & 1
    return (bits.to(dtype) * 2 - 1) / (k ** 0.5)


def rademacher_block(seed: int, row_start: int, n_rows: int, k: int, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows [row_start, row_start + n_rows) of the (·, k) projection matrix for `seed`."""
    device = torch.device(device)
    words = -(-k // _WORD)
    rows = torch.arange(row_start, row_start + n_rows, device=device, dtype=torch.int64).unsqueeze(1)
    cols = torch.arange(words, device=device, dtype=torch.int64).unsqueeze(0)
    seed_key = _mix(torch.tensor(seed, dtype=torch.int64, device=device))
    h = _mix(rows * words + cols + seed_key)                                      # (n, words)
    # Byte b of each word; `&` makes the arithmetic shift exact for the top byte too.
    octets = (h.unsqueeze(-1) >> torch.arange(0, _WORD, 8, device=device)) & 255   # (n, words, 8)
    signs = _sign_table(k, device, dtype)[octets]                                 # (n, words, 8, 8)
    return signs.reshape(n_rows, words * _WORD)[:, :k]


class RademacherProjector:
    """x (n, d) → x @ P (n, k), P generated block by block; accumulation in fp32."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, device: torch.device | str = "cpu",
                 block_elems: int | None = None, cache_elems: int | None = None):
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self.device = torch.device(device)
        gpu = self.device.type == "cuda"
        # Bigger blocks on a GPU (fewer launches). The whole matrix is kept when it fits: 512 MiB
        # on CPU, an eighth of the free memory on a GPU, where regenerating it for every batch
        # would cost about as much as the batch's forward pass.
        if block_elems is None:
            block_elems = 1 << 26 if gpu else 1 << 22
        if cache_elems is None:
            cache_elems = torch.cuda.mem_get_info(self.device)[0] // 32 if gpu else 1 << 27
        self.block_rows = max(1, block_elems // out_dim)
        self._cache: torch.Tensor | None = None
        if in_dim * out_dim <= cache_elems:
            self._cache = torch.empty(in_dim, out_dim, device=self.device, dtype=torch.float32)
            for start in range(0, in_dim, self.block_rows):
                rows = min(self.block_rows, in_dim - start)
                self._cache[start:start + rows] = rademacher_block(seed, start, rows, out_dim, self.device)

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
