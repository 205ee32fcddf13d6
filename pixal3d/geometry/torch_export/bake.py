"""The texture bake in PyTorch: per-texel surface values, normal map, seam dilation (the GPU export path).

Conventions are `pixal3d.geometry.bake`'s (the CPU reference): glTF UVs, `[S, S, C] uint8` textures with row 0 at
the top, sRGB base colour + alpha, metallic-roughness with G = roughness and B = metallic (R = 255), tangent-space
normal map `rgb = (n + 1) / 2` in the interpolated `T, B = cross(N, T) * w, N` frame a glTF viewer rebuilds.

Values on the fine surface come from a `FineSurface`: when the mesh was not simplified they are the mesh's own
vertex values, interpolated (exactly what the CPU path's closest-point projection finds); otherwise the fine
vertices' attributes and normals are pooled into a sparse grid at the voxel resolution, split by the axis
direction of their normal, and each texel's surface point reads the cells of its own direction trilinearly
(renormalised over the cells present), the coarse mesh's own value where no cell is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LOOKUP_CHUNK = 4_000_000
_KINDS, _ANY = 7, 6  # grid entries per cell: the six axis directions, and all of them together


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """`[V, 3]` unit, angle-weighted vertex normals (trimesh's weighting); +z where they cancel."""
    p = vertices[faces].double()  # (F, 3, 3)
    normal = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    unit = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-30)
    out = torch.zeros(len(vertices), 3, dtype=torch.float64, device=vertices.device)
    for c in range(3):
        a = p[:, (c + 1) % 3] - p[:, c]
        b = p[:, (c + 2) % 3] - p[:, c]
        cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
        out.index_add_(0, faces[:, c], unit * torch.arccos(cos.clamp(-1, 1))[:, None])
    length = out.norm(dim=1, keepdim=True)
    out = torch.where(length > 1e-12, out / length.clamp(min=1e-30), out.new_tensor([0.0, 0.0, 1.0]))
    return out.float()


def vertex_tangents(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor,
                    normals: torch.Tensor) -> torch.Tensor:
    """`[V, 4]` glTF tangents from UV derivatives (as `bake.vertex_tangents`): xyz unit along +u, w = +/-1."""
    p, uv = vertices[faces].double(), uvs[faces].double()
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    r = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = torch.where(r.abs() > 1e-20, r, torch.full_like(r, 1e-20))
    dp_du = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) / r[:, None]
    dp_dv = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) / r[:, None]
    area = 0.5 * torch.linalg.cross(e1, e2, dim=-1).norm(dim=1, keepdim=True)
    t_face, b_face = _unit(dp_du) * area, _unit(-dp_dv) * area
    t_acc = torch.zeros(len(vertices), 3, dtype=torch.float64, device=vertices.device)
    b_acc = torch.zeros_like(t_acc)
    for c in range(3):
        t_acc.index_add_(0, faces[:, c], t_face)
        b_acc.index_add_(0, faces[:, c], b_face)
    n = normals.double()
    t = t_acc - n * (n * t_acc).sum(1, keepdim=True)
    helper = torch.where(n[:, :1].abs() < 0.9, n.new_tensor([1.0, 0.0, 0.0]), n.new_tensor([0.0, 1.0, 0.0]))
    fallback = torch.linalg.cross(n, helper, dim=-1)
    t = _unit(torch.where(t.norm(dim=1, keepdim=True) > 1e-12, t, fallback))
    w = torch.where((torch.linalg.cross(n, t, dim=-1) * b_acc).sum(1) < 0, -1.0, 1.0)
    return torch.cat([t, w[:, None]], 1).float()


def direction_class(normals: torch.Tensor) -> torch.Tensor:
    """`[M] int64` in 0..5: the axis direction (+x, -x, +y, -y, +z, -z) each normal is closest to."""
    axis = normals.abs().argmax(dim=1)
    return axis * 2 + (normals.gather(1, axis[:, None])[:, 0] < 0).long()


@dataclass
class FineSurface:
    """Attributes and normals of the fine surface, read at points near it (see the module docstring).

    The grid keeps the fine vertices apart by the axis direction their normal is closest to, and a texel reads
    the cells of its own (coarse) normal's direction: the two sides of a thin part, which share voxels, do not
    average into each other. Where none of those is near, it reads the cells of any direction.
    """

    keys: torch.Tensor | None
    """`[K] int64` sorted keys `cell * 7 + direction` (6: any direction) of the sparse grid, or None: use the coarse
    mesh's values."""
    values: torch.Tensor | None
    """`[K, 6 + 3]` per key: mean attributes, summed unit normals."""
    resolution: int

    @classmethod
    def from_vertices(cls, vertices: torch.Tensor, attrs: torch.Tensor, normals: torch.Tensor,
                      resolution: int) -> FineSurface:
        cell = ((vertices + 0.5) * resolution).floor().long().clamp(0, resolution - 1)
        base = ((cell[:, 0] * resolution + cell[:, 1]) * resolution + cell[:, 2]) * _KINDS
        # Each vertex counts twice: in its direction's cell, and in the cell's "any direction" entry.
        key = torch.cat([base + direction_class(normals), base + _ANY])
        keys, inverse = torch.unique(key, return_inverse=True)
        total = torch.zeros(len(keys), 9, dtype=torch.float32, device=vertices.device)
        total.index_add_(0, inverse, torch.cat([attrs, normals], 1).repeat(2, 1))
        count = torch.bincount(inverse, minlength=len(keys)).clamp(min=1)[:, None]
        total[:, :6] /= count
        return cls(keys, total, resolution)

    def sample(self, points: torch.Tensor, normals: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """`[M, 9]` (attrs, unit normal) at `points [M, 3]` whose surface faces `normals [M, 3]`; `fallback
        [M, 9]` where no cell of that direction is near."""
        out = torch.empty_like(fallback)
        for s in range(0, len(points), _LOOKUP_CHUNK):
            part = slice(s, s + _LOOKUP_CHUNK)
            value, found = self._sample(points[part], direction_class(normals[part]))
            if not bool(found.all()):  # no cell of this direction near: any direction, then the coarse value
                lost = ~found
                anywhere = torch.full((int(lost.sum()),), _ANY, dtype=torch.long, device=points.device)
                other, found_any = self._sample(points[part][lost], anywhere)
                value[lost] = torch.where(found_any[:, None], other, fallback[part][lost])
            out[part] = value
        return out

    def _sample(self, points: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(values [M, 9], found [M] bool)` from the cells of `direction [M]` (0..5, or `_ANY`)."""
        r = self.resolution
        g = (points + 0.5) * r - 0.5  # cell centres on integers
        base = g.floor().long()
        frac = g - base
        total = torch.zeros(len(points), 9, device=points.device)
        weight_sum = torch.zeros(len(points), device=points.device)
        for corner in range(8):
            bit = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=points.device)
            cell = base + bit
            weight = torch.where(bit.bool(), frac, 1 - frac).prod(dim=1)
            inside = ((cell >= 0) & (cell < r)).all(dim=1)
            cell = cell.clamp(0, r - 1)
            key = ((cell[:, 0] * r + cell[:, 1]) * r + cell[:, 2]) * _KINDS + direction
            index = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
            weight = weight * (inside & (self.keys[index] == key))
            total += weight[:, None] * self.values[index]
            weight_sum += weight
        result = total / weight_sum.clamp(min=1e-12)[:, None]
        result[:, 6:] = _unit(result[:, 6:])
        return result, weight_sum > 1e-8


def texel_values(
    vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, normals: torch.Tensor,
    tangents: torch.Tensor, attrs: torch.Tensor, fine: FineSurface, face_id: torch.Tensor, bary: torch.Tensor,
    recolor=None, sampler=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(covered [M] flat texel ids, values [M, 10] in [0, 1])`: RGBA, metallic-roughness (1, rough, metal) and
    the tangent-space normal `(n + 1) / 2` of every covered texel."""
    flat_face = face_id.reshape(-1)
    covered = torch.nonzero(flat_face >= 0).squeeze(1)
    fid, w = flat_face[covered], bary.reshape(-1, 3)[covered]
    corners = faces[fid]  # (M, 3)
    per_vertex = torch.cat([vertices, normals, tangents[:, :3], attrs], 1)  # (V, 15)
    interp = torch.einsum("mc,mcd->md", w, per_vertex[corners])
    point = interp[:, 0:3]
    n = _unit(interp[:, 3:6])
    t = _unit(interp[:, 6:9] - n * (n * interp[:, 6:9]).sum(1, keepdim=True))
    sign = torch.where(tangents[:, 3][corners].sum(1) < 0, -1.0, 1.0)
    b = torch.linalg.cross(n, t, dim=-1) * sign[:, None]
    coarse = torch.cat([interp[:, 9:15], n], 1)
    fine_values = coarse if fine.keys is None else fine.sample(point, n, coarse)
    attr, fine_n = fine_values[:, :6], _unit(fine_values[:, 6:9])
    if fine.keys is None:
        fine_n = n
    if sampler is not None:
        attr = _call_sampler(sampler, point)
    tangent_space = torch.stack([(fine_n * t).sum(1), (fine_n * b).sum(1), (fine_n * n).sum(1)], 1)
    tangent_space = torch.where(tangent_space.norm(dim=1, keepdim=True) < 1e-6,
                                tangent_space.new_tensor([0.0, 0.0, 1.0]), tangent_space)
    tangent_space = _unit(tangent_space)
    if recolor is not None:
        colors, weight = recolor(point, fine_n)  # tensors in, tensors (or numpy arrays) out
        colors = torch.as_tensor(colors, dtype=attr.dtype, device=attr.device)
        weight = torch.as_tensor(weight, dtype=attr.dtype, device=attr.device)[:, None]
        attr = torch.cat([attr[:, :3] * (1 - weight) + colors * weight, attr[:, 3:]], 1)
    attr = attr.nan_to_num(0.0).clamp(0, 1)
    ones = torch.ones(len(attr), 1, device=attr.device)
    values = torch.cat([attr[:, :3], attr[:, 5:6], ones, attr[:, 4:5], attr[:, 3:4], tangent_space * 0.5 + 0.5], 1)
    return covered, values


def compose(size: int, covered: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`[S, S, C] uint8` with the quantised `values` at the `covered` texels and every other texel filled from the
    nearest covered one (seam dilation, `nearest_covered`)."""
    image = torch.zeros(size * size, values.shape[1], dtype=torch.uint8, device=values.device)
    image[covered] = torch.round(values * 255.0).clamp(0, 255).to(torch.uint8)
    mask = torch.zeros(size * size, dtype=torch.bool, device=values.device)
    mask[covered] = True
    source = nearest_covered(mask.reshape(size, size))
    if source is not None:
        image = image[source]
    return image.reshape(size, size, -1)


def nearest_covered(mask: torch.Tensor) -> torch.Tensor | None:
    """`[S*S] int64`: for each texel the flat index of a nearest covered texel (jump flooding with steps S/2 ... 1,
    then one more step of 1); None when every texel or none is covered.

    Seeds are kept as int32 row and column planes; an empty seed sits at `_FAR`, so that its squared distance is
    larger than any real one without a mask (int32 holds it up to S = 8192).
    """
    size = mask.shape[0]
    if bool(mask.all()) or not bool(mask.any()):
        return None
    device = mask.device
    rows = torch.arange(size, device=device, dtype=torch.int32)[:, None].expand(size, size)
    cols = torch.arange(size, device=device, dtype=torch.int32)[None, :].expand(size, size)
    far = torch.full((size, size), _FAR, dtype=torch.int32, device=device)
    seed_r = torch.where(mask, rows, far)
    seed_c = torch.where(mask, cols, far)
    best_d = (seed_r - rows) ** 2 + (seed_c - cols) ** 2
    steps = [2**k for k in range(int(math.log2(max(size - 1, 1))), -1, -1)] + [1]
    for k in steps:
        pad_r = torch.nn.functional.pad(seed_r, (k, k, k, k), value=_FAR)
        pad_c = torch.nn.functional.pad(seed_c, (k, k, k, k), value=_FAR)
        new_r, new_c, new_d = seed_r, seed_c, best_d
        for dy in (0, k, 2 * k):
            for dx in (0, k, 2 * k):
                if dy == k and dx == k:
                    continue
                cand_r = pad_r[dy:dy + size, dx:dx + size]
                cand_c = pad_c[dy:dy + size, dx:dx + size]
                d = (cand_r - rows) ** 2 + (cand_c - cols) ** 2
                better = d < new_d
                new_r = torch.where(better, cand_r, new_r)
                new_c = torch.where(better, cand_c, new_c)
                new_d = torch.where(better, d, new_d)
        seed_r, seed_c, best_d = new_r, new_c, new_d
    return (seed_r.long() * size + seed_c.long()).reshape(-1)


_FAR = -20_000


def _call_sampler(sampler, points: torch.Tensor) -> torch.Tensor:
    out = []
    for s in range(0, len(points), _LOOKUP_CHUNK):
        values = torch.as_tensor(sampler(points[s:s + _LOOKUP_CHUNK].float().cpu()))
        if values.shape != (len(points[s:s + _LOOKUP_CHUNK]), 6):
            raise ValueError(f"attribute sampler must return [M, 6] for [M, 3] points, got {tuple(values.shape)}")
        out.append(values.to(points.device, torch.float32))
    return torch.cat(out) if out else points.new_zeros(0, 6)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
