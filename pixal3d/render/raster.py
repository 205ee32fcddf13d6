"""Vectorised triangle rasterisation in pure PyTorch (CPU and CUDA, device taken from the inputs).

Screen space: `x` = `u` (right), `y` = `v` (down), continuous pixel coordinates with the origin at the top-left
corner of the image (DESIGN section 2); sample `(row, col)` sits at `(col + 0.5, row + 0.5)`. `w` is the depth along
the view axis (`-z_cam`, positive in front of the camera).

Algorithm (why: docs/rendering.md): every triangle gets the pixel bounding box of the sample centres it may cover;
triangles are bucketed by box size (powers of two in x and y) so each bucket is one dense `[n, bw * bh]` batch of
candidate samples; the edge functions decide coverage; a z-buffer keeps the nearest fragment per sample with one
`scatter_reduce(amin)` over 64-bit keys `(float bits of depth) << 32 | face id` (exact, deterministic, no atomics
on floats). A second pass recomputes the perspective-correct barycentrics of the winning face per sample.

Watertightness: an edge shared by two triangles is evaluated from the same base point (its lexicographically
smaller endpoint) in both, so both get the same value with opposite signs, and a sample exactly on it goes to
exactly one of them (the side where the canonical value is positive). No back-face culling. Triangles with a
vertex at `w <= near` are dropped (no near-plane clipping: cameras are expected to sit outside the object).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from pixal3d.errors import InputError

logger = logging.getLogger(__name__)

_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


@dataclass(eq=False)
class Fragments:
    """Per-sample rasterisation result for an image of `H x W` samples.

    Attributes:
        face_id: `[H, W] int64`, the visible face, -1 where empty.
        bary: `[H, W, 3] float32` perspective-correct barycentrics of the visible face (0 where empty).
        depth: `[H, W] float32` depth `w` of the visible surface (0 where empty).
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """`[H, W] bool` covered samples."""
        return self.face_id >= 0


@dataclass(eq=False)
class _Edges:
    """Per-triangle edge data `[F, 3, ...]`; edge `i` is the one opposite vertex `i`."""

    base: torch.Tensor  # [F, 3, 2] canonical base point of each edge
    direction: torch.Tensor  # [F, 3, 2] canonical direction (from the smaller endpoint to the larger)
    sign: torch.Tensor  # [F, 3] +-1: oriented value = sign * canonical value, positive inside
    inv_w: torch.Tensor  # [F, 3] 1 / depth of each vertex


def _edge_data(tri: torch.Tensor) -> _Edges:
    """`tri [F, 3, 3]` (x, y, w per vertex) -> `_Edges`."""
    xy = tri[..., :2]
    start = xy[:, [1, 2, 0]]  # edge i runs from vertex i+1 to vertex i+2
    end = xy[:, [2, 0, 1]]
    swap = (start[..., 0] > end[..., 0]) | ((start[..., 0] == end[..., 0]) & (start[..., 1] > end[..., 1]))
    base = torch.where(swap[..., None], end, start)
    direction = torch.where(swap[..., None], start - end, end - start)
    # Orientation: the oriented edge values must be positive at the opposite vertex.
    opposite = xy
    canonical_at_opposite = _canonical(base, direction, opposite[..., 0], opposite[..., 1])
    sign = torch.where(canonical_at_opposite >= 0, 1.0, -1.0).to(tri.dtype)
    return _Edges(base=base, direction=direction, sign=sign, inv_w=1.0 / tri[..., 2])


def _canonical(base: torch.Tensor, direction: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Canonical edge function `d.x * (y - b.y) - d.y * (x - b.x)`; broadcasts `[..., 3, 2]` with `[..., 3]`."""
    return direction[..., 0] * (y - base[..., 1]) - direction[..., 1] * (x - base[..., 0])


def _inside_and_bary(
    edges: _Edges, tri_ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coverage, screen barycentrics and depth of samples `x, y [n, K]` against triangles `tri_ids [n]`.

    Returns `inside [n, K] bool`, `bary [n, K, 3]` (screen space, rows sum to 1) and `depth [n, K]`.
    """
    packed = torch.cat([edges.base, edges.direction, edges.sign[..., None], edges.inv_w[..., None]], dim=-1)
    e = packed[tri_ids][:, None]  # one gather: (n, 1, 3, 6) = base xy, direction xy, sign, 1/w
    canonical = e[..., 2] * (y[..., None] - e[..., 1]) - e[..., 3] * (x[..., None] - e[..., 0])  # (n, K, 3)
    sign = e[..., 4]
    oriented = sign * canonical
    inside = ((oriented > 0) | ((canonical == 0) & (sign > 0))).all(dim=-1)
    total = oriented.sum(dim=-1, keepdim=True)
    bary = oriented / torch.where(total > 0, total, torch.ones_like(total))
    inv_depth = (bary * e[..., 5]).sum(dim=-1)
    depth = 1.0 / inv_depth.clamp_min(1e-20)
    return inside, bary, depth


def _pixel_boxes(tri: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inclusive integer boxes `[F, 4]` (col0, row0, col1, row1) of the sample centres inside each bbox."""
    lo = tri[..., :2].amin(dim=1)
    hi = tri[..., :2].amax(dim=1)
    col0 = torch.ceil(lo[:, 0] - 0.5).clamp(min=0)
    row0 = torch.ceil(lo[:, 1] - 0.5).clamp(min=0)
    col1 = torch.floor(hi[:, 0] - 0.5).clamp(max=width - 1)
    row1 = torch.floor(hi[:, 1] - 0.5).clamp(max=height - 1)
    return torch.stack([col0, row0, col1, row1], dim=-1).long()


def _row_spans(edges: _Edges, tri_ids: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Conservative column range `[n, 2]` (first, last; inclusive) of each (triangle, sample row) pair.

    Each oriented edge value is linear in `x` along a row, so the covered samples form one interval; it is widened
    by one sample on each side (the exact edge test decides) and clipped to the triangle's box.
    """
    y = rows.to(edges.base.dtype) + 0.5
    base, direction, sign = edges.base[tri_ids], edges.direction[tri_ids], edges.sign[tri_ids]
    slope = -sign * direction[..., 1]  # d(oriented)/dx, (n, 3)
    at_zero = sign * (direction[..., 0] * (y[:, None] - base[..., 1]) + direction[..., 1] * base[..., 0])
    root = -at_zero / torch.where(slope == 0, torch.ones_like(slope), slope)
    inf = torch.full_like(root, float("inf"))
    flat_ok = at_zero >= 0
    lower = torch.where(slope > 0, root, torch.where((slope == 0) & flat_ok, -inf, inf))
    lower = torch.where(slope < 0, -inf, lower)
    upper = torch.where(slope < 0, root, torch.where((slope == 0) & ~flat_ok, -inf, inf))
    x_lo, x_hi = lower.amax(dim=-1), upper.amin(dim=-1)
    box = boxes[tri_ids]
    first = torch.ceil(x_lo - 0.5).clamp(-1e9, 1e9).long() - 1
    last = torch.floor(x_hi - 0.5).clamp(-1e9, 1e9).long() + 1
    return torch.stack([torch.maximum(first, box[:, 0]), torch.minimum(last, box[:, 2])], dim=-1)


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For `counts [n]`: the owner `[sum]` of every expanded item and its rank within its owner."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    starts = torch.cumsum(counts, dim=0) - counts
    return owner, torch.arange(owner.numel(), device=counts.device) - starts[owner]


def _zbuffer(
    edges: _Edges,
    boxes: torch.Tensor,
    tri_ids: torch.Tensor,
    height: int,
    width: int,
    max_candidates: int,
    face_image: torch.Tensor | None = None,
    images: int = 1,
) -> torch.Tensor:
    """Nearest-fragment keys `[images * H * W] int64` over the triangles `tri_ids` (row spans, chunked).

    Rows are image rows; with `face_image`, triangle `t`'s samples go to image `face_image[t]` (its rows are
    offset by `face_image[t] * H` in the z-buffer only, so its edge arithmetic is that of a single image).
    """
    zbuf = torch.full((images * height * width,), _EMPTY_KEY, dtype=torch.int64, device=boxes.device)
    # (triangle, row) pairs: one per sample row inside each triangle's box.
    owner, rank = _expand(boxes[tri_ids, 3] - boxes[tri_ids, 1] + 1)
    span_tri = tri_ids[owner]
    span_row = boxes[span_tri, 1] + rank
    spans = _row_spans(edges, span_tri, span_row, boxes)
    counts = (spans[:, 1] - spans[:, 0] + 1).clamp(min=0)
    keep = torch.nonzero(counts > 0).squeeze(1)  # one host sync for four selections
    span_tri, span_row, spans, counts = span_tri[keep], span_row[keep], spans[keep], counts[keep]
    # Chunks of consecutive spans holding about `max_candidates` samples each.
    ends = torch.cumsum(counts, dim=0)
    n_chunks = int(ends[-1]) // max_candidates + 1 if ends.numel() else 1
    bounds = torch.searchsorted(ends, torch.arange(1, n_chunks, device=ends.device) * max_candidates)
    bounds = [0, *bounds.tolist(), ends.numel()]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        owner, rank = _expand(counts[lo:hi])
        tri = span_tri[lo:hi][owner]
        rows = span_row[lo:hi][owner]
        cols = spans[lo:hi, 0][owner] + rank
        x = cols.to(edges.base.dtype)[:, None] + 0.5  # (N, 1)
        y = rows.to(edges.base.dtype)[:, None] + 0.5
        inside, _, depth = _inside_and_bary(edges, tri, x, y)
        inside, depth = torch.nonzero(inside[:, 0]).squeeze(1), depth[:, 0]  # one host sync, four selections
        depth_bits = depth.to(torch.float32)[inside].view(torch.int32).to(torch.int64)
        tri = tri[inside]
        keys = (depth_bits << 32) | tri
        rows = rows[inside] if face_image is None else rows[inside] + face_image[tri] * height
        zbuf.scatter_reduce_(0, rows * width + cols[inside], keys, reduce="amin")
    return zbuf


def rasterize(
    screen: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    near: float = 1e-6,
    max_candidates: int = 1 << 21,
    face_image: torch.Tensor | None = None,
    images: int = 1,
) -> Fragments:
    """Rasterise triangles given in screen space, into one image or into several images of one size at once.

    Args:
        screen: `[V, 3] float32` per vertex `(x, y, w)`: pixel coordinates (origin top-left, `y` down) and depth
            along the view axis (positive in front of the camera). float64 works too (slower).
        faces: `[F, 3] int64` vertex indices, same device.
        height, width: image size in samples.
        near: triangles with any vertex at `w <= near` are dropped.
        max_candidates: candidate samples per batch; bounds the peak memory (about 60 bytes each).
        face_image: `[F] int64` the image each face is drawn into (its screen coordinates are that image's),
            for `images` images in one pass; None: one image. Each image's fragments are those of rasterising
            its faces alone (same arithmetic, same z-test; face ids are rows of `faces`).
        images: the number of images (with `face_image`).

    Returns:
        `Fragments` on the inputs' device: `[H, W]` fields for one image, `[images, H, W]` with `face_image`.
    """
    if face_image is not None and (face_image.shape != faces.shape[:1] or images < 1):
        raise InputError(f"face_image must be [F] = [{faces.shape[0]}] image indices < images = {images}")
    tri = screen[faces]  # (F, 3, 3)
    edges = _edge_data(tri)
    boxes = _pixel_boxes(tri, height, width)
    area = (edges.sign * _canonical(edges.base, edges.direction, tri[..., 0], tri[..., 1])).sum(dim=-1)
    valid = (tri[..., 2] > near).all(dim=1) & (area > 0) & torch.isfinite(tri).all(dim=(1, 2))
    valid &= (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    if logger.isEnabledFor(logging.DEBUG):  # the count is a host sync: only when it is logged
        behind = int(((tri[..., 2] <= near).any(dim=1)).sum())
        if behind:
            logger.debug("dropped %d triangles with a vertex behind the near plane", behind)
    tri_ids = torch.nonzero(valid).flatten()
    images = images if face_image is not None else 1
    zbuf = _zbuffer(edges, boxes, tri_ids, height, width, max_candidates, face_image, images)

    covered = torch.nonzero(zbuf != _EMPTY_KEY).flatten()
    total = images * height * width
    face_id = torch.full((total,), -1, dtype=torch.int64, device=screen.device)
    bary = torch.zeros(total, 3, dtype=screen.dtype, device=screen.device)
    depth = torch.zeros(total, dtype=screen.dtype, device=screen.device)
    fid = zbuf[covered] & _LOW32
    x = (covered % width).to(screen.dtype)[:, None] + 0.5  # (N, 1): one sample per winning face
    y = (covered // width % height).to(screen.dtype)[:, None] + 0.5
    _, screen_bary, sample_depth = _inside_and_bary(edges, fid, x, y)
    # Perspective correction: attributes interpolate linearly in 1/w (DESIGN section 2's pinhole).
    persp = screen_bary[:, 0] * edges.inv_w[fid] * sample_depth
    face_id[covered] = fid
    bary[covered] = persp
    depth[covered] = sample_depth[:, 0]
    shape = (height, width) if face_image is None else (images, height, width)
    return Fragments(face_id=face_id.view(shape), bary=bary.view(*shape, 3), depth=depth.view(shape))


def interpolate(
    attributes: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """Interpolate per-vertex `attributes [V, C]` at fragments `face_id [...]`, `bary [..., 3]` -> `[..., C]`.

    Entries with `face_id < 0` give 0.
    """
    fid = face_id.clamp(min=0)
    corner = attributes[faces[fid]]  # (..., 3, C)
    out = (bary[..., None] * corner).sum(dim=-2)
    return torch.where((face_id >= 0)[..., None], out, torch.zeros_like(out))
