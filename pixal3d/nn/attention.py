"""Multi-head attention over packed variable-length token sets: SDPA, QK-norm, 3D RoPE, optional windows.

Tokens are packed: `x [N, C]` holds every batch element's tokens one after another, and a `TokenLayout`
(group sizes) says where each group starts. A dense batch `[B, L, C]` is the special case of equal sizes
(reshaped, no mask); unequal sizes are padded to `[G, L_max]` with a key mask, which equals running each group
alone (a block-diagonal mask) and never lets tokens of different elements see each other.

Attention modes (an argument, never an environment variable):
- `"full"`: every token of an element attends to every token of the same element;
- `"window"`: tokens are ordered along a Z-order (Morton) curve of their voxel coordinates and cut into windows
  of `window_size` consecutive tokens; odd blocks shift the cut by half a window so information crosses
  windows (serialized, shifted windows, as in Point Transformer v3 / TRELLIS.2).

RoPE: rotary embeddings on integer 3D token coordinates `(i, j, k)`; the head dimension's rotation pairs are
split in three equal groups, one per axis (left-over pairs are not rotated), so `<R(p) q, R(p') k>` depends only
on `p - p'`. QK-norm: RMSNorm on each head's queries and keys before RoPE (stabilises bf16 training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

AttentionMode = Literal["full", "window"]


@dataclass
class TokenLayout:
    """How packed tokens `[N, ...]` split into contiguous groups (batch elements, or windows).

    Attributes:
        counts: `[G] int64` tokens per group (zero allowed).
        max_len: `L = max(counts)`.
        uniform: all groups have `L` tokens (plain reshape, no padding).
        index: `[N] int64` flat position `g * L + pos` of every token in the padded `[G, L]` array.
        key_mask: `[G, L] bool`, True on real tokens (None when uniform).
    """

    counts: torch.Tensor
    max_len: int
    uniform: bool
    index: torch.Tensor
    key_mask: torch.Tensor | None

    @classmethod
    def from_counts(cls, counts: torch.Tensor) -> TokenLayout:
        counts = counts.long()
        groups = counts.shape[0]
        max_len = int(counts.max()) if groups else 0
        uniform = bool((counts == max_len).all())
        group = torch.repeat_interleave(torch.arange(groups, device=counts.device), counts)  # (N,)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(group.shape[0], device=counts.device) - starts[group]
        index = group * max_len + pos
        key_mask = None
        if not uniform:
            key_mask = torch.arange(max_len, device=counts.device)[None, :] < counts[:, None]  # (G, L)
            key_mask[:, 0] |= counts == 0  # an empty group keeps one (padded) key: no all-masked softmax rows
        return cls(counts, max_len, uniform, index, key_mask)

    @classmethod
    def dense(cls, batch: int, length: int, device: torch.device | str | None = None) -> TokenLayout:
        """`batch` groups of `length` tokens each."""
        return cls.from_counts(torch.full((batch,), length, dtype=torch.long, device=device))

    @property
    def groups(self) -> int:
        return self.counts.shape[0]

    @property
    def group_index(self) -> torch.Tensor:
        """`[N] int64` group of every token."""
        return self.index // max(self.max_len, 1)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, *rest]` -> `[G, L, *rest]` (zeros at padding)."""
        if self.uniform:
            return x.reshape(self.groups, self.max_len, *x.shape[1:])
        out = x.new_zeros(self.groups * self.max_len, *x.shape[1:])
        out[self.index] = x
        return out.reshape(self.groups, self.max_len, *x.shape[1:])

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        """`[G, L, *rest]` -> `[N, *rest]`."""
        flat = y.reshape(self.groups * self.max_len, *y.shape[2:])
        return flat if self.uniform else flat[self.index]


@dataclass
class WindowPlan:
    """A permutation of packed tokens into serialized windows and the windows' layout.

    Attributes:
        order: `[N] int64`: windowed tokens are `x[order]`.
        inverse: `[N] int64`: `y[inverse]` puts windowed results back in packed order.
        layout: the windows as groups of the permuted tokens.
    """

    order: torch.Tensor
    inverse: torch.Tensor
    layout: TokenLayout


def morton_code(ijk: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Z-order curve index of integer coordinates `ijk [N, 3]` in `[0, 2^bits)` -> `[N] int64`."""
    ijk = ijk.long()
    code = torch.zeros(ijk.shape[0], dtype=torch.long, device=ijk.device)
    for bit in range(bits):
        for axis in range(3):
            code |= ((ijk[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return code


def window_plan(coords: torch.Tensor, counts: torch.Tensor, window_size: int, shift: bool) -> WindowPlan:
    """Serialized windows for packed tokens at integer `coords [N, 4] (b, i, j, k)` grouped by `counts [B]`.

    Each element's tokens are sorted along the Z-order curve and cut every `window_size` tokens; `shift`
    moves the cuts by half a window.
    """
    batch = coords[:, 0].long()
    keys = batch * (1 << 30) + morton_code(coords[:, 1:])
    order = torch.argsort(keys)
    starts = torch.cumsum(counts.long(), 0) - counts.long()
    rank = torch.arange(coords.shape[0], device=coords.device) - starts[batch[order]]  # rank within element
    offset = window_size // 2 if shift else 0
    window = (rank + offset) // window_size  # window inside the element
    per_element = (counts.long() + offset + window_size - 1) // window_size  # windows per element (upper bound)
    first = torch.cumsum(per_element, 0) - per_element
    group = first[batch[order]] + window  # global window id, non-decreasing along `order`
    win_counts = torch.bincount(group, minlength=int(per_element.sum()))
    layout = TokenLayout.from_counts(win_counts[win_counts > 0])
    return WindowPlan(order=order, inverse=torch.argsort(order), layout=layout)


def rope_frequencies(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """`[head_dim // 2]` angular frequency per rotation pair: 3 axis groups, then unrotated pairs (0)."""
    pairs = head_dim // 2
    per_axis = pairs // 3
    freqs = base ** (-torch.arange(per_axis, dtype=torch.float64) / max(per_axis, 1))
    axis_freqs = torch.cat([freqs, freqs, freqs, torch.zeros(pairs - 3 * per_axis, dtype=torch.float64)])
    return axis_freqs.float()


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`positions [N, 3]` (token coordinates, any units) -> `(cos, sin)`, each `[N, head_dim // 2]` float32."""
    freqs = rope_frequencies(head_dim, base).to(positions.device)
    per_axis = (head_dim // 2) // 3
    axis = torch.arange(head_dim // 2, device=positions.device).div(max(per_axis, 1), rounding_mode="floor")
    axis = axis.clamp_max(2)  # unrotated pairs have frequency 0; any axis will do
    angles = positions.float()[:, axis] * freqs  # (N, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate `x [N, H, D]` by the angles of `rope` (`[N, D/2]` each); pairs are `(x[:D/2], x[D/2:])`."""
    cos, sin = (r[:, None, :].to(x.dtype) for r in rope)  # (N, 1, D/2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def packed_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Attention within each group of packed `q, k, v [N, H, D]` -> `[N, H, D]`."""
    qp, kp, vp = (layout.pad(t).transpose(1, 2) for t in (q, k, v))  # (G, L, H, D) -> (G, H, L, D)
    mask = None if layout.key_mask is None else layout.key_mask[:, None, None, :]  # (G, 1, 1, L)
    out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask)
    return layout.unpad(out.transpose(1, 2))  # (G, H, L, D) -> (G, L, H, D) -> (N, H, D)


class RMSNorm(nn.Module):
    """`x / rms(x) * weight` over the last dimension (computed in float32)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention over packed tokens with QK-norm and optional 3D RoPE."""

    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        layout: TokenLayout,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        window: WindowPlan | None = None,
    ) -> torch.Tensor:
        """`x [N, C]` packed tokens -> `[N, C]`; `window` (if given) restricts attention to its windows."""
        n = x.shape[0]
        if window is not None:  # attend in window order; permuting x is cheaper than permuting q, k and v
            x, layout = x[window.order], window.layout
            rope = None if rope is None else (rope[0][window.order], rope[1][window.order])
        q, k, v = self.qkv(x).reshape(n, 3, self.heads, self.head_dim).unbind(1)  # (N, 3C) -> 3 x (N, H, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = self.out(packed_sdpa(q, k, v, layout).reshape(n, -1))  # (N, H, D) -> (N, C)
        return out if window is None else out[window.inverse]


class CrossAttention(nn.Module):
    """Packed query tokens attend to their own batch element's context tokens `[B, T, C_ctx]`."""

    def __init__(self, dim: int, context_dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, layout: TokenLayout, context: torch.Tensor) -> torch.Tensor:
        """`x [N, C]` packed by batch element (`layout` has B groups), `context [B, T, C_ctx]` -> `[N, C]`."""
        b, t, _ = context.shape
        q = self.q_norm(self.q(x).reshape(x.shape[0], self.heads, self.head_dim))  # (N, H, D)
        k, v = self.kv(context).reshape(b, t, 2, self.heads, self.head_dim).unbind(2)  # 2 x (B, T, H, D)
        qp = layout.pad(q).transpose(1, 2)  # (B, L, H, D) -> (B, H, L, D)
        out = F.scaled_dot_product_attention(qp, self.k_norm(k).transpose(1, 2), v.transpose(1, 2))
        return self.out(layout.unpad(out.transpose(1, 2)).reshape(x.shape[0], -1))  # (N, H, D) -> (N, C)
