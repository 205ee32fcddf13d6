"""Looking at samples: the voxels' silhouette through the sample camera (the frames-agree check, with
`pixal3d.eval.metrics.silhouette_iou`) and the contact-sheet row of `pixal3d data show`."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pixal3d.camera import Camera
from pixal3d.data.samples import Sample
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.render import RenderMesh, render_mesh


def voxel_silhouette(voxels: SparseVoxels, camera: Camera, supersample: int = 2) -> torch.Tensor:
    """Coverage `[S, S] float32` of the voxels' dual-grid mesh rasterised by `camera` (the IoU check)."""
    mesh = voxels_to_mesh(voxels)
    if len(mesh.faces) == 0:
        return torch.zeros(camera.size, camera.size)
    render = RenderMesh(
        vertices=torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
        faces=torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64),
    )
    return render_mesh(render, camera, supersample=supersample).alpha


def voxel_views(voxels: SparseVoxels) -> list[torch.Tensor]:
    """Orthographic splats of the voxels' base colour seen from +z (front), +x (right) and +y (top).

    Each view is `[R, R, 3] uint8`: the nearest voxel per pixel, its sRGB base colour (grey without attrs) darkened
    with depth; empty pixels are white. Front: right = +x, up = +y; right: right = -z, up = +y; top: right = +x,
    up = -z.
    """
    r = voxels.resolution
    c = voxels.coords.long()
    colour = voxels.attrs[:, :3].float() if voxels.attrs is not None else torch.full((len(voxels), 3), 0.7)
    i, j, k = c[:, 0], c[:, 1], c[:, 2]
    layouts = (
        (i, r - 1 - j, k),  # front: (u, v, nearness)
        (r - 1 - k, r - 1 - j, i),  # right
        (i, k, j),  # top
    )
    views = []
    for u, v, near in layouts:
        pixel = v * r + u
        best = torch.full((r * r,), -1, dtype=torch.long).scatter_reduce(0, pixel, near, reduce="amax")
        front = near == best[pixel]
        shade = 0.55 + 0.45 * (near[front].float() + 0.5) / r
        image = torch.ones(r * r, 3)
        image[pixel[front]] = colour[front] * shade[:, None]
        views.append((image.view(r, r, 3).clamp(0, 1) * 255 + 0.5).to(torch.uint8))
    return views


def sample_sheet(sample: Sample, tile: int = 256) -> Image.Image:
    """The sample's image (composited on grey) beside its voxels seen from the front, right and top: one RGB row."""
    rgba = sample.image.float() / 255.0
    grey = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * 0.5  # premultiplied colour over grey
    tiles = [Image.fromarray((grey * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy())]
    tiles += [Image.fromarray(v.numpy()) for v in voxel_views(sample.voxels)]
    sheet = Image.new("RGB", (tile * len(tiles), tile), "white")
    for n, t in enumerate(tiles):
        sheet.paste(t.resize((tile, tile), Image.Resampling.NEAREST), (n * tile, 0))
    return sheet
