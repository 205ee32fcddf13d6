"""Visible texels take their base colour from the input pixels (DESIGN section 3, "Exact where the image speaks").

Every surface point the input camera sees (a depth test against the asset's own mesh) is projected into the
input image, and its base colour becomes the image's colour there with the lighting divided out, blended into the
texture stage's prediction by a weight that falls to 0 at grazing angles, at the silhouette and at occlusion
boundaries (where one pixel mixes two surfaces). Points the camera does not see keep the prediction. Metallic,
roughness and normals stay the model's.

Shading removal (`albedo_from_image`): the image is `albedo x shading` with unknown lights and exposure. The default
("retinex") divides each pixel by a smooth estimate of the shading, the brightness (largest channel) blurred over
the mask with a Gaussian of `shading_sigma` x S, and multiplies by a level: by default the image's own, the
`level_quantile` of that shading estimate over the mask, so the lit side keeps its brightness (a white truck stays
white, a yellow duck yellow), shadowed parts are lifted to it, and edges, text and decals stay at pixel precision.
`target_albedo` fixes the level instead (every uniformly coloured object then ends at that brightness, which is
what the first default, 0.65, did to bright objects). "gain" applies one gain per image (the mask's median brightness
-> the level), "none" keeps the pixels. `bench/delight_bench.py` measures them against the ground-truth base colour
of held-out renders (docs/results.md, "Image texels"). The quantile 0.8 was chosen on seeds 1,000,020-1,000,059
(40 views; 0.75 to 0.85 were best, a fixed 0.65 was 1.4 dB lower) and is reported on other seeds there.

Frames: volume frame and `Camera` conventions of DESIGN section 2; images `[S, S, C]`, row 0 at the top, sRGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from pixal3d.camera import Camera
from pixal3d.errors import InputError
from pixal3d.silhouette import render_coverage


@dataclass
class ImageTexelOptions:
    """How the input pixels colour the visible surface (`Pixal3DPipeline(..., image_texels=...)`)."""

    enabled: bool = True
    """Project the input image onto the visible surface; False keeps the texture stage's colours."""
    delight: Literal["retinex", "gain", "none"] = "retinex"
    """How shading is divided out of the pixels (module docstring)."""
    target_albedo: float | None = None
    """Brightness (largest sRGB channel) that the smooth shading estimate maps to; None: the image's own level
    (`level_quantile`)."""
    level_quantile: float = 0.8
    """With `target_albedo` None: the quantile of the shading estimate (retinex) or of the brightness (gain) over
    the mask that keeps its value."""
    shading_sigma: float = 0.02
    """Blur of the retinex shading estimate, as a fraction of the image side."""
    grazing: tuple[float, float] = (0.02, 0.15)
    """cos(angle between normal and view ray) over which the image's weight ramps from 0 to 1."""
    boundary: float = 1.0
    """Pixels from the silhouette or an occlusion boundary over which the image's weight ramps from 0 to 1."""
    depth_tolerance: float = 0.1
    """Volume units a point may lie behind the mesh's own depth at its pixel and still count as seen. Generous
    because the generated surface is porous and layered. Base-colour PSNR at the input view on held-out seeds
    1,000,000-1,000,003 (docs/results.md, "Image texels"): 15.21 dB without image texels, 16.23 with tolerance 0.02,
    grazing ramp (0.10, 0.35) and a 2-pixel boundary ramp, 17.34 with tolerance 0.1, grazing (0.05, 0.25) and a
    1-pixel ramp, 17.42 with no grazing ramp."""

    def __post_init__(self) -> None:
        if not 0 < self.level_quantile <= 1 or (self.target_albedo is not None and not 0 < self.target_albedo <= 1):
            raise InputError(f"ImageTexelOptions: need 0 < level_quantile <= 1 and target_albedo None or in (0, 1], "
                             f"got {self.level_quantile} and {self.target_albedo}")


@dataclass(eq=False)
class ImageView:
    """The input view prepared for projection.

    Attributes:
        camera: the input camera, side S.
        albedo: `[S, S, 3] float32` sRGB base-colour estimate from the pixels (`albedo_from_image`).
        depth: `[S, S] float32` the mesh's depth along the view axis at each pixel (0 where uncovered).
        weight: `[S, S] float32` in [0, 1]: how far the pixel is from the silhouette / occlusion boundaries.
    """

    camera: Camera
    albedo: torch.Tensor
    depth: torch.Tensor
    weight: torch.Tensor


def albedo_from_image(image: torch.Tensor, options: ImageTexelOptions | None = None) -> torch.Tensor:
    """`[S, S, 4]` RGBA in [0, 1] (RGB premultiplied on black) -> `[S, S, 3]` sRGB albedo estimate in [0, 1].

    Un-premultiplies, then divides the shading out as `options.delight` says (module docstring).
    """
    options = options or ImageTexelOptions()
    alpha = image[..., 3:4].float().cpu()
    rgb = (image[..., :3].float().cpu() / alpha.clamp_min(1e-3)).clamp(0, 1)
    mask = alpha[..., 0] > 0.5
    if options.delight == "none" or not bool(mask.any()):
        return rgb
    brightness = rgb.max(dim=-1).values
    if options.delight == "gain":
        level = _level(brightness[mask], options)
        return (rgb * (level / max(float(brightness[mask].median()), 0.02))).clamp(0, 1)
    m = mask.numpy().astype(np.float32)
    sigma = options.shading_sigma * image.shape[0]
    # Normalised convolution: the blur of the brightness over the mask only (the black background is no shading).
    num = cv2.GaussianBlur(brightness.numpy() * m, (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)
    shading = torch.from_numpy(num / np.maximum(den, 1e-3)).clamp_min(0.03)
    return (rgb * (_level(shading[mask], options) / shading)[..., None]).clamp(0, 1)


def _level(values: torch.Tensor, options: ImageTexelOptions) -> float:
    """The brightness the shading maps to: `target_albedo`, or the `level_quantile` of `values`."""
    if options.target_albedo is not None:
        return options.target_albedo
    return float(torch.quantile(values.float(), options.level_quantile))


def prepare_view(image: torch.Tensor, camera: Camera, mesh: trimesh.Trimesh, options: ImageTexelOptions,
                 device: torch.device | None = None) -> ImageView:
    """Albedo estimate, the mesh's depth buffer and the boundary weight of the input view.

    Args:
        image: `[S, S, 4]` float RGBA in [0, 1] (the preprocessed input).
        camera: its camera (side S).
        mesh: the asset's surface, volume frame.
        device: where the depth buffer is rasterised (None: the CPU); the view's tensors are on the CPU.
    """
    covered, depth = render_coverage(mesh, camera, device)
    mask = (image[..., 3] > 0.5) & covered
    # Occlusion boundaries: a depth jump of more than a few voxels between neighbouring pixels.
    d = depth.numpy()
    jump = np.zeros_like(d, dtype=bool)
    dx = np.abs(np.diff(d, axis=1)) > 4 * options.depth_tolerance
    dy = np.abs(np.diff(d, axis=0)) > 4 * options.depth_tolerance
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    jump[1:, :] |= dy
    jump[:-1, :] |= dy
    inner = (mask.numpy() & ~jump).astype(np.uint8)
    distance = cv2.distanceTransform(inner, cv2.DIST_L2, 3)  # pixels to the nearest boundary or outside pixel
    weight = np.clip((distance - 0.5) / max(options.boundary, 1e-6), 0, 1).astype(np.float32)
    return ImageView(camera=camera, albedo=albedo_from_image(image, options), depth=depth,
                     weight=torch.from_numpy(weight))


def project_colors(points: torch.Tensor, normals: torch.Tensor, view: ImageView,
                   options: ImageTexelOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The image's colour at surface points and how much to trust it.

    Args:
        points: `[M, 3] float`, volume frame, on the surface.
        normals: `[M, 3] float` unit outward normals there.
        view: from `prepare_view`.

    Returns:
        `colors [M, 3] float32` sRGB and `weight [M] float32` in [0, 1] (0: not seen, grazing, or at a boundary).
    """
    camera = view.camera
    points = points.detach().float()  # on its own device: the PyTorch export calls this with GPU texels
    device = points.device
    albedo, view_depth, view_weight = (t.to(device) for t in (view.albedo, view.depth, view.weight))
    uv, depth = camera.project(points)
    s = camera.size
    grid = camera.normalized(uv)[None, :, None, :]  # (1, M, 1, 2)
    colors = F.grid_sample(albedo.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                           align_corners=False)[0, :, :, 0].T  # (1, 3, M, 1) -> (M, 3)
    px = torch.floor(uv).long()
    inside = (depth > 0) & (px >= 0).all(1) & (px < s).all(1)
    pxc = px.clamp(0, s - 1)
    surface = view_depth[pxc[:, 1], pxc[:, 0]]
    seen = inside & (surface > 0) & (depth <= surface + options.depth_tolerance)
    rays = points - camera.center.to(device)[None]
    rays = rays / rays.norm(dim=1, keepdim=True).clamp_min(1e-9)
    # |n . ray|: a point that passes the depth test faces the camera; a normal pointing away is a flipped face of
    # the generated surface, not a back face.
    facing = (normals.detach().float().to(device) * rays).sum(1).abs()
    lo, hi = options.grazing
    weight = ((facing - lo) / max(hi - lo, 1e-6)).clamp(0, 1)
    weight = weight * view_weight[pxc[:, 1], pxc[:, 0]] * seen
    return colors.float(), weight.float()


def recolor_mesh(mesh: trimesh.Trimesh, image: torch.Tensor, camera: Camera,
                 options: ImageTexelOptions) -> trimesh.Trimesh:
    """The mesh with the input pixels blended into its vertex colours and `pbr` base colour (a new mesh).

    Args:
        mesh: volume frame, vertex colours set; `vertex_attributes["pbr"] [V, 6]` when present is updated too.
        image: `[S, S, 4]` float RGBA in [0, 1]. camera: the input camera at side S.
    """
    if len(mesh.faces) == 0:
        return mesh
    view = prepare_view(image, camera, mesh, options)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    points = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    colors, weight = project_colors(points, normals, view, options)
    out = mesh.copy()
    vc = np.asarray(mesh.visual.vertex_colors).astype(np.float32) / 255.0
    w = weight.numpy()[:, None]
    vc[:, :3] = vc[:, :3] * (1 - w) + colors.numpy() * w
    out.visual.vertex_colors = (vc * 255).round().clip(0, 255).astype(np.uint8)
    pbr = mesh.vertex_attributes.get("pbr")
    if pbr is not None:
        pbr = np.asarray(pbr, dtype=np.float32).copy()
        pbr[:, :3] = pbr[:, :3] * (1 - w) + colors.numpy() * w
        out.vertex_attributes["pbr"] = pbr
    return out
