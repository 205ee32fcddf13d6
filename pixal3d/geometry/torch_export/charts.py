"""UV charts for the PyTorch export path: axis-dominant face clusters -> connected charts -> packed atlas.

A dual-grid mesh is made of faces that mostly face one of the six axis directions. Each face gets the direction
`+x, -x, +y, -y, +z, -z` its normal is closest to, and a coarse spatial cell (`cells^3` over the volume cube, to keep
charts small and simple); a chart is a connected set (faces sharing an edge) of one direction and one cell. The
chart is flattened by dropping its axis: every face of it projects with positive area, so its triangles keep their
shape up to the cosine of their tilt (at most 54.7 degrees off the axis: stretch <= 1.73), and the map is seen
from outside, not mirrored. Charts are turned to lie landscape and packed in shelves (tallest first), with
`padding` texels between them, at the largest common texel density that fits the `S x S` atlas.

A projection can still overlap itself when a chart wraps around (a helix seen along its axis). `split_overlaps`
rasterises the charts and cuts every chart that claims a texel twice, until none does.

UVs follow glTF (origin at the top-left corner, `v` down; see `pixal3d.geometry.bake`).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from pixal3d.geometry.torch_export.clean import connected_components, face_normals

logger = logging.getLogger(__name__)

_MIN_COSINE = 0.3
"""A face joins its neighbourhood's direction only if its own normal is within ~72 degrees of that axis."""
_OVERLAP_PASSES = 8
"""Pack-and-check rounds of `build_atlas` (the first cuts overlapping charts, the later ones isolate faces)."""

# For each direction (axis * 2 + negative): the 3D axes (and signs) that give the chart's u (right) and v (down),
# chosen so that the chart is seen from outside (not mirrored) with +y up where the axis allows.
_FRAMES = {
    0: ((2, -1.0), (1, -1.0)),  # +x: right = -z, down = -y
    1: ((2, 1.0), (1, -1.0)),  # -x: right = +z
    2: ((0, 1.0), (2, 1.0)),  # +y: right = +x, down = +z
    3: ((0, 1.0), (2, -1.0)),  # -y: right = +x, down = -z
    4: ((0, 1.0), (1, -1.0)),  # +z: right = +x, down = -y
    5: ((0, -1.0), (1, -1.0)),  # -z: right = -x
}


def face_charts(vertices: torch.Tensor, faces: torch.Tensor, cells: int = 8,
                smoothing: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """`(chart [F] int64 dense ids, direction [F] int64 in 0..5)` (see the module docstring)."""
    normal = face_normals(vertices, faces)
    own = _direction(normal)
    # Dual-grid faces are jagged: classify by the normal smoothed over the neighbourhood, so that charts do not
    # fragment, unless the face itself would then project too steeply (or flipped).
    smooth = normal
    for _ in range(smoothing):
        per_vertex = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), smooth.repeat_interleave(3, 0))
        smooth = per_vertex[faces].sum(dim=1)
    candidate = _direction(smooth)
    axis_sign = 1.0 - 2.0 * (candidate % 2).to(normal.dtype)
    along = normal.gather(1, (candidate // 2)[:, None])[:, 0] * axis_sign
    direction = torch.where(along > _MIN_COSINE * normal.norm(dim=1), candidate, own)
    centroid = vertices[faces].mean(dim=1)
    cell = ((centroid + 0.5) * cells).floor().long().clamp(0, cells - 1)
    group = direction * cells**3 + (cell[:, 0] * cells + cell[:, 1]) * cells + cell[:, 2]
    return _connected_charts(faces, group), direction


def _direction(normal: torch.Tensor) -> torch.Tensor:
    """`[F] int64` in 0..5: axis * 2 + (component < 0) of the largest component."""
    axis = normal.abs().argmax(dim=1)
    return axis * 2 + (normal.gather(1, axis[:, None])[:, 0] < 0).long()


def _connected_charts(faces: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Dense chart ids: faces of one `group [F]` joined through shared (undirected) edges."""
    n_faces = len(faces)
    if n_faces == 0:
        return group.clone()
    n_vert = int(faces.max()) + 1
    edge = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    key = torch.minimum(edge[:, 0], edge[:, 1]) * n_vert + torch.maximum(edge[:, 0], edge[:, 1])
    owner = torch.arange(n_faces, device=faces.device).repeat_interleave(3)
    # Sort by (group, edge): faces of the same group on the same edge become neighbours in the order.
    order = torch.argsort(key * (int(group.max()) + 1) + group[owner])
    key, owner = key[order], owner[order]
    same = (key[1:] == key[:-1]) & (group[owner[1:]] == group[owner[:-1]])
    pairs = torch.stack([owner[:-1][same], owner[1:][same]], dim=1)
    labels = connected_components(n_faces, pairs)
    return torch.unique(labels, return_inverse=True)[1]


def chart_coordinates(vertices: torch.Tensor, faces: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """`[F, 3, 2]` per-corner planar coordinates (volume units) of each face in its direction's frame."""
    p = vertices[faces]  # (F, 3, 3)
    out = torch.empty(len(faces), 3, 2, dtype=vertices.dtype, device=vertices.device)
    for d, ((ua, us), (va, vs)) in _FRAMES.items():
        sel = direction == d
        out[sel, :, 0] = p[sel][:, :, ua] * us
        out[sel, :, 1] = p[sel][:, :, va] * vs
    return out


def pack_charts(
    coords: torch.Tensor, chart: torch.Tensor, size: int, padding: int = 2
) -> tuple[torch.Tensor, float]:
    """Place every chart in the `size x size` atlas: `(uv [F, 3, 2] in [0, 1], texels per volume unit)`.

    Args:
        coords: `[F, 3, 2]` planar corner coordinates (`chart_coordinates`).
        chart: `[F]` dense chart ids.
        size: atlas side S in texels.
        padding: empty texels between charts (bilinear filtering and mip levels read across chart borders).
    """
    n = int(chart.max()) + 1
    flat = coords.reshape(-1, 2)
    corner_chart = chart.repeat_interleave(3)
    low = flat.new_full((n, 2), float("inf")).scatter_reduce(0, corner_chart[:, None].expand(-1, 2), flat, "amin")
    high = flat.new_full((n, 2), -float("inf")).scatter_reduce(0, corner_chart[:, None].expand(-1, 2), flat, "amax")
    extent = (high - low).clamp(min=1e-9)
    turn = extent[:, 1] > extent[:, 0]  # stand tall charts on their side: shelves waste less
    extent = torch.where(turn[:, None], extent.flip(1), extent)
    place, scale = _shelf_pack(extent.double().cpu(), size, padding)
    place = place.to(coords.device, coords.dtype)
    local = flat - low[corner_chart]
    turned = turn[corner_chart]
    # A quarter turn (u, v) -> (v, w - u) keeps the chart unmirrored.
    local = torch.where(turned[:, None], torch.stack([local[:, 1], extent[corner_chart, 1] - local[:, 0]], 1),
                        local)
    texel = local * scale + place[corner_chart]
    return (texel / size).reshape(-1, 3, 2), scale


def _shelf_pack(extent: torch.Tensor, size: int, padding: int) -> tuple[torch.Tensor, float]:
    """Top-left texel corner `[K, 2]` of each chart and the common scale (texels per unit) that fits them.

    Shelves, tallest charts first, each chart rounded up to whole texels plus `padding`. The scale is found by
    bisection on whether the shelves fit; each trial is one numpy cumulative sum per shelf (milliseconds for tens
    of thousands of charts).
    """
    usable = size - padding
    area = float((extent[:, 0] * extent[:, 1]).sum())
    hi = math.sqrt(usable * usable / max(area, 1e-12))  # charts alone fill the atlas: an upper bound
    lo = 0.0
    order = torch.argsort(extent[:, 1], descending=True, stable=True)
    ext = extent[order].numpy()
    best = None
    for _ in range(40):
        mid = (lo + hi) / 2
        placed = _try_shelves(ext, mid, usable, padding)
        if placed is None:
            hi = mid
        else:
            lo, best = mid, placed
            if hi - lo < 2e-3 * hi:
                break
    if best is None:
        raise ValueError(f"{len(ext)} charts do not fit a {size}^2 atlas even at a tiny scale")
    place = torch.zeros(len(ext), 2, dtype=torch.float64)
    place[order] = torch.from_numpy(best)
    return place, lo


def _try_shelves(ext: np.ndarray, scale: float, usable: int, padding: int) -> np.ndarray | None:
    """`[K, 2]` texel corners of charts `ext [K, 2]` (sorted tallest first) at `scale`, or None if they overflow."""
    width = np.ceil(ext[:, 0] * scale) + padding
    height = np.ceil(ext[:, 1] * scale) + padding
    if len(width) == 0 or width.max() > usable:
        return None if len(width) else np.zeros((0, 2))
    out = np.zeros((len(width), 2))
    start, y = 0, 0.0
    while start < len(width):
        if y + height[start] > usable:  # the shelf's first chart is its tallest
            return None
        ends = np.cumsum(width[start:])
        n = max(int(np.searchsorted(ends, usable, side="right")), 1)
        out[start:start + n, 0] = ends[:n] - width[start:start + n] + padding
        out[start:start + n, 1] = y + padding
        y += height[start]
        start += n
    return out


def split_charts(chart: torch.Tensor, coords: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """Cut each chart marked in `bad [K] bool` in two at its median corner coordinate along its longer side."""
    centre = coords.mean(dim=1)  # (F, 2)
    flagged = bad[chart]
    if not bool(flagged.any()):
        return chart
    n = int(chart.max()) + 1
    low = centre.new_full((n, 2), float("inf")).scatter_reduce(0, chart[:, None].expand(-1, 2), centre, "amin")
    high = centre.new_full((n, 2), -float("inf")).scatter_reduce(0, chart[:, None].expand(-1, 2), centre, "amax")
    axis = ((high - low)[:, 1] > (high - low)[:, 0]).long()
    mid = (low + high).gather(1, axis[:, None])[:, 0] / 2
    side = centre.gather(1, axis[chart][:, None])[:, 0] > mid[chart]
    new = torch.where(flagged & side, chart + n, chart)
    return torch.unique(new, return_inverse=True)[1]


def overlapping_faces(uv: torch.Tensor, size: int) -> torch.Tensor:
    """`[F] bool`: faces with a texel centre strictly inside them that is strictly inside another face too."""
    from pixal3d.geometry.torch_export.raster import rasterize_claims

    texel, face = rasterize_claims(uv, size, strict=True)
    bad = torch.zeros(len(uv), dtype=torch.bool, device=uv.device)
    if len(texel):
        counts = torch.bincount(texel, minlength=size * size)
        bad[face[counts[texel] > 1]] = True
    return bad


def isolate_faces(chart: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Give each face marked in `faces [F] bool` a chart of its own (a single triangle cannot overlap itself)."""
    n = int(chart.max()) + 1
    alone = torch.arange(len(chart), device=chart.device) + n
    return torch.unique(torch.where(faces, alone, chart), return_inverse=True)[1]


def build_atlas(
    vertices: torch.Tensor, faces: torch.Tensor, size: int, padding: int = 2, cells: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Charts, flattening, packing, and the vertex split along chart borders.

    Returns:
        `vertex_map [V'] int64` (output vertex -> input vertex), `faces [F, 3] int64` into the output vertices,
        `uvs [V', 2] float32` in `[0, 1]` (glTF convention), `chart [F] int64`.
    """
    chart, direction = face_charts(vertices, faces, cells)
    coords = chart_coordinates(vertices, faces, direction)
    # Self-overlapping charts (a chart wrapping around, or a fold the simplification made) are cut in two; faces
    # that still overlap become charts of their own. The check rasterises texel centres: no texel is claimed twice.
    # Repacking changes the scale, so a chart that nearly overlaps itself may claim a texel twice at the next one:
    # check again after every change.
    for attempt in range(_OVERLAP_PASSES):
        uv, scale = pack_charts(coords, chart, size, padding)
        bad_face = overlapping_faces(uv, size)
        if not bool(bad_face.any()):
            break
        logger.debug("atlas pass %d: %d faces of self-overlapping charts", attempt, int(bad_face.sum()))
        if attempt == _OVERLAP_PASSES - 1:
            logger.warning("atlas: %d faces still overlap after %d passes", int(bad_face.sum()), attempt + 1)
        elif attempt == 0:
            bad = torch.zeros(int(chart.max()) + 1, dtype=torch.bool, device=chart.device)
            bad[chart[bad_face]] = True
            chart = split_charts(chart, coords, bad)
        else:
            chart = isolate_faces(chart, bad_face)
    logger.debug("atlas: %d charts, %.1f texels per unit", int(chart.max()) + 1, scale)
    n_vert = len(vertices)
    key = chart.repeat_interleave(3) * n_vert + faces.reshape(-1)  # one output vertex per (chart, vertex)
    unique, inverse = torch.unique(key, return_inverse=True)
    out_uv = torch.zeros(len(unique), 2, dtype=torch.float32, device=vertices.device)
    out_uv[inverse] = uv.reshape(-1, 2).float()
    return unique % n_vert, inverse.reshape(-1, 3), out_uv, chart
