"""Back-projection: lift 2D feature maps to per-voxel features (DESIGN section 3).

Every voxel centre is projected into the image (`Camera.project`, DESIGN section 2) and every feature map is
sampled bilinearly there (as `grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`: edge values
replicated within the image's last half pixel). The same feature is broadcast along the ray: no depth or visibility
reasoning; the 3D network learns occlusion. One extra channel, the in-image mask (1 where the voxel projects inside
the image and lies in front of the camera), is appended; features are zero wherever the mask is 0.

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

**Batched, without host syncs.** A whole batch is lifted at once: each voxel gathers its own camera's constants
(world-to-camera matrix, focal length, image side; float32) by its batch index, and each map is sampled as the
weighted sum of its four bilinear neighbours (`embedding_bag`) from its rows flattened to `[B*H*W, C]` (offset
`b*H*W`); the depth and alpha maps likewise at the nearest pixel. No Python loop over the batch, no `nonzero`, no
data-dependent shape: on a GPU a training batch's lift only queues work. Cameras of one batch may differ in FoV,
distance, pose and image side. float64 maps are interpolated in float64, all others in float32 at float32
coordinates, on every device (a flattened float32 copy of half-precision maps lives for the call); results are cast
back to each map's dtype.

Two paths, numerically identical at the same voxels (both run the batched lift):
- `lift_dense`: every voxel of an `R^3` grid -> `[B, C_out, R, R, R]` (stage 1's small grids only).
- `lift_sparse`: given active voxels `coords [N, 4] (b, i, j, k)` -> `[N, C_out]`; memory is `O(N * C_out)`,
  never a dense `R^3 x C` tensor, and large sets are processed in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pixal3d.camera import Camera, coords_to_centers
from pixal3d.encoder import FeatureMaps
from pixal3d.transfer import to_device

DEPTH_CHANNELS = 5
"""Channels the depth-aware lift adds: signed distance, front, on, behind, silhouette."""
DEPTH_CLAMP = 1.0
"""The signed distance channel is clamped to `[-DEPTH_CLAMP, DEPTH_CLAMP]` (volume units)."""
_DENSE_CHUNK = 262144
"""Voxels `lift_dense` lifts at once (bounds its temporaries like `lift_sparse`'s `chunk_size`)."""


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


def _nearest(image: torch.Tensor, uv: torch.Tensor, size: int) -> torch.Tensor:
    """`image [H, W]` at the pixels holding `uv [M, 2]` (pixels of an `size`-wide image) -> `[M]`, float32."""
    h, w = image.shape
    col = torch.floor(uv[:, 0] * (w / size)).nan_to_num(0.0).clamp(0, w - 1).long()
    row = torch.floor(uv[:, 1] * (h / size)).nan_to_num(0.0).clamp(0, h - 1).long()
    return image.float()[row, col]


def _classify(
    point_depth: torch.Tensor, inside: torch.Tensor, surface: torch.Tensor, alpha_at: torch.Tensor, resolution: int,
) -> torch.Tensor:
    """The depth channels from the depth map and alpha read at the points' pixels (`surface`, `alpha_at`, `[M]`
    float32; anything where `inside` is False) -> `[M, 5]` float32 (see `depth_channels`)."""
    silhouette = inside & (alpha_at > 0.5)
    known = silhouette & torch.isfinite(surface) & (surface > 0)
    signed = torch.where(known, point_depth.float() - surface, torch.zeros_like(surface))
    signed = signed.clamp(-DEPTH_CLAMP, DEPTH_CLAMP)
    tol = 0.5 * math.sqrt(3.0) / resolution
    front = known & (signed < -tol)
    behind = known & (signed > tol)
    on = known & ~front & ~behind
    return torch.stack([signed, front.float(), on.float(), behind.float(), silhouette.float()], dim=1)


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
    return _classify(point_depth, inside, _nearest(depth, uv, size), _nearest(alpha, uv, size), resolution)


# ------------------------------------------------------------------------------------------- the batched lift
# (module docstring, "Batched, without host syncs")
_W2C, _FOCAL, _SIZE = slice(0, 12), 12, 13  # columns of the camera table


def _camera_table(cams: Sequence[Camera], device: torch.device) -> torch.Tensor:
    """`[B, 14] float32` on `device`: each camera's world-to-camera rows (12, from `Camera.w2c()`), focal length
    (px) and image side `S` (px), rounded to float32 as `Camera.project` rounds them."""
    rows: dict[int, torch.Tensor] = {}  # a camera shared by the batch is inverted once
    for cam in cams:
        if id(cam) not in rows:
            consts = torch.tensor([cam.focal, float(cam.size)], dtype=torch.float64)
            rows[id(cam)] = torch.cat([cam.w2c()[:3].reshape(12), consts]).float()
    return to_device(torch.stack([rows[id(cam)] for cam in cams]), device)  # pinned, non-blocking: no sync


def _sample_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 maps are interpolated in float64, all others (float32, float16, bfloat16) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flatten(m: torch.Tensor) -> torch.Tensor:
    """A map `[B, C, H, W]` as rows `[B*H*W, C]` in its sampling dtype: a view of a channels-last map already in
    that dtype, else one copy (layout and upcast at once)."""
    b, c, h, w = m.shape
    if m.dtype == _sample_dtype(m.dtype) and m.permute(0, 2, 3, 1).is_contiguous():
        return m.permute(0, 2, 3, 1).view(b * h * w, c)
    rows = torch.empty(b * h * w, c, device=m.device, dtype=_sample_dtype(m.dtype))
    rows.view(b, h, w, c).copy_(m.permute(0, 2, 3, 1))  # (B, C, H, W) -> (B*H*W, C)
    return rows


def _bilinear(rows: torch.Tensor, height: int, width: int, base: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(mode="bilinear", padding_mode="border", align_corners=False)` of one map, as a gather.

    Args:
        rows: `[B*H*W, C]` the map flattened (`_flatten`), in the sampling dtype.
        height, width: the map's `H`, `W`.
        base: `[M] int64` each point's first row, `b*H*W`.
        grid: `[M, 2]` normalised coordinates (x, y), in the sampling dtype.

    Returns:
        `[M, C]` in the sampling dtype.
    """
    # Unnormalise (align_corners=False), then clamp to the border: the pixel-centre coordinate lies in [0, size-1],
    # so the far neighbour is out of range only with weight 0 (its index is clamped, its value is multiplied by 0).
    ix = (((grid[:, 0] + 1) * width - 1) / 2).clamp(0, width - 1)
    iy = (((grid[:, 1] + 1) * height - 1) / 2).clamp(0, height - 1)
    x0, y0 = ix.floor(), iy.floor()
    east, south = ix - x0, iy - y0
    west, north = 1 - east, 1 - south
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp_max(width - 1), (y0 + 1).clamp_max(height - 1)
    top, bottom = base + y0 * width, base + y1 * width
    index = torch.stack([top + x0, top + x1, bottom + x0, bottom + x1], dim=1)  # (M, 4): nw, ne, sw, se
    weight = torch.stack([north * west, north * east, south * west, south * east], dim=1)
    # The weighted sum of each point's four rows in one fused kernel (CPU and CUDA): no [M, 4, C] temporary.
    return F.embedding_bag(index, rows, per_sample_weights=weight, mode="sum")


class _BatchLift:
    """One call's inputs prepared for lifting any rows of points (`__call__`): the maps flattened to rows, the
    cameras as a table, the depth and alpha maps flattened."""

    def __init__(self, maps: Sequence[torch.Tensor], cams: Sequence[Camera], resolution: int,
                 depth: torch.Tensor | None, alpha: torch.Tensor | None) -> None:
        self.device, self.dtype = maps[0].device, maps[0].dtype
        self.maps = [(_flatten(m), m.shape[2], m.shape[3], m.dtype) for m in maps]  # (rows, H, W, map dtype)
        self.table = _camera_table(cams, self.device)
        self.resolution = resolution
        # depth and alpha: (flat [B*h*w] float32, h, w), read at the nearest pixel
        self.geometry = None if depth is None else [
            (g.to(self.device).float().reshape(-1), g.shape[2], g.shape[3]) for g in (depth, alpha)]
        self.channels = sum(m.shape[1] for m in maps) + 1 + (0 if depth is None else DEPTH_CHANNELS)

    def __call__(self, out: torch.Tensor, b: torch.Tensor, points: torch.Tensor) -> None:
        """Lift the points into `out [M, channels]` (features, [depth channels,] mask).

        Args:
            out: `[M, channels]` destination, in the maps' dtype.
            b: `[M] int64` each point's batch element, in `[0, B)`.
            points: `[M, 3] float32` volume frame.
        """
        cam = self.table.index_select(0, b)  # (M, 14): each point's camera
        w2c = cam[:, _W2C].reshape(-1, 3, 4)
        # Camera.project per point: to camera coordinates, then the pinhole (DESIGN section 2)
        pc = (w2c[:, :, :3] * points[:, None, :]).sum(-1) + w2c[:, :, 3]  # (M, 3)
        point_depth = -pc[:, 2]
        focal, size = cam[:, _FOCAL], cam[:, _SIZE]
        half = size * 0.5
        uv = torch.stack([focal * pc[:, 0] / point_depth + half, -focal * pc[:, 1] / point_depth + half], dim=1)
        inside = (point_depth > 0) & (uv >= 0).all(-1) & (uv <= size[:, None]).all(-1)
        # Points behind the camera would sample a mirrored position; the mask below zeroes them like off-image ones.
        grid = (uv * (2.0 / size)[:, None] - 1.0).nan_to_num(0.0, 0.0, 0.0)  # Camera.normalized
        mask = inside[:, None]
        start = 0
        for rows, height, width, dtype in self.maps:
            # interpolated in the sampling dtype (float32 or float64), cast back to the map's dtype
            feats = _bilinear(rows, height, width, b * (height * width), grid.to(rows.dtype)).to(dtype)
            # Features outside the image (border-replicated) are zeroed: features and mask agree.
            out[:, start : start + rows.shape[1]] = feats * mask.to(dtype)
            start += rows.shape[1]
        if self.geometry is not None:
            (depth, dh, dw), (alpha, ah, aw) = self.geometry
            surface = depth[self._nearest_index(b, uv, size, dh, dw)]
            alpha_at = alpha[self._nearest_index(b, uv, size, ah, aw)]
            out[:, start : start + DEPTH_CHANNELS] = _classify(point_depth, inside, surface, alpha_at, self.resolution)
        out[:, -1] = inside

    @staticmethod
    def _nearest_index(b: torch.Tensor, uv: torch.Tensor, size: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """`[M] int64` rows of a flattened `[B, 1, h, w]` map at the pixels holding `uv` (as `_nearest`)."""
        col = torch.floor(uv[:, 0] * (w / size)).nan_to_num(0.0).clamp(0, w - 1).long()
        row = torch.floor(uv[:, 1] * (h / size)).nan_to_num(0.0).clamp(0, h - 1).long()
        return b * (h * w) + row * w + col


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

    The whole batch is lifted at once (each voxel takes its camera by its batch index), in chunks of rows, with
    no host sync: on a GPU the call only queues work.

    Args:
        maps: feature maps, each `[B, C_i, H_i, W_i]` float (any float dtype), covering the whole image.
        cameras: one `Camera` for the whole batch, or one per batch element (their sizes may differ).
        coords: `[N, 4]` integer `(b, i, j, k)` voxel coordinates at `resolution`, `b` in `[0, B)` (not checked:
            that would need a host sync; an index out of range fails in the gather).
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
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of voxels, got {chunk_size}")
    lift = _BatchLift(maps, cams, resolution, depth, alpha)
    out = torch.empty(coords.shape[0], lift.channels, device=lift.device, dtype=lift.dtype)
    coords = coords.to(lift.device)
    for start in range(0, coords.shape[0], chunk_size):
        rows = coords[start : start + chunk_size]
        lift(out[start : start + chunk_size], rows[:, 0].long(), coords_to_centers(rows[:, 1:], resolution))
    return out


def lift_dense(
    maps: Sequence[torch.Tensor], cameras: Camera | Sequence[Camera], resolution: int,
    depth: torch.Tensor | None = None, alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lift feature maps to every voxel of an `R^3` grid (stage 1's small grids).

    The same batched lift as `lift_sparse` (identical values at the same voxels), over every voxel of every
    batch element, in chunks.

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
    lift = _BatchLift(maps, cams, resolution, depth, alpha)
    r = resolution
    total = batch * r**3
    out = torch.empty(total, lift.channels, device=lift.device, dtype=lift.dtype)
    for start in range(0, total, _DENSE_CHUNK):
        flat = torch.arange(start, min(total, start + _DENSE_CHUNK), device=lift.device)  # b-major, then i, j, k
        b, voxel = flat // r**3, flat % r**3
        ijk = torch.stack([voxel // (r * r), (voxel // r) % r, voxel % r], dim=1)
        lift(out[start : start + _DENSE_CHUNK], b, coords_to_centers(ijk, r))
    return out.reshape(batch, r, r, r, -1).permute(0, 4, 1, 2, 3).contiguous()  # (B*R^3, C) -> (B, C, R, R, R)


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
