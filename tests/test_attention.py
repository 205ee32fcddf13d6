"""Attention: RoPE's relative-position property, packed varlen == per-sample, windows, the adaLN block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixal3d.nn.attention import (
    CrossAttention,
    SelfAttention,
    TokenLayout,
    apply_rope,
    morton_code,
    rope_angles,
    window_plan,
)
from pixal3d.nn.blocks import FlowBlock


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def random_tokens(counts: list[int], dim: int = 32, resolution: int = 8):
    n = sum(counts)
    coords = torch.cat(
        [torch.cat([torch.full((c, 1), b), torch.randint(0, resolution, (c, 3))], dim=1) for b, c in enumerate(counts)]
    ).int()
    return torch.randn(n, dim), coords, TokenLayout.from_counts(torch.tensor(counts))


def test_rope_depends_only_on_relative_position():
    head_dim = 24
    q, k = torch.randn(1, 2, head_dim), torch.randn(1, 2, head_dim)
    p, r = torch.tensor([[1.0, 5.0, -2.0]]), torch.tensor([[4.0, 0.0, 3.0]])
    shift = torch.tensor([[7.0, -3.0, 11.0]])

    def score(pq, pk):
        return (apply_rope(q, rope_angles(pq, head_dim)) * apply_rope(k, rope_angles(pk, head_dim))).sum(-1)

    assert torch.allclose(score(p, r), score(p + shift, r + shift), atol=1e-4)
    assert not torch.allclose(score(p, r), score(p, r + shift), atol=1e-3)
    # A rotation keeps norms.
    assert torch.allclose(apply_rope(q, rope_angles(p, head_dim)).norm(dim=-1), q.norm(dim=-1), atol=1e-5)


def test_rope_uses_every_axis():
    head_dim = 18
    q = torch.randn(1, 1, head_dim)
    base = apply_rope(q, rope_angles(torch.zeros(1, 3), head_dim))
    for axis in range(3):
        pos = torch.zeros(1, 3)
        pos[0, axis] = 1.0
        assert not torch.allclose(apply_rope(q, rope_angles(pos, head_dim)), base)


def test_layout_pad_unpad_round_trip():
    x, _, layout = random_tokens([3, 0, 5, 1])
    padded = layout.pad(x)
    assert padded.shape == (4, 5, 32)
    assert torch.equal(layout.unpad(padded), x)
    assert layout.key_mask.sum() == 3 + 1 + 5 + 1  # the empty group keeps one padded key
    assert torch.equal(layout.group_index, torch.tensor([0, 0, 0, 2, 2, 2, 2, 2, 3]))


def test_varlen_self_attention_equals_per_sample():
    counts = [5, 9, 1, 7]
    x, coords, layout = random_tokens(counts)
    attn = SelfAttention(32, heads=4)
    rope = rope_angles(coords[:, 1:], 8)
    out = attn(x, layout, rope)
    start = 0
    for c in counts:
        sl = slice(start, start + c)
        single = attn(x[sl], TokenLayout.dense(1, c), (rope[0][sl], rope[1][sl]))
        assert torch.allclose(out[sl], single, atol=1e-5)
        start += c


def test_uniform_layout_is_a_dense_batch():
    x, coords, layout = random_tokens([6, 6])
    assert layout.uniform and layout.key_mask is None
    attn = SelfAttention(32, heads=2)
    mixed = TokenLayout.from_counts(torch.tensor([6, 6]))
    assert torch.allclose(attn(x, layout), attn(x, mixed), atol=1e-6)


def test_varlen_cross_attention_equals_per_sample():
    counts = [4, 2, 6]
    x, _, layout = random_tokens(counts)
    context = torch.randn(3, 5, 16)
    cross = CrossAttention(32, 16, heads=4)
    out = cross(x, layout, context)
    start = 0
    for b, c in enumerate(counts):
        sl = slice(start, start + c)
        assert torch.allclose(out[sl], cross(x[sl], TokenLayout.dense(1, c), context[b : b + 1]), atol=1e-5)
        start += c


def test_morton_code_is_unique_and_local():
    grid = torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    codes = morton_code(grid)
    assert codes.unique().numel() == 512 and int(codes.max()) == 511
    # The first 8 codes are exactly one 2x2x2 cell.
    first = grid[torch.argsort(codes)[:8]]
    assert int(first.max()) == 1


@pytest.mark.parametrize("shift", [False, True])
def test_window_plan_partitions_each_element(shift):
    counts = [13, 20, 3]
    _, coords, _ = random_tokens(counts)
    plan = window_plan(coords, torch.tensor(counts), window_size=4, shift=shift)
    assert torch.equal(torch.sort(plan.order)[0], torch.arange(sum(counts)))
    assert int(plan.layout.counts.max()) <= 4 and int(plan.layout.counts.sum()) == sum(counts)
    # No window mixes batch elements.
    batch = coords[plan.order, 0].long()
    group = plan.layout.group_index
    for g in range(plan.layout.groups):
        assert batch[group == g].unique().numel() == 1


def test_windowed_attention_equals_attention_inside_windows():
    counts = [10, 7]
    x, coords, layout = random_tokens(counts)
    attn = SelfAttention(32, heads=2, qk_norm=False)
    plan = window_plan(coords, torch.tensor(counts), window_size=4, shift=True)
    out = attn(x, layout, window=plan)
    xo = x[plan.order]
    expected = torch.zeros_like(x)
    start = 0
    for c in plan.layout.counts.tolist():
        rows = plan.order[start : start + c]
        expected[rows] = attn(xo[start : start + c], TokenLayout.dense(1, c))
        start += c
    assert torch.allclose(out, expected, atol=1e-5)
    # A window wider than every element is full attention.
    wide = window_plan(coords, torch.tensor(counts), window_size=64, shift=False)
    assert torch.allclose(attn(x, layout, window=wide), attn(x, layout), atol=1e-5)


def test_sdpa_matches_explicit_softmax():
    x, _, layout = random_tokens([5, 3])
    attn = SelfAttention(32, heads=1, qk_norm=False)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    expected = []
    for sl in (slice(0, 5), slice(5, 8)):
        w = F.softmax(q[sl] @ k[sl].T / 32**0.5, dim=-1)
        expected.append(attn.out(w @ v[sl]))
    assert torch.allclose(attn(x, layout), torch.cat(expected), atol=1e-5)


@pytest.mark.parametrize("own_modulation", [True, False])
def test_flow_block_forward_backward(own_modulation):
    x, coords, layout = random_tokens([6, 3])
    block = FlowBlock(32, heads=2, context_dim=16, lift_dim=10, own_modulation=own_modulation)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    t_emb = torch.randn(2, 32 if own_modulation else 6 * 32)
    lifted = torch.randn(9, 10)
    h = x.clone().requires_grad_(True)
    out = block(h, t_emb, layout, torch.randn(2, 5, 16), lifted, rope_angles(coords[:, 1:], 16))
    assert out.shape == x.shape
    out.square().sum().backward()
    assert h.grad is not None and all(p.grad is not None for p in block.parameters())


def test_flow_block_cross_only_has_no_lift():
    block = FlowBlock(32, heads=2, context_dim=16, lift_dim=0)
    assert block.lift is None
    x, _, layout = random_tokens([4])
    assert block(x, torch.randn(1, 32), layout, torch.randn(1, 7, 16)).shape == x.shape
