"""Depth head: a coarse depth map of the visible surface at the input view, from the encoder's features.

Pixal3D's light estimator predicts the camera (our FoV head) and a coarse depth map; features are then cast along
the rays to that depth (DESIGN section 3). This head reads the fused `/4` feature map and the raw RGBA image
(average-pooled to `/4`) and predicts, per `/4` pixel, the volume-frame `z` of the first surface its ray meets:
`z` in `[-0.5, 0.5]` (DESIGN section 2: `+z` towards the camera). The camera-space depth along the optical axis is
then `d - z` with `d = 0.5 / tan(fov / 2)`, so the output is in the volume frame's units whatever the FoV: the
scale comes from the frame, not from a per-image normalisation (the "scale-aware" part of the training loss is
simply an L1 in those units; see `depth_loss`).

Ground truth (`splat_depth`): the dual vertices of the sample's fine voxels projected with the inference camera and
z-buffered per `/4` pixel. At `R_hr = 128` and `S / 4 = 64` every pixel holds several vertices, so the splat is a
dense front surface; the training sample's alignment invariant (voxels project onto the alpha, IoU >= 0.97) makes
it pixel-aligned with the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.camera import Camera
from pixal3d.encoder import FeatureMaps
from pixal3d.errors import InputError


@dataclass
class DepthHeadConfig:
    """Depth head hyper-parameters (defaults: the shipped tiny model)."""

    feature_channels: int = 64
    """C of the encoder's fused `/4` map (EncoderConfig.channels)."""
    image_channels: int = 4
    """Channels of the raw image map (RGBA)."""
    hidden: int = 64
    """Width of the convolutions."""
    layers: int = 4
    """3x3 convolutions before the output layer."""
    dilations: list[int] = field(default_factory=list)
    """Dilation of each 3x3 convolution, cycled over the layers; empty: all 1 (the shipped head). A cycle such as
    `[1, 2, 4, 8, 16]` lets the head see the whole `/4` map, so the object's depth offset can come from its whole
    silhouette instead of a 9x9-cell window."""

    def __post_init__(self) -> None:
        if self.layers < 1 or self.hidden < 1:
            raise InputError(f"depth head needs layers >= 1 and hidden >= 1, got {self.layers}, {self.hidden}")
        self.dilations = [int(d) for d in self.dilations]
        if any(d < 1 for d in self.dilations):
            raise InputError(f"depth head dilations must be >= 1, got {self.dilations}")

    def dilation(self, layer: int) -> int:
        """The dilation of 3x3 convolution `layer`."""
        return self.dilations[layer % len(self.dilations)] if self.dilations else 1


class DepthHead(nn.Module):
    """`FeatureMaps` -> volume-frame `z` of the visible surface per `/4` pixel, `[B, 1, S/4, S/4]`."""

    def __init__(self, config: DepthHeadConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.feature_channels + config.image_channels
        for layer in range(config.layers):
            dilation = config.dilation(layer)
            layers += [nn.Conv2d(channels, config.hidden, 3, padding=dilation, dilation=dilation), nn.GroupNorm(8 if config.hidden % 8 == 0 else 1,
                                                                                      config.hidden), nn.GELU()]
            channels = config.hidden
        layers.append(nn.Conv2d(channels, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: FeatureMaps) -> torch.Tensor:
        """`features.maps[0] [B, 4, S, S]`, `maps[1] [B, C, S/4, S/4]` -> `z [B, 1, S/4, S/4]` float32 in (-0.5, 0.5)."""
        c = self.config
        z = self.net(features.fused_with_image(c.feature_channels, c.image_channels, "depth head"))
        return 0.5 * torch.tanh(z.float())


def z_to_depth(z: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Volume-frame `z` -> depth along the optical axis (`d - z`), same shape, float32."""
    return camera.eye_distance - z.float()


def check_depth(depth: object) -> torch.Tensor:
    """A given depth map as float32, or `InputError` unless it is a finite `[H, W]` tensor >= 0."""
    if not isinstance(depth, torch.Tensor) or depth.ndim != 2 or not depth.is_floating_point():
        raise InputError(f"depth must be a float [H, W] tensor (volume units, 0 = no surface), got "
                         f"{type(depth).__name__} {tuple(getattr(depth, 'shape', ()))}")
    d = depth.detach().float()
    if not bool(torch.isfinite(d).all()) or bool((d < 0).any()):
        raise InputError("depth must be finite and >= 0 everywhere (0 = no surface)")
    return d


def pool_depth(depth: torch.Tensor, size: int) -> torch.Tensor:
    """A given depth map `[H, W]` (along the optical axis, volume units, 0 = no surface) -> `[size, size]` float32,
    each cell the mean of the valid pixels it covers and `+inf` (no surface, as the lift reads it) where none is
    (`F.adaptive_avg_pool2d` bins). The map must have passed `check_depth`."""
    d = depth.detach().float()
    valid = (d > 0).float()[None, None]
    total = F.adaptive_avg_pool2d(d[None, None] * valid, size)[0, 0]
    count = F.adaptive_avg_pool2d(valid, size)[0, 0]
    return torch.where(count > 0, total / count.clamp_min(1e-12), torch.full_like(total, float("inf")))


def finite_depth(depth: torch.Tensor | None) -> torch.Tensor | None:
    """`depth` with its no-surface cells (`inf`) set to its farthest surface, for what resizes it (the silhouette
    rule's patches); None where nothing is finite."""
    if depth is None:
        return None
    finite = torch.isfinite(depth)
    if not bool(finite.any()):
        return None
    return torch.where(finite, depth, depth[finite].max())


def splat_depth(points: torch.Tensor, batch: torch.Tensor, cameras: list[Camera], size: int) -> torch.Tensor:
    """Z-buffer volume-frame points into `size x size` maps of the nearest point's volume `z` per pixel.

    Args:
        points: `[N, 3] float`, volume frame.
        batch: `[N] int` batch index of each point.
        cameras: one `Camera` per batch element (its `size` may differ from `size`: pixels are rescaled).
        size: side of the output maps.

    Returns:
        `z [B, 1, size, size] float32`: the largest `z` (nearest to the camera) of the points falling in each pixel,
        `-inf` where none does.
    """
    out = torch.full((len(cameras) * size * size,), -torch.inf, device=points.device)
    for b, camera in enumerate(cameras):
        sel = batch == b
        uv, depth = camera.project(points[sel].float())
        px = torch.floor(uv * (size / camera.size)).long()  # (M, 2) pixel (column, row)
        ok = (depth > 0) & (px >= 0).all(1) & (px < size).all(1)
        index = b * size * size + px[ok, 1] * size + px[ok, 0]
        out.scatter_reduce_(0, index, points[sel][ok, 2].float(), reduce="amax")
    return out.view(len(cameras), 1, size, size)


def depth_loss(z_pred: torch.Tensor, z_true: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """L1 in volume units over the pixels where the object is (alpha > 0.5) and the splat found a surface.

    Args:
        z_pred: `[B, 1, H, W]` the head's output.
        z_true: `[B, 1, H, W]` from `splat_depth` (`-inf` = no surface).
        alpha: `[B, 1, S, S]` the image's alpha in [0, 1]; average-pooled to `H x W`.
    """
    coverage = F.adaptive_avg_pool2d(alpha.float(), z_pred.shape[-2:])
    valid = (coverage > 0.5) & torch.isfinite(z_true)
    diff = (z_pred.float() - torch.where(valid, z_true, torch.zeros_like(z_true))).abs()
    return (diff * valid).sum() / valid.sum().clamp_min(1)


def depth_metrics(depth_pred: torch.Tensor, depth_true: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """AbsRel and delta < 1.25 of positive depths at the `valid` pixels (NaN when none is valid).

    Args:
        depth_pred, depth_true: same shape, depth along the optical axis (> 0).
        valid: bool, same shape.
    """
    p, t = depth_pred[valid].double(), depth_true[valid].double()
    if t.numel() == 0:
        return {"depth_absrel": float("nan"), "depth_delta1": float("nan")}
    ratio = torch.maximum(p / t, t / p)
    return {"depth_absrel": float(((p - t).abs() / t).mean()), "depth_delta1": float((ratio < 1.25).double().mean())}
