"""Inside/outside at fine-voxel corners: crossings that close by construction (DESIGN section 4, issue 15).

Per-voxel edge flags predicted independently leave a hole wherever one flag is missed. Here a sign lives at each
grid *corner* of the active voxels (shared by up to 8 voxels), and an edge is crossed exactly where its two
corners disagree, oriented as `SparseVoxels.edges` is (+1: the edge goes from inside to outside along +axis).

Frame and units: grid units at resolution `R` (DESIGN section 2): voxel `(i, j, k)` has its corners at the
integer points `(i + a, j + b, k + c)`, `a, b, c in {0, 1}`, numbered `a * 4 + b * 2 + c` (`CORNER_OFFSETS`, the
order of `pixal3d.training.synthetic`). Coords are `[N, 4] (b, i, j, k)` (batch first; `[N, 3]` means one item).

- `corner_targets`: ground-truth voxels (coords + signed edge flags, as voxelised from the mesh) -> inside/outside
  per voxel corner, and which voxels are *open* (the signs cannot reproduce their crossings: an open sheet, a
  leaf, a non-manifold or self-intersecting part). The crossing orientations vote on their two corners; the
  votes spread to the other corners through uncrossed edges.
- `corner_edges`: per-voxel corner logits -> edge flags, with the closure step below; open voxels take their
  edges from a fallback (the per-voxel edge flags).

Why the result is closed: a dual-grid quad needs all four voxels around its edge. Call an edge of the active
voxels *interior* when its four voxels are all active, otherwise *boundary*; the corners of boundary edges form
connected boundary patches (for a sphere's voxel shell: the outer and the inner skin). Each patch takes one
sign, the mean of its corners' logits. Then no boundary edge is crossed, so every crossed edge has its quad; and
around any face shared by two voxels the sign changes an even number of times, so every mesh edge between two
dual vertices has an even number of quads (2 where manifold). No open edge is left where no voxel is open.
"""

from __future__ import annotations

import torch

CORNER_OFFSETS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
"""`[8, 3]` int64: the corner offsets of a voxel, corner `a * 4 + b * 2 + c` at `(a, b, c)`."""
EDGE_CORNERS = torch.tensor([(o, o + step) for step in (4, 2, 1) for o in range(8) if not o & step])
"""`[12, 2]` int64: a voxel's 12 edges as (start corner, end corner), 4 along x, then y, then z."""
EDGE_AXIS = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
"""`[12]` int64: the axis of each edge of `EDGE_CORNERS`."""
OWN_EDGES = (0, 4, 8)
"""Rows of `EDGE_CORNERS` that are the voxel's own edges (from its min corner along +x, +y, +z)."""
PROPAGATION_STEPS = 8
"""Rounds in which corner signs spread through uncrossed edges from the corners of crossed edges (the voxel band
around a surface is a few voxels thick, so a few rounds reach every corner that matters)."""


def _with_batch(coords: torch.Tensor) -> torch.Tensor:
    """`[N, 4] int64 (b, i, j, k)` from `[N, 4]` or `[N, 3]` (one item, batch 0)."""
    coords = coords.long()
    if coords.shape[1] == 3:
        coords = torch.cat([coords.new_zeros(coords.shape[0], 1), coords], dim=1)
    return coords


def voxel_corner_keys(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Keys `[N, 8]` int64 of each voxel's 8 corners on the `(R + 1)^3` corner grid (batch in the high part).

    Args:
        coords: `[N, 4] (b, i, j, k)` or `[N, 3]` int voxel coords at `resolution`.
        resolution: R.
    """
    c = _with_batch(coords)
    r1 = resolution + 1
    corner = c[:, None, 1:] + CORNER_OFFSETS.to(c.device)  # (N, 8, 3)
    return ((c[:, None, 0] * r1 + corner[..., 0]) * r1 + corner[..., 1]) * r1 + corner[..., 2]


def corner_index(coords: torch.Tensor, resolution: int) -> tuple[torch.Tensor, int]:
    """`(index [N, 8] int64, C)`: each voxel corner's row among the `C` distinct corners of the voxel set."""
    keys = voxel_corner_keys(coords, resolution)
    unique, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
    return inverse.reshape(keys.shape), int(unique.shape[0])


def _edge_table(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct edges of the voxel set: `(ends [E, 2] corner rows, voxel_edge [N, 12] edge row, count [E])`.

    An edge is named by its start corner and axis; `count` is how many of the voxels hold it (4 = interior).
    """
    edge_corners = EDGE_CORNERS.to(index.device)
    start = index[:, edge_corners[:, 0]]  # (N, 12)
    keys = start * 3 + EDGE_AXIS.to(index.device)
    unique, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
    inverse = inverse.reshape(keys.shape)
    ends = torch.zeros(unique.shape[0], 2, dtype=torch.long, device=index.device)
    ends[inverse.reshape(-1)] = torch.stack([start, index[:, edge_corners[:, 1]]], dim=-1).reshape(-1, 2)
    count = torch.bincount(inverse.reshape(-1), minlength=unique.shape[0])
    return ends, inverse, count


def connected_components(num_nodes: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Component label `[num_nodes]` int64 (the smallest node of its component) of the graph with edges `(u, v)`.

    Hooking of roots onto the smaller root plus full path compression, rounds until no edge joins two roots;
    pure torch (any device), no host loop over nodes.
    """
    parent = torch.arange(num_nodes, device=u.device)
    while True:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not bool(differ.any()):
            return parent
        lo, hi = torch.minimum(pu, pv)[differ], torch.maximum(pu, pv)[differ]
        parent = parent.scatter_reduce(0, hi, lo, reduce="amin")  # hi is a root: parent never exceeds the node
        while True:
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped


def edges_from_signs(index: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Own edge flags `[N, 3]` int8 from corner signs `inside [C]` bool (+1: min corner inside, end outside)."""
    start = inside[index[:, 0]][:, None]
    end = inside[index[:, [4, 2, 1]]]  # the ends of the +x, +y, +z edges
    return (start & ~end).to(torch.int8) - (~start & end).to(torch.int8)


def corner_targets(
    coords: torch.Tensor,
    edges: torch.Tensor,
    resolution: int,
    fill_holes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth inside/outside per voxel corner, and the voxels whose crossings the signs cannot give.

    Each crossed edge votes on its two corners (+1: start inside, end outside); a corner takes the sign of its
    vote sum; corners without a decided vote take, for `PROPAGATION_STEPS` rounds, the majority of their decided
    neighbours through uncrossed edges; the rest are outside. On a closed, consistently oriented surface the
    signs then give back every crossing exactly. A voxel is *open* when the signs disagree with the ground truth
    on one of its 12 edges: on an open sheet or leaf (its two sides meet around the rim), where a wall is thinner
    than a voxel, or where the mesh is not manifold.

    Args:
        coords: `[N, 4] (b, i, j, k)` (or `[N, 3]`) int voxel coords at `resolution`, unique.
        edges: `[N, 3]` int in {-1, 0, +1}: the voxels' own edge flags (`SparseVoxels.edges`).
        resolution: R.
        fill_holes: only a ground-truth crossing that the signs miss or flip makes a voxel open; a crossing the
            signs add (where a nearly closed mesh has a hole smaller than a voxel) is kept, closing the hole.

    Returns:
        `(inside [N, 8] bool, open [N] bool)`: per voxel corner (`CORNER_OFFSETS` order) and per voxel.
    """
    index, num_corners = corner_index(coords, resolution)
    ends, voxel_edge, count = _edge_table(index)
    truth = torch.zeros(ends.shape[0], dtype=torch.long, device=index.device)
    truth[voxel_edge[:, list(OWN_EDGES)].reshape(-1)] = edges.long().reshape(-1)  # an edge's flag is its owner's
    crossed = truth != 0
    vote = torch.zeros(num_corners, dtype=torch.long, device=index.device)
    vote.index_add_(0, ends[crossed, 0], truth[crossed]).index_add_(0, ends[crossed, 1], -truth[crossed])
    sign = vote.sign()  # +1 inside, -1 outside, 0 undecided
    u, v = ends[~crossed, 0], ends[~crossed, 1]
    for _ in range(PROPAGATION_STEPS):
        undecided = sign == 0
        if not bool(undecided.any()):
            break
        spread = torch.zeros_like(sign).index_add_(0, u, sign[v]).index_add_(0, v, sign[u])
        sign = torch.where(undecided, spread.sign(), sign)
    inside = sign > 0
    derived = inside[ends[:, 0]].long() - inside[ends[:, 1]].long()  # +1 start inside only, -1 end inside only
    wrong = derived != truth
    if fill_holes:
        wrong &= crossed
    open_voxel = wrong[voxel_edge].any(dim=1)
    return inside[index], open_voxel


def corner_edges(
    coords: torch.Tensor,
    corner_logits: torch.Tensor,
    resolution: int,
    open_voxel: torch.Tensor | None = None,
    fallback_edges: torch.Tensor | None = None,
) -> torch.Tensor:
    """Edge flags from per-voxel corner logits, closed by construction where no voxel is open.

    The logits of a corner shared by several voxels are averaged; each boundary patch of corners takes one sign
    (module docstring); an edge is crossed where its corners' signs differ. Open voxels keep `fallback_edges`.

    Args:
        coords: `[N, 4] (b, i, j, k)` (or `[N, 3]`) int voxel coords at `resolution`, unique.
        corner_logits: `[N, 8]` float, > 0 inside, per voxel corner (`CORNER_OFFSETS` order).
        resolution: R.
        open_voxel: `[N]` bool, voxels whose edges come from `fallback_edges`; None: no voxel is open.
        fallback_edges: `[N, 3]` int8 in {-1, 0, +1}, needed with `open_voxel`.

    Returns:
        `[N, 3]` int8 in {-1, 0, +1}: each voxel's own edge flags (`SparseVoxels.edges`).
    """
    if corner_logits.shape != (coords.shape[0], 8):
        raise ValueError(f"corner_logits must be [N, 8] = [{coords.shape[0]}, 8], got {list(corner_logits.shape)}")
    if open_voxel is not None and fallback_edges is None:
        raise ValueError("open_voxel needs fallback_edges (the per-voxel edge flags of the open voxels)")
    index, num_corners = corner_index(coords, resolution)
    logit = average_corners(index, num_corners, corner_logits)
    ends, voxel_edge, count = _edge_table(index)
    patch_edge = count < 4
    if open_voxel is not None:  # patches stop at open voxels: an open sheet's two sides meet around its rim
        touches_open = torch.zeros_like(patch_edge)
        touches_open[voxel_edge[open_voxel].reshape(-1)] = True
        patch_edge &= ~touches_open
    boundary = ends[patch_edge]
    patch = connected_components(num_corners, boundary[:, 0], boundary[:, 1])
    on_boundary = torch.zeros(num_corners, dtype=torch.bool, device=index.device)
    on_boundary[boundary.reshape(-1)] = True
    patch_sum = torch.zeros(num_corners, dtype=logit.dtype, device=logit.device).index_add_(0, patch, logit)
    patch_size = torch.bincount(patch, minlength=num_corners).to(logit.dtype)
    logit = torch.where(on_boundary, patch_sum[patch] / patch_size[patch].clamp_min(1), logit)
    result = edges_from_signs(index, logit > 0)
    if open_voxel is not None:
        result = torch.where(open_voxel[:, None], fallback_edges.to(torch.int8), result)
    return result


def average_corners(index: torch.Tensor, num_corners: int, corner_logits: torch.Tensor) -> torch.Tensor:
    """Mean `[C]` of per-voxel corner values `[N, 8]` over the voxels sharing each corner (`corner_index`)."""
    values = corner_logits.reshape(-1)
    total = torch.zeros(num_corners, dtype=values.dtype, device=values.device).index_add_(0, index.reshape(-1), values)
    count = torch.bincount(index.reshape(-1), minlength=num_corners).to(values.dtype)
    return total / count.clamp_min(1)
