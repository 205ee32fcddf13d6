"""Sparse PBR voxels -> mesh, and attribute lookup in the sparse volume (the reading side of DESIGN section 4).

- `voxels_to_mesh`: one quad per crossing edge from its four voxels, found by a hashed-coordinate gather.
- `sample_attributes`: trilinear lookup of the sparse attribute volume at arbitrary points (used by the bake).

The writing side (mesh -> voxels) is `pixal3d.geometry.dual_grid`; frames and units are the same.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import trimesh

from pixal3d.camera import coords_to_centers
from pixal3d.errors import InputError
from pixal3d.geometry.intersect import grid_keys, lookup_keys
from pixal3d.geometry.voxels import SparseVoxels

logger = logging.getLogger(__name__)


def voxels_to_mesh(voxels: SparseVoxels) -> trimesh.Trimesh:
    """Dual-grid mesh of a voxel set: one quad per crossed edge, split into two triangles.

    The edge along axis `a` at corner `c` is shared by the voxels `c`, `c - e_b`, `c - e_c`, `c - e_b - e_c`
    (`b, c` the next two axes in cyclic order); taken in that cycle the quad faces +a, and it is reversed for
    sign -1. Each quad is split along the diagonal whose two triangles' normals agree best (this keeps folds on
    sharp features). Quads with a missing voxel are skipped.

    Returns:
        `trimesh.Trimesh` in the volume frame (not processed: no vertex merging). Vertices are the dual vertices of
        the voxels that some face uses. When `voxels.attrs` is set, `vertex_attributes["pbr"]` holds `[V, 6]`
        float32 (sRGB base colour, metallic, roughness, alpha) and the visual carries RGBA vertex colours.
    """
    r, n = voxels.resolution, len(voxels)
    keys = grid_keys(voxels.coords, r)
    order = torch.argsort(keys)
    sorted_keys = keys[order]
    quads = []
    for axis in range(3):
        sign = voxels.edges[:, axis]
        crossed = torch.nonzero(sign).squeeze(1)
        corner = voxels.coords[crossed].long()
        ring = []
        for db, dc in ((-1, -1), (0, -1), (0, 0), (-1, 0)):  # counter-clockwise seen from +axis
            shifted = corner.clone()
            shifted[:, (axis + 1) % 3] += db
            shifted[:, (axis + 2) % 3] += dc
            index, found = lookup_keys(sorted_keys, grid_keys(shifted.clamp(0, r - 1), r))
            found &= (shifted >= 0).all(dim=1)
            ring.append(torch.where(found, order[index], torch.full_like(index, -1)))
        ring = torch.stack(ring, dim=1)  # (E, 4)
        ring = torch.where((sign[crossed] > 0)[:, None], ring, ring.flip(1))
        quads.append(ring[(ring >= 0).all(dim=1)])
    quads = torch.cat(quads) if quads else torch.zeros(0, 4, dtype=torch.long)
    positions = voxels.positions()
    faces = _split_quads(positions, quads)
    # Keep only the voxels some face uses; renumber by a prefix sum (no sort).
    in_use = torch.zeros(n, dtype=torch.bool, device=faces.device)
    in_use[faces.reshape(-1)] = True
    used = torch.nonzero(in_use).squeeze(1)
    faces = (torch.cumsum(in_use, 0) - 1)[faces]
    vertices = positions[used].cpu().numpy().astype(np.float64)
    faces_np = faces.reshape(-1, 3).cpu().numpy()
    if voxels.attrs is None:
        return trimesh.Trimesh(vertices, faces_np, process=False)
    attrs = voxels.attrs[used].float().cpu().numpy()
    rgba = np.round(np.concatenate([attrs[:, :3], attrs[:, 5:6]], axis=1) * 255).astype(np.uint8)
    logger.debug("dual mesh of %d voxels: %d vertices, %d faces", n, len(vertices), len(faces_np))
    return trimesh.Trimesh(
        vertices, faces_np, process=False, vertex_colors=rgba, vertex_attributes={"pbr": attrs}
    )


def _split_quads(positions: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """Triangles `[2Q, 3]` int64 from quads `[Q, 4]`, using the diagonal whose triangle normals agree best."""
    p = positions[quads]  # (Q, 4, 3)

    def agreement(a: tuple[int, int, int], b: tuple[int, int, int]) -> torch.Tensor:
        na = torch.cross(p[:, a[1]] - p[:, a[0]], p[:, a[2]] - p[:, a[0]], dim=-1)
        nb = torch.cross(p[:, b[1]] - p[:, b[0]], p[:, b[2]] - p[:, b[0]], dim=-1)
        return (na * nb).sum(-1) / (na.norm(dim=-1) * nb.norm(dim=-1)).clamp(min=1e-12)

    use_02 = agreement((0, 1, 2), (0, 2, 3)) >= agreement((0, 1, 3), (1, 2, 3))
    first = torch.where(use_02[:, None], quads[:, [0, 1, 2]], quads[:, [0, 1, 3]])
    second = torch.where(use_02[:, None], quads[:, [0, 2, 3]], quads[:, [1, 2, 3]])
    return torch.cat([first, second])


def sample_attributes(
    voxels: SparseVoxels,
    points: torch.Tensor,
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Trilinear sample of the sparse attribute volume.

    Values live at voxel centres. Each point blends the (up to 8) surrounding voxel centres that exist, with
    trilinear weights renormalised over those present; a point with none of its 8 neighbours present takes the
    nearest voxel's value (KD-tree on the CPU).

    Args:
        voxels: a voxel set with `attrs`.
        points: `[M, 3]` float, volume frame.
        groups: `(voxel group [N], point group [M])` int64, to sample several voxel sets in one call: each point
            only sees the voxels of its own group, with the same result as a call per group.

    Returns:
        `[M, 6]` float32 attributes on `points.device`.
    """
    if voxels.attrs is None:
        raise InputError(
            "these voxels carry no attributes (attrs is None); voxelise with with_attributes=True"
        )
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"points must have shape [M, 3], got {list(points.shape)}")
    r, device = voxels.resolution, voxels.device
    voxel_group, point_group = groups if groups is not None else (0, 0)
    keys = grid_keys(voxels.coords, r) + voxel_group * r**3  # the group is the key's high part
    order = torch.argsort(keys)
    sorted_keys, attrs = keys[order], voxels.attrs[order].float()
    g = (points.to(device).float() + 0.5) * r - 0.5  # voxel centres at integers
    base = torch.floor(g).long()
    frac = g - base
    total = torch.zeros(points.shape[0], 6, device=device)
    weight_sum = torch.zeros(points.shape[0], device=device)
    for corner in range(8):
        bit = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=device)
        neighbour = base + bit
        weight = torch.where(bit.bool(), frac, 1 - frac).prod(dim=1)
        inside = ((neighbour >= 0) & (neighbour < r)).all(dim=1)
        index, found = lookup_keys(sorted_keys, grid_keys(neighbour.clamp(0, r - 1), r) + point_group * r**3)
        weight = weight * (found & inside)
        total += weight[:, None] * attrs[index]
        weight_sum += weight
    result = total / weight_sum.clamp(min=1e-12)[:, None]
    lonely = weight_sum <= 1e-8
    if bool(lonely.any()):
        from scipy.spatial import cKDTree

        # Per group, its voxels are a contiguous run of the sorted keys: the same tree as a call per group.
        lonely_groups = torch.unique(point_group[lonely]).tolist() if groups is not None else [0]
        bounds = torch.searchsorted(sorted_keys, torch.tensor(lonely_groups, device=device) * r**3)
        ends = torch.searchsorted(sorted_keys, (torch.tensor(lonely_groups, device=device) + 1) * r**3)
        centres = coords_to_centers(voxels.coords[order], r)
        for group, start, end in zip(lonely_groups, bounds.tolist(), ends.tolist(), strict=True):
            chosen = lonely & (point_group == group) if groups is not None else lonely
            tree = cKDTree(centres[start:end].cpu().numpy())
            _, nearest = tree.query(points[chosen.to(points.device)].detach().float().cpu().numpy())
            result[chosen] = attrs[start + torch.as_tensor(nearest, device=device)]
    return result.to(points.device)
