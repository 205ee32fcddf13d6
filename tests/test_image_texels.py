"""Input pixels on the visible surface (pixal3d.image_texels): a checker image onto a cube's front face."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from pixal3d.camera import Camera
from pixal3d.image_texels import ImageTexelOptions, albedo_from_image, prepare_view, project_colors

S = 64


def checker(size: int = S, cell: int = 8) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    on = ((u // cell + v // cell) % 2).float()
    rgb = torch.stack([on, 0.2 + 0.6 * on, 1 - on], -1)
    return torch.cat([rgb, torch.ones(size, size, 1)], -1)


def test_checker_lands_on_the_visible_face_within_a_texel() -> None:
    camera = Camera(fov=math.radians(40), size=S)
    cube = trimesh.creation.box(extents=(0.5, 0.5, 0.5)).subdivide().subdivide()
    image = checker()
    options = ImageTexelOptions(delight="none", boundary=1.0)
    view = prepare_view(image, camera, cube, options)
    g = torch.linspace(-0.2, 0.2, 41)
    x, y = torch.meshgrid(g, g, indexing="ij")
    front = torch.stack([x.reshape(-1), y.reshape(-1), torch.full((x.numel(),), 0.25)], 1)
    colors, weight = project_colors(front, torch.tensor([[0.0, 0.0, 1.0]]).expand_as(front), view, options)
    assert bool((weight == 1).all())
    uv, _ = camera.project(front)
    # Away from the checker's edges (more than one pixel), the colour is the pixel's exactly.
    frac = uv % 8
    clear = ((frac > 1) & (frac < 7)).all(1)
    px = uv.floor().long()
    expected = image[px[:, 1], px[:, 0], :3]
    assert clear.sum() > 100
    assert torch.allclose(colors[clear], expected[clear], atol=1e-5)
    # Within one pixel: every point's colour is that of a pixel at most one texel away.
    near = torch.stack([image[(px[:, 1] + dv).clamp(0, S - 1), (px[:, 0] + du).clamp(0, S - 1), :3]
                        for dv in (-1, 0, 1) for du in (-1, 0, 1)], 1)  # (M, 9, 3)
    lo, hi = near.min(1).values, near.max(1).values
    assert bool(((colors >= lo - 1e-5) & (colors <= hi + 1e-5)).all())
    back = front.clone()
    back[:, 2] = -0.25
    _, hidden = project_colors(back, torch.tensor([[0.0, 0.0, -1.0]]).expand_as(back), view, options)
    assert bool((hidden == 0).all())  # the back face is behind the front one: it keeps the model's colour


def test_retinex_removes_smooth_shading_and_keeps_edges() -> None:
    albedo = checker()[..., :3] * 0.5 + 0.25
    v, u = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    shading = (0.5 + 0.5 * u / S)[..., None]  # a smooth left-to-right light falloff
    image = torch.cat([albedo * shading, torch.ones(S, S, 1)], -1)
    options = ImageTexelOptions(delight="retinex")
    estimate = albedo_from_image(image, options)
    raw = albedo_from_image(image, ImageTexelOptions(delight="none"))
    # The estimate's left/right brightness ratio is far closer to the albedo's (1) than the shaded image's.
    def ratio(x: torch.Tensor) -> float:
        return float(x[:, S // 2 + 8:].mean() / x[:, : S // 2 - 8].mean())
    assert abs(ratio(estimate) - 1) < 0.5 * abs(ratio(raw) - 1)
    assert float(np.corrcoef(estimate.reshape(-1).numpy(), albedo.reshape(-1).numpy())[0, 1]) > 0.9
