"""Batched triangle / voxel and triangle / grid-edge intersection, in grid units (used by `dual_grid`).

Grid units: a point `g` in `[0, R]^3` at resolution `R`; voxel `(i, j, k)` is the unit box
`[i, i+1] x [j, j+1] x [k, k+1]` and the primal grid edges are the unit segments between integer corners.
Everything here works on batches of triangles `[M, 3, 3]` (triangle, corner, xyz) with no Python loop over
triangles or voxels; loops run over a fixed small number of axes, corners or regions.

- `subdivide_triangles`: longest-edge bisection to a maximum edge length.
- `candidate_voxels`, `triangle_box_overlap` (SAT), `closest_point_barycentric`: which voxels a triangle touches
  and its point nearest each voxel's centre.
- `grid_line_crossings`, `edge_crossings`, `merge_crossings`: where triangles pierce primal edges, and one sign
  per crossed edge.
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
        # Index lists instead of boolean masks: two host syncs per round instead of seven, same rows in order.
        done, going = torch.nonzero(~split).squeeze(1), torch.nonzero(split).squeeze(1)
        done_tri.append(triangles[done])
        done_src.append(source[done])
        done_bary.append(bary[done])
        triangles, source, bary, longest = triangles[going], source[going], bary[going], longest[going]
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
    # The axes unit_a x edge_e have two non-zero components, (b, c) = (a + 1, a + 2) % 3: (-edge_c, edge_b). So
    # each projection is two products, written out: no cross products or batched 3x3 matmuls, which are slow
    # (and, for bmm, parallelise poorly) on millions of tiny triangles.
    b, c = [1, 2, 0], [2, 0, 1]
    eb, ec = edge[:, :, None, b], edge[:, :, None, c]  # (M, 3 edges, 1, 3 axes)
    proj = eb * v[:, None, :, c] - ec * v[:, None, :, b]  # (M, 3 edges, 3 vertices, 3 axes)
    radius = half * (eb.abs() + ec.abs())[:, :, 0]  # (M, 3 edges, 3 axes)
    overlap &= ((proj.amin(2) <= radius + EPS) & (proj.amax(2) >= -radius - EPS)).flatten(1).all(dim=1)
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
    hit = torch.nonzero(hit).squeeze(1)  # one host sync for the four selections below
    tri_idx, lattice, bary = tri_idx[hit], lattice[hit], torch.stack([l0, l1, l2], 1)[hit]
    point = (bary[:, :, None] * triangles[tri_idx]).sum(1)
    point[:, b], point[:, c] = lattice[:, 0].to(point.dtype), lattice[:, 1].to(point.dtype)
    # The normal's axis component has the sign of the projected area (b, c, axis is right-handed).
    sign = torch.sign(det[hit]).to(torch.int8)
    return tri_idx, point, sign


def grid_keys(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Hash `[N, 3]` integer voxel coords (each in `[0, R)`) to `[N]` int64 `(i * R + j) * R + k`."""
    coords = coords.long()
    return (coords[:, 0] * resolution + coords[:, 1]) * resolution + coords[:, 2]


def lookup_keys(sorted_keys: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of `query` keys in `sorted_keys` and whether each was found: `([M] int64, [M] bool)`."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query), torch.zeros_like(query, dtype=torch.bool)
    index = torch.searchsorted(sorted_keys, query).clamp(max=sorted_keys.numel() - 1)
    return index, sorted_keys[index] == query


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows with `counts [T]` items each: `(row [K] int64, item [K] int64 in [0, counts[row]))`."""
    row = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)
    start = torch.cumsum(counts, 0) - counts
    return row, torch.arange(row.shape[0], device=counts.device) - start[row]


def candidate_voxels(triangles: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxels each triangle may touch: `(triangle [K] int64, voxel [K, 3] int64)`, a superset for the SAT.

    Columns along the triangle's dominant normal axis `c` over its footprint in the other two axes; in each column
    only the voxels between the plane's lowest and highest point over the column (clamped to the triangle's extent
    in `c`), so a large or slanted triangle costs about twice its area in voxels, not its bounding box.
    """
    r, device = resolution, triangles.device
    normal = torch.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0], dim=-1)
    dom = normal.abs().argmax(dim=1)
    perm = torch.stack([(dom + 1) % 3, (dom + 2) % 3, dom], dim=1)  # (T, 3): (a, b, c)
    p = triangles.gather(2, perm[:, None, :].expand(-1, 3, -1))  # coordinates in (a, b, c) order
    n = normal.gather(1, perm)
    lo = torch.floor(p.amin(dim=1) - 1e-5).long().clamp(0, r - 1)  # (T, 3)
    hi = torch.floor(p.amax(dim=1) + 1e-5).long().clamp(0, r - 1)
    ext = hi[:, :2] - lo[:, :2] + 1
    tri, item = _expand(ext.prod(dim=1))
    cell = lo[tri, :2] + torch.stack([item // ext[tri, 1], item % ext[tri, 1]], dim=1)  # (K, 2)
    # Plane height c(a, b) = (n . p0 - n_a a - n_b b) / n_c at the column's four corners.
    nt, nc = n[tri], n[tri, 2]
    flat = nc.abs() > 1e-12
    offset = (nt * p[tri, 0]).sum(-1)
    corners = cell[:, None, :].to(p.dtype) + torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], device=device)
    height = (offset[:, None] - (nt[:, None, :2] * corners).sum(-1)) / nc.where(flat, torch.ones_like(nc))[
        :, None
    ]
    zlo = torch.where(flat, height.amin(1), p[tri, :, 2].amin(1)).clamp(min=p[tri, :, 2].amin(1))
    zhi = torch.where(flat, height.amax(1), p[tri, :, 2].amax(1)).clamp(max=p[tri, :, 2].amax(1))
    zlo = torch.floor(zlo - 1e-5).long().clamp(0, r - 1)
    zhi = torch.floor(zhi + 1e-5).long().clamp(0, r - 1)
    column, level = _expand((zhi - zlo + 1).clamp(min=0))
    local = torch.cat([cell[column], (zlo[column] + level)[:, None]], dim=1)  # (K', 3) in (a, b, c) order
    tri = tri[column]
    voxel = torch.zeros_like(local).scatter_(1, perm[tri], local)  # back to (x, y, z)
    return tri, voxel


def edge_crossings(sub: torch.Tensor, source: torch.Tensor, resolution: int) -> torch.Tensor:
    """Crossings of one chunk of sub-triangles with primal grid edges.

    Returns:
        `[K, 7]` float64 rows `(edge key, source face, sign, t, normal xyz)`: edge key = voxel key of the edge's
        start corner * 3 + axis, `t` in [0, 1) the crossing's position along the edge, the unit face normal.
        Edges whose four voxels would leave the grid are dropped.
    """
    normal = torch.cross(sub[:, 1] - sub[:, 0], sub[:, 2] - sub[:, 0], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    rows = []
    for axis in range(3):
        tri, point, sign = grid_line_crossings(sub, axis)
        # A crossing within rounding of a grid corner belongs to the edge starting there, whichever side the
        # arithmetic put it: a face lying on a grid plane then gives one consistent layer of quads.
        corner = torch.floor(point + 1e-4).long()
        t = (point[:, axis] - corner[:, axis].to(point.dtype)).clamp(min=0.0)
        others = [(axis + 1) % 3, (axis + 2) % 3]
        ok = (corner[:, axis] >= 0) & (corner[:, axis] < resolution)
        ok &= ((corner[:, others] >= 1) & (corner[:, others] < resolution)).all(dim=1)
        ok = torch.nonzero(ok).squeeze(1)  # one host sync for the selections below
        key = grid_keys(corner[ok], resolution) * 3 + axis
        columns = [key.double(), source[tri[ok]].double(), sign[ok].double(), t[ok].double()]
        rows.append(torch.cat([torch.stack(columns, 1), normal[tri[ok]].double()], dim=1))
    return torch.cat(rows)


def index_sum(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """`[size, ...]` sums of the rows of `values [K, ...]` by `index [K]`, in the same order on every run.

    The CPU adds rows in order (`index_add_`). CUDA's `index_add_` adds floats with atomics in whatever order the
    threads arrive, so its sums vary in the last bits from run to run; `index_put_(accumulate=True)` sorts the
    indices and adds each run of equal ones in one thread, so the same inputs give the same bytes.
    """
    out = torch.zeros(size, *values.shape[1:], dtype=values.dtype, device=values.device)
    if values.device.type == "cuda":
        return out.index_put_((index,), values, accumulate=True)
    return out.index_add_(0, index, values)


def merge_crossings(rows: torch.Tensor, num_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One sign per crossed edge: `(edge keys [E] int64, sign [E] int8 in {-1, +1})`.

    A face crossing an edge is counted once (a crossing on a shared triangle edge is seen by both sub-triangles),
    and the edge's sign is the sign of the sum over faces, so an edge entering and leaving a solid within one
    voxel (near a sharp edge) carries no quad. One tie is kept: two opposite, nearly anti-parallel faces (a
    wall thinner than a voxel) keep the crossing nearest the edge's start, so thin parts keep one surface
    instead of vanishing.
    """
    edge, face, sign, t = rows[:, 0].long(), rows[:, 1].long(), rows[:, 2], rows[:, 3]
    pair, first = torch.unique(edge * num_faces + face, return_inverse=True)
    sign = torch.zeros(pair.shape[0], dtype=sign.dtype, device=sign.device).scatter_(0, first, sign)
    normal = torch.zeros(pair.shape[0], 3, dtype=rows.dtype, device=rows.device).index_copy_(
        0, first, rows[:, 4:]
    )
    t = torch.full_like(sign, 2.0).scatter_reduce_(0, first, t, reduce="amin")
    edge = pair // num_faces
    keys, inverse = torch.unique(edge, return_inverse=True)
    total = torch.zeros(keys.shape[0], dtype=sign.dtype, device=sign.device).index_add_(0, inverse, sign)
    spread = index_sum(inverse, normal, keys.shape[0])
    count = torch.zeros_like(total).index_add_(0, inverse, torch.ones_like(sign))
    # |sum of unit normals| / count: ~0 for two anti-parallel faces (a thin wall), ~0.7 for a 90-degree edge.
    thin_wall = spread.norm(dim=1) < 0.35 * count
    t_min = torch.full_like(total, 2.0).scatter_reduce_(0, inverse, t, reduce="amin")
    nearest = torch.zeros_like(total).index_add_(0, inverse, sign * (t == t_min[inverse]))
    result = torch.sign(torch.where(total != 0, total, nearest * thin_wall)).to(torch.int8)
    return keys[result != 0], result[result != 0]
