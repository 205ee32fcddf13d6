"""The voxeliser's solve (DESIGN section 4): sub-triangles -> per-voxel statistics -> dual vertices, crossings and
attributes.

`voxel_statistics` clips a span of sub-triangles (grid units, `pixal3d.geometry.dual_grid`) against the voxels they
touch and sums per voxel an area-weighted plane quadric, a weighted centroid and weighted material attributes;
`assemble` solves each voxel's QEF for its dual vertex, attaches the signed edge crossings and the attributes, and
`fill_untouched` gives attribute-less voxels their neighbours' attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pixal3d.camera import coords_to_centers
from pixal3d.geometry.dual_mesh import sample_attributes
from pixal3d.geometry.intersect import (
    candidate_voxels,
    closest_point_barycentric,
    grid_keys,
    index_sum,
    lookup_keys,
    triangle_box_overlap,
)
from pixal3d.geometry.part_materials import PartMaterials
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.timing import timed
from pixal3d.transfer import to_device

logger = logging.getLogger(__name__)

# Pull of the dual vertex towards the mean of the triangles' points nearest the voxel centre, relative to the
# plane terms. Small enough that two or three planes (an edge, a corner) pin the vertex on the feature; large enough to fix it along the free
# directions (a flat or edge voxel) and to keep the 3x3 system well conditioned.
QEF_REGULARISATION = 1e-3
# Weight floor for a triangle that only touches a voxel, so the voxel still gets its plane.
TOUCH_WEIGHT = 1e-6
# Per-voxel statistics accumulated over (triangle, voxel) pairs, columns of the `[U, STATS]` table.
_QEF, _RHS, _WEIGHT, _CENTROID, _ATTRS = slice(0, 6), slice(6, 9), 9, slice(10, 13), slice(13, 19)
STATS = 19


@dataclass
class TriangleBatch:
    """The sub-triangles of all items of one `meshes_to_voxels` call, ordered by item, then as one item's call
    would order them; rows are cut into *groups*: the `CHUNK_TRIANGLES` chunks a single-item call would make.

    Faces are numbered over all items (item `v`'s face `f` is `face_offsets[v] + f`). Per-voxel sums are first
    taken within a group (keys carry the group), then over an item's groups in order, so every float sum adds the
    same terms in the same order as a single-item call, however many groups one batch of kernels holds.
    """

    sub: torch.Tensor  # [T, 3, 3] float32, grid units
    source: torch.Tensor  # [T] int64, face index over all items
    bary: torch.Tensor  # [T, 3, 3] sub-triangle corners in the source face
    group: torch.Tensor  # [T] int64
    group_view: torch.Tensor  # [G] int64, the item of each group
    group_view_list: list[int]  # the same on the host
    group_sizes: list[int]
    face_offsets: torch.Tensor  # [V + 1] int64, first face of each item
    views: int  # items

    def view_of(self, face: torch.Tensor) -> torch.Tensor:
        """The item `[M]` int64 of faces `[M]` int64 (numbered over all items)."""
        return torch.searchsorted(self.face_offsets, face, right=True) - 1


def keys_to_coords(keys: torch.Tensor, resolution: int) -> torch.Tensor:
    r = resolution
    return torch.stack([keys // (r * r), (keys // r) % r, keys % r], dim=1)


def reduce_by_key(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum `values [K, C]` rows with equal `keys [K]`: `(unique sorted keys [U], sums [U, C])`."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    return unique, index_sum(inverse, values, unique.shape[0])  # the same bytes on every run, also on a GPU


def voxel_statistics(
    batch: TriangleBatch,
    rows: slice,
    resolution: int,
    materials: PartMaterials | None,
    timings: dict[str, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip a span of sub-triangles against the voxels they touch and sum per-voxel statistics per group.

    Returns:
        `(keys [U] int64, stats [U, STATS] float32)`: keys `group * R^3 + voxel key`; for each touched voxel the
        area-weighted plane quadric (voxel-local frame), weight, weighted centroid and weighted material attributes.
    """
    sub = batch.sub[rows]
    tri, voxel = candidate_voxels(sub, resolution)
    local = sub[tri] - voxel[:, None, :].to(sub.dtype)  # (K, 3, 3), voxel-local
    keep = triangle_box_overlap(local)
    keep = torch.nonzero(keep).squeeze(1)  # one host sync for three selections
    tri, voxel, local = tri[keep], voxel[keep], local[keep]
    # The triangle's point nearest the voxel centre stands for the part inside the voxel: it is the sample point
    # for the material and the pull target of the QEF. Its distance to the centre stands in for the clipped area
    # (exact clipping costs ~20x more): a triangle through the centre weighs 1, a corner touch ~0.
    bary = closest_point_barycentric(torch.full_like(local[:, 0], 0.5), local)
    closest = (bary[:, :, None] * local).sum(1)
    weight = (1.0 - (closest - 0.5).norm(dim=-1) / 0.8661).clamp(min=TOUCH_WEIGHT)
    centroid = closest.clamp(0.0, 1.0)
    normal = torch.cross(local[:, 1] - local[:, 0], local[:, 2] - local[:, 0], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    offset = (normal * closest).sum(-1)  # plane: normal . x = offset
    nx, ny, nz = normal.unbind(-1)
    stats = torch.zeros(tri.shape[0], STATS, device=sub.device, dtype=torch.float32)
    stats[:, _QEF] = weight[:, None] * torch.stack([nx * nx, nx * ny, nx * nz, ny * ny, ny * nz, nz * nz], 1)
    stats[:, _RHS] = (weight * offset)[:, None] * normal
    stats[:, _WEIGHT] = weight
    stats[:, _CENTROID] = weight[:, None] * centroid
    group = batch.group[rows][tri]
    if materials is not None:
        with timed(timings, "attributes", sub.device):
            point_bary = (bary[:, :, None] * batch.bary[rows][tri]).sum(1)  # in the source face
            values = materials.sample(batch.source[rows][tri], point_bary, group)
            stats[:, _ATTRS] = weight[:, None] * values
    return reduce_by_key(group * resolution**3 + grid_keys(voxel, resolution), stats)


def assemble(
    touched: torch.Tensor,
    stats: torch.Tensor,
    edge_keys: torch.Tensor,
    edge_sign: torch.Tensor,
    resolution: int,
    with_attributes: bool,
    views: int = 1,
) -> list[SparseVoxels]:
    """Voxel set = touched voxels + the four voxels around each crossed edge; solve dual vertices and attrs.

    Keys carry the view: voxel keys `view * R^3 + key`, edge keys `view * 3 R^3 + key`; one result per view.
    """
    r3 = resolution**3
    axis = edge_keys % 3
    corner_keys = edge_keys // 3
    edge_view = torch.div(corner_keys, r3, rounding_mode="floor")
    corner = keys_to_coords(corner_keys - edge_view * r3, resolution)
    rows = torch.arange(corner.shape[0], device=corner.device)
    around = []
    for db, dc in ((0, 0), (-1, 0), (0, -1), (-1, -1)):
        shifted = corner.clone()
        shifted[rows, (axis + 1) % 3] += db
        shifted[rows, (axis + 2) % 3] += dc
        around.append(edge_view * r3 + grid_keys(shifted, resolution))
    keys = torch.unique(torch.cat([touched, *around]))
    n = keys.shape[0]
    full = torch.zeros(n, STATS, device=stats.device, dtype=stats.dtype)
    full[torch.searchsorted(keys, touched)] = stats
    edges = torch.zeros(n, 3, dtype=torch.int8, device=keys.device)
    edges[torch.searchsorted(keys, corner_keys), axis] = edge_sign
    weight = full[:, _WEIGHT]
    has = weight > 0
    centroid = full[:, _CENTROID] / weight.clamp(min=1e-12)[:, None]
    q = full[:, _QEF]
    quadric = torch.stack([q[:, [0, 1, 2]], q[:, [1, 3, 4]], q[:, [2, 4, 5]]], dim=1)  # (N, 3, 3) symmetric
    lam = (QEF_REGULARISATION * weight).where(has, torch.ones_like(weight))
    target = centroid.where(has[:, None], torch.full_like(centroid, 0.5))
    eye = torch.eye(3, device=keys.device, dtype=quadric.dtype)
    rhs = full[:, _RHS] + lam[:, None] * target
    vertex = torch.linalg.solve(quadric + lam[:, None, None] * eye, rhs).clamp(0.0, 1.0).float()
    view = torch.div(keys, r3, rounding_mode="floor")
    coords = keys_to_coords(keys - view * r3, resolution).to(torch.int32)
    attrs = full[:, _ATTRS] / weight.clamp(min=1e-12)[:, None] if with_attributes else None
    # One host sync: where each view starts, and how many voxels touch no triangle.
    bounds = torch.searchsorted(keys, torch.arange(views + 1, device=keys.device) * r3)
    info = torch.cat([bounds, (~has).sum()[None]]).tolist()
    if info[-1]:
        logger.debug("%d voxels around crossed edges touch no triangle; vertex at centre", info[-1])
        if attrs is not None:
            fill_untouched(SparseVoxels(coords, vertex, edges, attrs, resolution), has, view)
    results = []
    for v in range(views):
        part = slice(info[v], info[v + 1])
        fields = [coords[part], vertex[part], edges[part], None if attrs is None else attrs[part]]
        if views > 1:  # own storage per view (shards refuse tensors that share memory)
            fields = [None if f is None else f.clone() for f in fields]
        results.append(SparseVoxels(*fields, resolution=resolution))
    return results


_NEIGHBOURS = sorted(
    ((i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)),
    key=lambda o: (sum(abs(x) for x in o), o),
)
"""The 26 neighbour offsets of a voxel, nearest first (6 faces, 12 edges, 8 corners; ties in a fixed order)."""


def fill_untouched(voxels: SparseVoxels, has: torch.Tensor, view: torch.Tensor) -> None:
    """Give voxels that touch no triangle (`~has`) the attributes of the nearest touched voxel of their own item
    (`view [N]`), in place.

    The 26 neighbours are looked up on the voxels' device in one pass (all items at once, the item in the high
    part of the key), the nearest found wins (face, then edge, then corner neighbours, ties in `_NEIGHBOURS`
    order); a voxel with no touched neighbour (rare: these voxels sit beside crossed edges, next to the
    surface) falls back to the nearest touched voxel of its item by a KD-tree (`sample_attributes`).
    """
    r, v = voxels.resolution, voxels
    coords = v.coords.long()
    known_keys = view[has] * r**3 + grid_keys(coords[has], r)  # sorted: voxels are sorted by (item, key)
    known_attrs = v.attrs[has]
    missing = ~has
    offsets = to_device(_NEIGHBOURS, coords.device)  # (26, 3)
    around = coords[missing][:, None] + offsets  # (M, 26, 3)
    inside = ((around >= 0) & (around < r)).all(dim=-1)
    query = view[missing][:, None] * r**3 + grid_keys(around.clamp(0, r - 1).reshape(-1, 3), r).view(around.shape[:2])
    index, found = lookup_keys(known_keys, query)
    found &= inside
    first = found.to(torch.uint8).argmax(dim=1)  # the nearest neighbour found (0 when none)
    nearest = index.gather(1, first[:, None])[:, 0]
    filled = known_attrs[nearest]
    lonely = ~found.any(dim=1)
    if bool(lonely.any()):
        known = SparseVoxels(v.coords[has], v.vertex[has], v.edges[has], known_attrs, v.resolution)
        rest = torch.nonzero(missing).squeeze(1)[lonely]
        filled[lonely] = sample_attributes(known, coords_to_centers(v.coords[rest], v.resolution), (view[has], view[rest]))
    v.attrs[missing] = filled
