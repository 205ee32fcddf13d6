"""Batched triangle / voxel and triangle / grid-line intersection, in grid units.

Grid units: a point `g` in `[0, R]^3`; voxel `(i, j, k)` is the unit box `[i, i+1] x [j, j+1] x [k, k+1]` and the
primal grid edges are the unit segments between integer corners. Every function here works on batches of
triangles `[M, 3, 3]` (triangle, corner, xyz) with no Python loop over triangles; loops run over a fixed small
number of planes, axes or polygon slots.
"""

from __future__ import annotations

import torch

# Tolerance, in voxels, that closes the box and the triangles so that touching counts as intersecting; a missed
# touch would leave a hole in the dual mesh, a spurious one only a vertex no quad uses.
EPS = 1e-5


def subdivide_triangles(
    triangles: torch.Tensor, max_edge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split triangles by longest-edge bisection until no edge is longer than `max_edge`.

    Bisection keeps each child's winding and plane, so normals and crossing signs are unchanged.

    Args:
        triangles: `[F, 3, 3]` float, grid units.
        max_edge: longest allowed edge, grid units.

    Returns:
        `(sub [T, 3, 3], source [T] int64 index into the input, bary [T, 3, 3])`: `bary[t, c]` holds the
        barycentric coordinates of corner `c` of `sub[t]` in triangle `source[t]`.
    """
    device = triangles.device
    source = torch.arange(triangles.shape[0], device=device)
    bary = torch.eye(3, device=device, dtype=triangles.dtype).expand(triangles.shape[0], 3, 3).clone()
    done_tri, done_src, done_bary = [], [], []
    while triangles.shape[0] > 0:
        length = (triangles.roll(-1, dims=1) - triangles).norm(dim=-1)  # (T, 3): edge c goes c -> c+1
        longest = length.argmax(dim=1)
        split = length.gather(1, longest[:, None])[:, 0] > max_edge
        done_tri.append(triangles[~split])
        done_src.append(source[~split])
        done_bary.append(bary[~split])
        triangles, source, bary, longest = triangles[split], source[split], bary[split], longest[split]
        # Roll each triangle so that its longest edge is corners 0 -> 1 (a cyclic roll keeps the winding).
        order = (longest[:, None] + torch.arange(3, device=device)) % 3
        triangles = triangles.gather(1, order[:, :, None].expand(-1, -1, 3))
        bary = bary.gather(1, order[:, :, None].expand(-1, -1, 3))
        mid_t = 0.5 * (triangles[:, 0] + triangles[:, 1])
        mid_b = 0.5 * (bary[:, 0] + bary[:, 1])
        triangles = torch.cat(
            [
                torch.stack([triangles[:, 0], mid_t, triangles[:, 2]], 1),
                torch.stack([mid_t, triangles[:, 1], triangles[:, 2]], 1),
            ]
        )
        bary = torch.cat(
            [torch.stack([bary[:, 0], mid_b, bary[:, 2]], 1), torch.stack([mid_b, bary[:, 1], bary[:, 2]], 1)]
        )
        source = torch.cat([source, source])
    return torch.cat(done_tri), torch.cat(done_src), torch.cat(done_bary)


def triangle_box_overlap(local: torch.Tensor) -> torch.Tensor:
    """Separating-axis test of triangles against the unit box `[0, 1]^3` (closed, grown by `EPS`).

    Args:
        local: `[M, 3, 3]` float, triangle corners relative to the box's min corner.

    Returns:
        `[M]` bool, True where triangle and box overlap. The 13 candidate axes are the 3 box normals, the triangle
        normal and the 9 cross products of box and triangle edge directions (Akenine-Moller's test).
    """
    half = 0.5 + EPS
    v = local - 0.5  # (M, 3, 3), box centred at the origin
    overlap = ((v.amin(dim=1) <= half) & (v.amax(dim=1) >= -half)).all(dim=1)
    edge = v.roll(-1, dims=1) - v  # (M, 3, 3)
    normal = torch.cross(edge[:, 0], edge[:, 1], dim=-1)  # (M, 3)
    radius = half * normal.abs().sum(-1)
    overlap &= (normal * v[:, 0]).sum(-1).abs() <= radius + EPS * normal.norm(dim=-1)
    eye = torch.eye(3, device=v.device, dtype=v.dtype)
    # axes[m, a, e] = unit_a x edge_e: (M, 3, 3, 3)
    axes = torch.cross(
        eye[None, :, None, :].expand(v.shape[0], 3, 3, 3), edge[:, None, :, :].expand(-1, 3, 3, 3), dim=-1
    )
    axes = axes.reshape(-1, 9, 3)
    proj = torch.einsum("mac,mvc->mav", axes, v)  # (M, 9, 3): every vertex on every axis
    radius = half * axes.abs().sum(-1)  # (M, 9)
    overlap &= ((proj.amin(-1) <= radius + EPS) & (proj.amax(-1) >= -radius - EPS)).all(dim=1)
    return overlap


def closest_point_barycentric(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Barycentric coordinates of the point of each triangle closest to each point (Ericson's region test).

    Args:
        points: `[M, 3]` float.
        triangles: `[M, 3, 3]` float.

    Returns:
        `[M, 3]` float, non-negative, summing to 1; the closest point is `(bary[:, :, None] * triangles).sum(1)`.
    """
    a, b, c = triangles.unbind(1)
    ab, ac = b - a, c - a
    ap, bp, cp = points - a, points - b, points - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def safe(x: torch.Tensor) -> torch.Tensor:
        return x.where(x.abs() > 1e-20, torch.full_like(x, 1e-20))

    def bary(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.stack([u, v, w], dim=-1)

    zero, one = torch.zeros_like(d1), torch.ones_like(d1)
    denom = safe(va + vb + vc)
    result = bary(va / denom, vb / denom, vc / denom)  # inside the face
    # Edge and vertex regions, lowest priority first so that the tests that must win are applied last.
    w_bc = (d4 - d3) / safe((d4 - d3) + (d5 - d6))
    in_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    result = torch.where(in_bc[:, None], bary(zero, 1 - w_bc, w_bc), result)
    w_ac = d2 / safe(d2 - d6)
    result = torch.where(((vb <= 0) & (d2 >= 0) & (d6 <= 0))[:, None], bary(1 - w_ac, zero, w_ac), result)
    v_ab = d1 / safe(d1 - d3)
    result = torch.where(((vc <= 0) & (d1 >= 0) & (d3 <= 0))[:, None], bary(1 - v_ab, v_ab, zero), result)
    result = torch.where(((d6 >= 0) & (d5 <= d6))[:, None], bary(zero, zero, one), result)
    result = torch.where(((d3 >= 0) & (d4 <= d3))[:, None], bary(zero, one, zero), result)
    result = torch.where(((d1 <= 0) & (d2 <= 0))[:, None], bary(one, zero, zero), result)
    return result.clamp(0, 1)


def grid_line_crossings(
    triangles: torch.Tensor, axis: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where grid lines parallel to `axis` pierce triangles.

    A grid line along x is `{(t, u, w): t real}` for integers `u, w` (likewise for y, z with the other two axes
    in cyclic order). The inside test is closed (grown by `EPS`), so a line through a shared edge is reported by
    both triangles; callers merge duplicates.

    Args:
        triangles: `[T, 3, 3]` float, grid units, each spanning at most a few voxels.
        axis: 0, 1 or 2.

    Returns:
        `(triangle [K] int64, point [K, 3] float, sign [K] int8)`: the crossing triangle, the crossing point in
        grid units, and the sign of the triangle normal's `axis` component (+1 or -1; triangles parallel to the
        axis are skipped).
    """
    device = triangles.device
    b, c = (axis + 1) % 3, (axis + 2) % 3
    tri2 = triangles[:, :, [b, c]]  # (T, 3, 2)
    lo = torch.ceil(tri2.amin(dim=1) - EPS).long()  # (T, 2)
    hi = torch.floor(tri2.amax(dim=1) + EPS).long()
    extent = (hi - lo + 1).clamp(min=0)  # (T, 2)
    per_tri = extent[:, 0] * extent[:, 1]
    tri_idx = torch.repeat_interleave(torch.arange(triangles.shape[0], device=device), per_tri)
    start = torch.cumsum(per_tri, 0) - per_tri
    local = torch.arange(tri_idx.shape[0], device=device) - start[tri_idx]
    ext = extent[tri_idx]
    lattice = lo[tri_idx] + torch.stack([local // ext[:, 1], local % ext[:, 1]], dim=1)  # (K, 2)
    q = tri2[tri_idx]  # (K, 3, 2)
    d1, d2, dp = q[:, 1] - q[:, 0], q[:, 2] - q[:, 0], lattice.to(q.dtype) - q[:, 0]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]  # twice the signed projected area
    l1 = (dp[:, 0] * d2[:, 1] - dp[:, 1] * d2[:, 0]) / det.where(det != 0, torch.ones_like(det))
    l2 = (d1[:, 0] * dp[:, 1] - d1[:, 1] * dp[:, 0]) / det.where(det != 0, torch.ones_like(det))
    l0 = 1.0 - l1 - l2
    # Barycentric slack; the triangles span a few voxels, so this is about EPS voxels.
    tol = EPS
    hit = (det.abs() > 1e-9) & (l0 >= -tol) & (l1 >= -tol) & (l2 >= -tol)
    tri_idx, lattice, bary = tri_idx[hit], lattice[hit], torch.stack([l0, l1, l2], 1)[hit]
    point = (bary[:, :, None] * triangles[tri_idx]).sum(1)
    point[:, b], point[:, c] = lattice[:, 0].to(point.dtype), lattice[:, 1].to(point.dtype)
    # The normal's axis component has the sign of the projected area (b, c, axis is right-handed).
    sign = torch.sign(det[hit]).to(torch.int8)
    return tri_idx, point, sign
