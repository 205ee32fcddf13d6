"""The flow transformer's block: adaLN-modulated self-attention, conditioning injection, MLP (DESIGN section 3).

Per block, on packed tokens `h [N, C]` (see `attention.TokenLayout`):

    h = h + gate_1 * SelfAttn(modulate(LN(h), shift_1, scale_1))          RoPE on token coordinates
    h = h + CrossAttn(LN(h), context) + Linear_block(lifted)              the Pixal3D injection
    h = h + gate_2 * MLP(modulate(LN(h), shift_2, scale_2))

`(shift, scale, gate) x 2` come from the timestep embedding (adaLN, DiT); `context` is the global tokens (or,
in the cross-attention-only ablation, every patch token of the /4 map, and there is no lift linear).
The lift linear has no bias: a zeroed `lifted` (the unconditional branch) adds exactly nothing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pixal3d.nn.attention import CrossAttention, SelfAttention, TokenLayout, WindowPlan


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: `x * (1 + scale) + shift`, all `[N, C]`."""
    return x * (1 + scale) + shift


class FlowBlock(nn.Module):
    """One adaLN transformer block with self-attention, cross-attention and the per-block lift linear.

    Args:
        dim: token width `C`.
        heads: attention heads (`C / heads` per head).
        context_dim: width of the cross-attention context tokens.
        lift_dim: width of the lifted per-token features; 0 disables the lift linear (cross-attention only).
        mlp_ratio: MLP hidden width / `C`.
        qk_norm: RMSNorm on queries and keys.
        own_modulation: this block maps the timestep embedding to its 6 modulations itself; otherwise the
            model passes a shared modulation and the block adds a learned per-block offset (adaLN-single).
    """

    def __init__(self, dim: int, heads: int, context_dim: int, lift_dim: int, mlp_ratio: float = 4.0,
                 qk_norm: bool = True, own_modulation: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, context_dim, heads, qk_norm)
        self.lift = nn.Linear(lift_dim, dim, bias=False) if lift_dim > 0 else None
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        if own_modulation:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)
        else:
            self.modulation = None
            self.mod_offset = nn.Parameter(torch.zeros(6 * dim))
        # Conditioning starts silent (ControlNet-style zero init); gates start at 0, so the block is the identity.
        nn.init.zeros_(self.cross.out.weight)
        nn.init.zeros_(self.cross.out.bias)
        if self.lift is not None:
            nn.init.zeros_(self.lift.weight)

    def forward(
        self,
        h: torch.Tensor,
        t_emb: torch.Tensor,
        layout: TokenLayout,
        context: torch.Tensor,
        lifted: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        window: WindowPlan | None = None,
    ) -> torch.Tensor:
        """One block.

        Args:
            h: `[N, C]` packed tokens, grouped by batch element as in `layout` (B groups).
            t_emb: `[B, C]` timestep embedding (own modulation) or `[B, 6C]` shared modulation.
            layout: the batch elements' token counts.
            context: `[B, T, context_dim]` cross-attention tokens.
            lifted: `[N, lift_dim]` lifted image features per token (required iff the block has a lift linear).
            rope: `(cos, sin)` per token, `[N, head_dim / 2]` each.
            window: serialized windows for the self-attention (None = full attention).

        Returns:
            `[N, C]`.
        """
        mod = self.modulation(t_emb) if self.modulation is not None else t_emb + self.mod_offset  # (B, 6C)
        if layout.groups > 1:  # one element (batch-1 sampling) broadcasts (1, 6C) without a gather
            mod = mod[layout.group_index]  # (B, 6C) -> (N, 6C)
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        h = h + gate1 * self.attn(modulate(self.norm1(h), shift1, scale1), layout, rope, window)
        h = h + self.cross(self.norm2(h), layout, context)
        if self.lift is not None:
            h = h + self.lift(lifted)
        return h + gate2 * self.mlp(modulate(self.norm3(h), shift2, scale2))
