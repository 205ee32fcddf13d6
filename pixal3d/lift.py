"""Back-projection: lift 2D feature maps to per-voxel features (DESIGN section 3).

Every voxel centre is projected into the image (`Camera.project`, DESIGN section 2) and every feature map is
sampled bilinearly there (`grid_sample`, `align_corners=False`, edge values replicated within the image's
last half pixel). The same feature is
broadcast along the ray: no depth or visibility reasoning; the 3D network learns occlusion. One extra channel,
the in-image mask (1 where the voxel projects inside the image and lies in front of the camera), is appended;
features are zero wherever the mask is 0.

Maps may have any resolution and channel count: each covers the whole image, so the normalised coordinate
`2 u / S - 1` is the same for all of them. Output channels are the maps' channels concatenated in order, then
the mask: `C_out = sum(C_i) + 1`.

**Depth-aware lift** (`depth` and `alpha` given, DESIGN section 3): five more channels per voxel, between the
features and the mask, say what the depth map and the silhouette say about it (`DEPTH_CHANNELS`):

- `signed distance`: the voxel centre's depth along the view axis minus the visible surface's depth at its
  projection (volume units; > 0 behind the surface, < 0 in front), clamped to `[-DEPTH_CLAMP, DEPTH_CLAMP]` =
  `[-1, 1]`, which never binds for view 0's canonical camera (both points lie in the cube, whose extent along the
  axis is 1). It is a difference of axis depths, i.e. the distance along the ray times the cosine of the ray's
  angle to the axis (at least `cos(fov / 2)`);
- `front`, `on`, `behind`: one-hot, `on` = `|signed distance| <= sqrt(3) / (2 R)` (half a voxel diagonal at the
  lift's resolution `R`, so a surface crossing a voxel marks it "on"), `front` below, `behind` above;
- `silhouette`: 1 where the input alpha at the projection (nearest pixel of `alpha`) is > 0.5.

The depth map is read at the nearest pixel (bilinear would blend the object's depth with the background's across
the silhouette's edge). Where the depth is missing (non-finite or <= 0: no surface) or the voxel projects outside
the silhouette or the image, the signed distance is 0 and the three indicators are 0: a "no surface" state.

Two paths, numerically identical at the same voxels:
- `lift_dense`: every voxel of an `R^3` grid -> `[B, C_out, R, R, R]` (stage 1's small grids only).
- `lift_sparse`: given active voxels `coords [N, 4] (b, i, j, k)` -> `[N, C_out]`; memory is `O(N * C_out)`,
  never a dense `R^3 x C` tensor, and large sets are processed in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pixal3d.camera import Camera, coords_to_centers, voxel_centers
from pixal3d.encoder import FeatureMaps

# grid_sample has no half-precision CPU kernel on every torch build; sample in float32 there and cast back.
_CPU_SAMPLE_DTYPES = (torch.float32, torch.float64)

DEPTH_CHANNELS = 5
"""Channels the depth-aware lift adds: signed distance, front, on, behind, silhouette."""
DEPTH_CLAMP = 1.0
"""The signed distance channel is clamped to `[-DEPTH_CLAMP, DEPTH_CLAMP]` (volume units)."""


def _check_maps(maps: Sequence[torch.Tensor]) -> int:
    if len(maps) == 0:
        raise ValueError("lift needs at least one feature map, got none")
    batch = maps[0].shape[0]
    for i, m in enumerate(maps):
        if m.ndim != 4 or m.shape[0] != batch:
            raise ValueError(f"feature map {i} must be [B={batch}, C, H, W], got {tuple(m.shape)}")
        if not m.is_floating_point():
            raise ValueError(f"feature map {i} must be a float tensor, got {m.dtype}")
    return batch


def _check_depth(depth: torch.Tensor | None, alpha: torch.Tensor | None, batch: int) -> None:
    if (depth is None) != (alpha is None):
        raise ValueError("the depth-aware lift needs both depth and alpha (or neither)")
    if depth is None:
        return
    for name, m in (("depth", depth), ("alpha", alpha)):
        if m.ndim != 4 or m.shape[:2] != (batch, 1) or not m.is_floating_point():
            raise ValueError(f"{name} must be a float [B={batch}, 1, H, W] map, got {tuple(m.shape)} {m.dtype}")


def _as_cameras(cameras: Camera | Sequence[Camera], batch: int) -> list[Camera]:
    if isinstance(cameras, Camera):
        return [cameras] * batch
    cams = list(cameras)
    if len(cams) != batch:
        raise ValueError(f"need one camera per batch element ({batch}), got {len(cams)}")
    return cams


def _sample(maps: Sequence[torch.Tensor], b: int, grid: torch.Tensor) -> list[torch.Tensor]:
    """Sample batch element `b` of every map at `grid [1, M, 1, 2]` -> list of `[M, C_i]` in the maps' dtype."""
    out = []
    for m in maps:
        src = m[b : b + 1]
        if src.device.type == "cpu" and src.dtype not in _CPU_SAMPLE_DTYPES:
            src = src.float()
        g = grid.to(src.dtype)
        s = F.grid_sample(src, g, mode="bilinear", padding_mode="border", align_corners=False)
        out.append(s[0, :, :, 0].T.to(m.dtype))  # (1, C, M, 1) -> (M, C)
    return out


def _nearest(image: torch.Tensor, uv: torch.Tensor, size: int) -> torch.Tensor:
    """`image [H, W]` at the pixels holding `uv [M, 2]` (pixels of an `size`-wide image) -> `[M]`, float32."""
    h, w = image.shape
    col = torch.floor(uv[:, 0] * (w / size)).nan_to_num(0.0).clamp(0, w - 1).long()
    row = torch.floor(uv[:, 1] * (h / size)).nan_to_num(0.0).clamp(0, h - 1).long()
    return image.float()[row, col]


def depth_channels(
    uv: torch.Tensor, point_depth: torch.Tensor, inside: torch.Tensor, depth: torch.Tensor, alpha: torch.Tensor,
    size: int, resolution: int,
) -> torch.Tensor:
    """What the depth map and silhouette say about points (see the module docstring) -> `[M, 5]` float32.

    Args:
        uv: `[M, 2]` projections (pixels of an image of side `size`).
        point_depth: `[M]` the points' depth along the view axis.
        inside: `[M] bool` in front of the camera and inside the image.
        depth: `[h, w]` the visible surface's depth along the view axis (non-finite or <= 0: no surface).
        alpha: `[H, W]` the input's alpha in [0, 1].
        size: image side `S` of the camera.
        resolution: the lift's grid resolution `R` ("on" tolerance `sqrt(3) / (2 R)`).

    Returns:
        `[M, 5]`: signed distance (clamped), front, on, behind, silhouette; zero outside the image.
    """
    silhouette = inside & (_nearest(alpha, uv, size) > 0.5)
    surface = _nearest(depth, uv, size)
    known = silhouette & torch.isfinite(surface) & (surface > 0)
    signed = torch.where(known, point_depth.float() - surface, torch.zeros_like(surface))
    signed = signed.clamp(-DEPTH_CLAMP, DEPTH_CLAMP)
    tol = 0.5 * math.sqrt(3.0) / resolution
    front = known & (signed < -tol)
    behind = known & (signed > tol)
    on = known & ~front & ~behind
    return torch.stack([signed, front.float(), on.float(), behind.float(), silhouette.float()], dim=1)


def _lift_points(
    maps: Sequence[torch.Tensor], camera: Camera, b: int, points: torch.Tensor,
    depth: torch.Tensor | None = None, alpha: torch.Tensor | None = None, resolution: int = 1,
) -> torch.Tensor:
    """Lift batch element `b` at volume-frame `points [M, 3]` -> `[M, C_out]` (features, [depth channels,] mask)."""
    uv, point_depth = camera.project(points.float())
    size = camera.size
    inside = (point_depth > 0) & (uv >= 0).all(-1) & (uv <= size).all(-1)
    # Points behind the camera would sample a mirrored position; the mask below zeroes them like off-image ones.
    grid = camera.normalized(uv).nan_to_num(0.0, 0.0, 0.0)
    feats = torch.cat(_sample(maps, b, grid[None, :, None, :]), dim=1)
    mask = inside[:, None].to(feats.dtype)
    # Features outside the image (border-replicated by grid_sample) are zeroed: features and mask agree.
    if depth is None:
        return torch.cat([feats * mask, mask], dim=1)
    geo = depth_channels(uv, point_depth, inside, depth[b, 0], alpha[b, 0], size, resolution)
    return torch.cat([feats * mask, geo.to(feats.dtype), mask], dim=1)


def lift_sparse(
    maps: Sequence[torch.Tensor],
    cameras: Camera | Sequence[Camera],
    coords: torch.Tensor,
    resolution: int,
    chunk_size: int = 262144,
    depth: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lift feature maps to the active voxels.

    Args:
        maps: feature maps, each `[B, C_i, H_i, W_i]` float (any float dtype), covering the whole image.
        cameras: one `Camera` for the whole batch, or one per batch element.
        coords: `[N, 4]` integer `(b, i, j, k)` voxel coordinates at `resolution`.
        resolution: grid resolution `R` of `coords`.
        chunk_size: voxels processed at once (bounds the temporary memory).
        depth: optional `[B, 1, h, w]` float depth along the view axis of the visible surface (volume units;
            non-finite or <= 0 where there is none), e.g. the depth head's map at `S/4`: the depth-aware lift.
        alpha: `[B, 1, H, W]` the input's alpha in [0, 1] (the silhouette); required iff `depth` is given.

    Returns:
        `[N, sum(C_i) + 1]` in the maps' dtype and device: the sampled features, then the in-image mask; with
        `depth`, `[N, sum(C_i) + DEPTH_CHANNELS + 1]`: features, the depth channels, the mask.
    """
    batch = _check_maps(maps)
    cams = _as_cameras(cameras, batch)
    _check_depth(depth, alpha, batch)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (b, i, j, k), got {tuple(coords.shape)}")
    device, dtype = maps[0].device, maps[0].dtype
    channels = sum(m.shape[1] for m in maps) + 1 + (DEPTH_CHANNELS if depth is not None else 0)
    out = torch.zeros(coords.shape[0], channels, device=device, dtype=dtype)
    coords = coords.to(device)
    for b in range(batch):
        idx = torch.nonzero(coords[:, 0] == b, as_tuple=True)[0]
        for start in range(0, idx.numel(), chunk_size):
            sel = idx[start : start + chunk_size]
            points = coords_to_centers(coords[sel, 1:], resolution)
            out[sel] = _lift_points(maps, cams[b], b, points, depth, alpha, resolution)
    return out


def lift_dense(
    maps: Sequence[torch.Tensor], cameras: Camera | Sequence[Camera], resolution: int,
    depth: torch.Tensor | None = None, alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lift feature maps to every voxel of an `R^3` grid (stage 1's small grids).

    Args:
        maps: feature maps, each `[B, C_i, H_i, W_i]`.
        cameras: one `Camera` for the whole batch, or one per batch element.
        resolution: grid resolution `R`.
        depth, alpha: the depth-aware lift's inputs, as in `lift_sparse`.

    Returns:
        `[B, C_out, R, R, R]` (volume axes x, y, z), in the maps' dtype and device; `C_out` as in `lift_sparse`.
    """
    batch = _check_maps(maps)
    cams = _as_cameras(cameras, batch)
    _check_depth(depth, alpha, batch)
    device = maps[0].device
    points = voxel_centers(resolution, device=device).reshape(-1, 3)  # (R^3, 3), i-major like coords
    per_batch = [_lift_points(maps, cams[b], b, points, depth, alpha, resolution) for b in range(batch)]
    r = resolution
    # (R^3, C) -> (C, R, R, R) per element
    return torch.stack([f.T.reshape(-1, r, r, r) for f in per_batch], dim=0)


View = tuple  # (maps, cameras) or (maps, cameras, depth, alpha): one view of `lift_*_multiview`


def _unpack(view: View) -> tuple[Sequence[torch.Tensor], Camera | Sequence[Camera], dict]:
    if len(view) not in (2, 4):
        raise ValueError(f"a view is (maps, cameras) or (maps, cameras, depth, alpha), got {len(view)} items")
    depth = {"depth": view[2], "alpha": view[3]} if len(view) == 4 else {}
    return view[0], view[1], depth


def lift_sparse_multiview(views: Sequence[View], coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Lift several views of one object (known cameras, relative to view 0) into the same voxels and average.

    Features are averaged over the views in which each voxel projects inside the image (a voxel seen by one
    view keeps that view's feature); the mask channel becomes the fraction of views that see the voxel. With the
    depth-aware lift, each view's depth channels come from its own camera, depth map and alpha, and are averaged
    like the features (so the indicators become the fractions of the seeing views that place the voxel in front /
    on / behind their surface, or inside their silhouette).

    Args:
        views: `(maps, cameras)` or `(maps, cameras, depth, alpha)` per view, each as in `lift_sparse`; all views
            with depth or none.
        coords: `[N, 4]` integer `(b, i, j, k)`.
        resolution: grid resolution `R`.

    Returns:
        `[N, C_out]` as `lift_sparse`; identical views give exactly the single-view lift.
    """
    if len(views) == 0:
        raise ValueError("lift_sparse_multiview needs at least one view")
    lifted = []
    for view in views:
        maps, cams, depth = _unpack(view)
        lifted.append(lift_sparse(maps, cams, coords, resolution, **depth))
    return average_views(lifted)


def lift_dense_multiview(views: Sequence[View], resolution: int) -> torch.Tensor:
    """Dense counterpart of `lift_sparse_multiview`: `[B, C_out, R, R, R]`."""
    if len(views) == 0:
        raise ValueError("lift_dense_multiview needs at least one view")
    lifted = []
    for view in views:
        maps, cams, depth = _unpack(view)
        lifted.append(lift_dense(maps, cams, resolution, **depth))
    return average_views(lifted, channel_dim=1)


def average_views(lifted: Sequence[torch.Tensor], channel_dim: int = -1) -> torch.Tensor:
    """Average per-view lifts whose last channel (along `channel_dim`) is the in-image mask.

    Features (and depth channels): mask-weighted mean over views (0 where no view sees the voxel). Mask: mean over
    views. Every view must have the same channels (all with the depth-aware lift or none).
    """
    stacked = torch.stack(list(lifted), dim=0)  # (V, *per_view_shape)
    dim = channel_dim % (stacked.ndim - 1) + 1  # the channel axis inside `stacked`
    feats, mask = stacked.split([stacked.shape[dim] - 1, 1], dim=dim)
    mean = (feats * mask).sum(dim=0) / mask.sum(dim=0).clamp_min(1.0)
    return torch.cat([mean, mask.mean(dim=0)], dim=dim - 1)


def lift_views(
    views: Sequence[tuple[FeatureMaps, Camera | Sequence[Camera]]],
    resolution: int,
    coords: torch.Tensor | None = None,
    depths: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """The flows' lift of a condition: every view's `FeatureMaps` at the active voxels or the whole grid, averaged.

    Args:
        views: `(features, cameras)` per view, view 0 first (`FlowCondition.views`).
        resolution: grid resolution `R`.
        coords: `[N, 4] (b, i, j, k)` active voxels (`lift_sparse`), or None for every voxel (`lift_dense`).
        depths: for the depth-aware lift, one `[B, 1, h, w]` depth map per view (`FlowCondition.depths`); the alpha
            is channel 3 of each view's raw RGBA map (`maps[0]`). None: the plain lift.

    Returns:
        `[N, C_out]` (sparse) or `[B, C_out, R, R, R]` (dense); one view is lifted as it is, several are averaged
        (`lift_sparse_multiview`, `lift_dense_multiview`).
    """
    if depths is None:
        per_view = [(feats.maps, cams) for feats, cams in views]
    else:
        per_view = [(feats.maps, cams, *_depth_and_alpha(feats, depth))
                    for (feats, cams), depth in zip(views, depths, strict=True)]
    if len(per_view) == 1:
        maps, cams, depth = _unpack(per_view[0])
        if coords is not None:
            return lift_sparse(maps, cams, coords, resolution, **depth)
        return lift_dense(maps, cams, resolution, **depth)
    if coords is not None:
        return lift_sparse_multiview(per_view, coords, resolution)
    return lift_dense_multiview(per_view, resolution)


def _depth_and_alpha(feats: FeatureMaps, depth: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The depth-aware lift's `depth` and `alpha` (channel 3 of the raw RGBA map) of one view."""
    if depth is None:
        raise ValueError("this flow has depth_lift: its condition needs a depth map per view "
                         "(stages.make_condition(features, cameras, depths=...), FlowCondition.depth)")
    image = feats.maps[0]
    return depth.to(image.device), image[:, 3:4]
