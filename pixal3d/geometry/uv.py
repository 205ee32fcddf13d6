"""UV atlas for the bake (DESIGN section 6): xatlas unwrap and UV-space rasterisation.

UVs follow glTF (origin at the image's top-left corner, `u` right, `v` down); texel `(row, col)` of an `S x S`
texture has its centre at `u = (col + 0.5) / S`, `v = (row + 0.5) / S` (see `pixal3d.geometry.bake`).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import trimesh

logger = logging.getLogger(__name__)

_RASTER_CHUNK = 2_000_000  # candidate texels per rasterisation batch
_UNWRAP_PART_FACES = 12_500  # `unwrap_uv` hands xatlas parts of at most about this many faces


def unwrap_uv(mesh: trimesh.Trimesh, texture_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the mesh into charts and pack them into the unit square with xatlas.

    Meshes of more than `_UNWRAP_PART_FACES` faces are cut into 2, 4, 8... parts of at most about that many faces
    (k-d halving: each part split at its median face centroid along its longest axis) and handed to xatlas as
    meshes of one atlas. xatlas segments each mesh as its own task, and its segmentation cost grows much faster
    than the face count: on a 100k-face generated ball (2 cores) one part took 138 s, 2 halves 22.6 s, 8 k-d parts
    5.5 s, with 2.6 % more charts than 2 halves and the same atlas utilisation (0.78). The cuts add chart borders;
    charts are capped at ~250 faces anyway.

    Args:
        mesh: `[V, 3]` vertices, `[F, 3]` faces.
        texture_size: the texture side the atlas is packed for (sets the padding between charts).

    Returns:
        `vertex_map [V'] int64` (output vertex -> input vertex), `faces [F, 3] int64` into the output vertices,
        `uvs [V', 2] float32` in `[0, 1]`, glTF convention.
    """
    import xatlas

    vertices = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
    faces = np.ascontiguousarray(mesh.faces, dtype=np.uint32)
    atlas = xatlas.Atlas()
    parts = _unwrap_parts(vertices, faces)
    for used, part_faces in parts:
        atlas.add_mesh(vertices[used], part_faces)
    chart = xatlas.ChartOptions()
    # Charts of a few hundred faces keep xatlas near-linear in the face count: on a 100k-face mesh, unbounded
    # charts took ~30 s on 2 cores, 4000-face charts ~29 s, 1000 ~12 s, 250 ~6 s, 60 ~20 s (packing many charts).
    chart.max_chart_area = float(mesh.area) * min(1.0, 250.0 / max(len(faces), 1))
    chart.max_iterations = 1
    pack = xatlas.PackOptions()
    pack.resolution = texture_size
    pack.padding = 2
    pack.bilinear = True
    atlas.generate(chart, pack)
    # With texels_per_unit left at 0, xatlas sizes one atlas near `resolution` (it may exceed it); UVs are then
    # normalised to that atlas, so several atlases would overlap in [0, 1]^2.
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas produced {atlas.atlas_count} atlases; expected one")
    vertex_maps, out_faces, out_uvs, offset = [], [], [], 0
    for i, (used, _) in enumerate(parts):
        part_map, part_faces, part_uvs = atlas[i]
        vertex_maps.append(used[part_map])
        out_faces.append(part_faces.astype(np.int64) + offset)
        out_uvs.append(part_uvs)
        offset += len(part_map)
    logger.debug(
        "xatlas: %d meshes, %d charts, %d atlases, utilisation %.2f",
        len(parts),
        atlas.chart_count,
        atlas.atlas_count,
        atlas.utilization,
    )
    return (
        np.concatenate(vertex_maps).astype(np.int64),
        np.concatenate(out_faces),
        np.concatenate(out_uvs).astype(np.float32),
    )


def _unwrap_parts(vertices: np.ndarray, faces: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The meshes `unwrap_uv` gives xatlas: `(used [V_i] int64 input vertex ids, faces [F_i, 3] uint32 into them)`.

    `2^k` parts, `k` the fewest halvings that bring every part to at most about `_UNWRAP_PART_FACES` faces: each
    round splits every part at the median face centroid along that part's longest axis. The count depends on the
    face count alone, so the result does not depend on the machine's cores.
    """
    levels = max(0, math.ceil(math.log2(len(faces) / _UNWRAP_PART_FACES))) if len(faces) else 0
    centroids = vertices[faces].mean(axis=1)  # (F, 3)
    groups = [np.arange(len(faces))]
    for _ in range(levels):
        halves = []
        for group in groups:
            axis = int(np.argmax(np.ptp(centroids[group], axis=0)))
            halves += np.array_split(group[np.argsort(centroids[group, axis], kind="stable")], 2)
        groups = halves
    parts = []
    for group in groups:
        part_faces = faces[np.sort(group)]
        used, local = np.unique(part_faces, return_inverse=True)
        parts.append((used.astype(np.int64), local.reshape(-1, 3).astype(np.uint32)))
    return parts


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre of an `S x S` texture, and where inside it.

    Args:
        uvs: `[V, 2]` float, glTF convention.
        faces: `[F, 3]` int vertex indices into `uvs`.
        size: S.

    Returns:
        `face_id [S, S] int32` (-1 where no triangle covers the texel centre) and `bary [S, S, 3] float32`
        barycentric coordinates of the texel centre in that triangle.
    """
    face_id = np.full(size * size, -1, dtype=np.int32)
    bary = np.zeros((size * size, 3), dtype=np.float32)
    tri = uvs.astype(np.float64)[faces] * size - 0.5  # (F, 3, 2) texel coordinates, centres on integers
    lo = np.clip(np.ceil(tri.min(axis=1)), 0, size - 1).astype(np.int64)
    hi = np.clip(np.floor(tri.max(axis=1)), 0, size - 1).astype(np.int64)
    extent = np.maximum(hi - lo + 1, 0)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    counts = np.where(np.abs(det) > 1e-12, extent[:, 0] * extent[:, 1], 0)
    ends = np.cumsum(counts)
    start = 0
    while start < len(faces):
        # A batch of triangles whose bounding boxes hold about _RASTER_CHUNK texels in all.
        base = ends[start - 1] if start > 0 else 0
        stop = max(int(np.searchsorted(ends, base + _RASTER_CHUNK, side="right")), start + 1)
        ids = np.arange(start, stop)
        n = counts[ids]
        t = np.repeat(ids, n)
        local = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        width = extent[t, 0]
        x = lo[t, 0] + local % width
        y = lo[t, 1] + local // width
        px, py = x - tri[t, 0, 0], y - tri[t, 0, 1]
        w1 = (px * e2[t, 1] - e2[t, 0] * py) / det[t]
        w2 = (e1[t, 0] * py - px * e1[t, 1]) / det[t]
        w0 = 1.0 - w1 - w2
        inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
        flat = (y * size + x)[inside]
        face_id[flat] = t[inside]
        bary[flat] = np.stack([w0, w1, w2], axis=1)[inside]
        start = stop
    return face_id.reshape(size, size), bary.reshape(size, size, 3)
