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

Two paths, numerically identical at the same voxels:
- `lift_dense`: every voxel of an `R^3` grid -> `[B, C_out, R, R, R]` (stage 1's small grids only).
- `lift_sparse`: given active voxels `coords [N, 4] (b, i, j, k)` -> `[N, C_out]`; memory is `O(N * C_out)`,
  never a dense `R^3 x C` tensor, and large sets are processed in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pixal3d.camera import Camera, coords_to_centers, voxel_centers

# grid_sample has no half-precision CPU kernel on every torch build; sample in float32 there and cast back.
_CPU_SAMPLE_DTYPES = (torch.float32, torch.float64)


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


def _lift_points(
    maps: Sequence[torch.Tensor], camera: Camera, b: int, points: torch.Tensor
) -> torch.Tensor:
    """Lift batch element `b` at volume-frame `points [M, 3]` -> `[M, C_out]` (features, then mask)."""
    uv, depth = camera.project(points.float())
    size = camera.size
    inside = (depth > 0) & (uv >= 0).all(-1) & (uv <= size).all(-1)
    # Points behind the camera would sample a mirrored position; the mask below zeroes them like off-image ones.
    grid = camera.normalized(uv).nan_to_num(0.0, 0.0, 0.0)
    feats = torch.cat(_sample(maps, b, grid[None, :, None, :]), dim=1)
    mask = inside[:, None].to(feats.dtype)
    # Features outside the image (border-replicated by grid_sample) are zeroed: features and mask agree.
    return torch.cat([feats * mask, mask], dim=1)


def lift_sparse(
    maps: Sequence[torch.Tensor],
    cameras: Camera | Sequence[Camera],
    coords: torch.Tensor,
    resolution: int,
    chunk_size: int = 262144,
) -> torch.Tensor:
    """Lift feature maps to the active voxels.

    Args:
        maps: feature maps, each `[B, C_i, H_i, W_i]` float (any float dtype), covering the whole image.
        cameras: one `Camera` for the whole batch, or one per batch element.
        coords: `[N, 4]` integer `(b, i, j, k)` voxel coordinates at `resolution`.
        resolution: grid resolution `R` of `coords`.
        chunk_size: voxels processed at once (bounds the temporary memory).

    Returns:
        `[N, sum(C_i) + 1]` in the maps' dtype and device: the sampled features, then the in-image mask.
    """
    batch = _check_maps(maps)
    cams = _as_cameras(cameras, batch)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (b, i, j, k), got {tuple(coords.shape)}")
    device, dtype = maps[0].device, maps[0].dtype
    channels = sum(m.shape[1] for m in maps) + 1
    out = torch.zeros(coords.shape[0], channels, device=device, dtype=dtype)
    coords = coords.to(device)
    for b in range(batch):
        idx = torch.nonzero(coords[:, 0] == b, as_tuple=True)[0]
        for start in range(0, idx.numel(), chunk_size):
            sel = idx[start : start + chunk_size]
            points = coords_to_centers(coords[sel, 1:], resolution)
            out[sel] = _lift_points(maps, cams[b], b, points)
    return out


def lift_dense(
    maps: Sequence[torch.Tensor], cameras: Camera | Sequence[Camera], resolution: int
) -> torch.Tensor:
    """Lift feature maps to every voxel of an `R^3` grid (stage 1's small grids).

    Args:
        maps: feature maps, each `[B, C_i, H_i, W_i]`.
        cameras: one `Camera` for the whole batch, or one per batch element.
        resolution: grid resolution `R`.

    Returns:
        `[B, sum(C_i) + 1, R, R, R]` (volume axes x, y, z), in the maps' dtype and device.
    """
    batch = _check_maps(maps)
    cams = _as_cameras(cameras, batch)
    device = maps[0].device
    points = voxel_centers(resolution, device=device).reshape(-1, 3)  # (R^3, 3), i-major like coords
    per_batch = [_lift_points(maps, cams[b], b, points) for b in range(batch)]
    r = resolution
    # (R^3, C) -> (C, R, R, R) per element
    return torch.stack([f.T.reshape(-1, r, r, r) for f in per_batch], dim=0)


def lift_sparse_multiview(
    views: Sequence[tuple[Sequence[torch.Tensor], Camera | Sequence[Camera]]],
    coords: torch.Tensor,
    resolution: int,
) -> torch.Tensor:
    """Lift several views of one object (known cameras, relative to view 0) into the same voxels and average.

    Features are averaged over the views in which each voxel projects inside the image (a voxel seen by one
    view keeps that view's feature); the mask channel becomes the fraction of views that see the voxel.

    Args:
        views: `(maps, cameras)` per view, each as in `lift_sparse`.
        coords: `[N, 4]` integer `(b, i, j, k)`.
        resolution: grid resolution `R`.

    Returns:
        `[N, sum(C_i) + 1]`; identical views give exactly the single-view lift.
    """
    if len(views) == 0:
        raise ValueError("lift_sparse_multiview needs at least one view")
    lifted = [lift_sparse(maps, cams, coords, resolution) for maps, cams in views]
    return average_views(lifted)


def lift_dense_multiview(
    views: Sequence[tuple[Sequence[torch.Tensor], Camera | Sequence[Camera]]], resolution: int
) -> torch.Tensor:
    """Dense counterpart of `lift_sparse_multiview`: `[B, sum(C_i) + 1, R, R, R]`."""
    if len(views) == 0:
        raise ValueError("lift_dense_multiview needs at least one view")
    lifted = [lift_dense(maps, cams, resolution) for maps, cams in views]
    return average_views(lifted, channel_dim=1)


def average_views(lifted: Sequence[torch.Tensor], channel_dim: int = -1) -> torch.Tensor:
    """Average per-view lifts whose last channel (along `channel_dim`) is the in-image mask.

    Features: mask-weighted mean over views (0 where no view sees the voxel). Mask: mean over views.
    """
    stacked = torch.stack(list(lifted), dim=0)  # (V, *per_view_shape)
    dim = channel_dim % (stacked.ndim - 1) + 1  # the channel axis inside `stacked`
    feats, mask = stacked.split([stacked.shape[dim] - 1, 1], dim=dim)
    mean = (feats * mask).sum(dim=0) / mask.sum(dim=0).clamp_min(1.0)
    return torch.cat([mean, mask.mean(dim=0)], dim=dim - 1)
