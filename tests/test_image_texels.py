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


def _shaded_disc(albedo: tuple[float, float, float], size: int = 128) -> torch.Tensor:
    """A uniformly coloured disc under a smooth left-to-right light ramp (0.5 -> 1.0), on black."""
    v, u = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = ((u - size / 2) ** 2 + (v - size / 2) ** 2) < (0.4 * size) ** 2
    shading = 0.5 + 0.5 * u.float() / (size - 1)
    rgb = torch.tensor(albedo) * shading[..., None] * inside[..., None]
    return torch.cat([rgb, inside[..., None].float()], -1)


def test_retinex_keeps_the_image_level_and_removes_the_ramp() -> None:
    """A white and a dark disc keep their own brightness (the lit side's level), not one fixed level, and the
    light ramp is gone; the fixed level (`target_albedo`) maps both to it."""
    for albedo in ((0.95, 0.95, 0.95), (0.3, 0.15, 0.1)):
        image = _shaded_disc(albedo)
        inside = image[..., 3] > 0.5
        core = inside & (torch.nn.functional.max_pool2d((~inside).float()[None], 9, 1, 4)[0] == 0)
        out = albedo_from_image(image)[core]
        lit_level = albedo[0] * 0.8  # about the shading's 0.8 quantile over the disc
        assert abs(float(out[:, 0].mean()) - lit_level) < 0.12 * albedo[0] + 0.02
        assert float(out[:, 0].std()) < 0.05 * albedo[0] + 0.01  # the ramp (0.5 -> 1.0) is divided out
        fixed = albedo_from_image(image, ImageTexelOptions(target_albedo=0.65))[core]
        assert abs(float(fixed.max(dim=-1).values.mean()) - 0.65) < 0.05


def test_image_texel_options_reject_impossible_levels() -> None:
    import pytest

    from pixal3d.errors import InputError

    for bad in ({"level_quantile": 0.0}, {"level_quantile": 1.5}, {"target_albedo": 0.0}, {"target_albedo": 2.0}):
        with pytest.raises(InputError, match="level_quantile"):
            ImageTexelOptions(**bad)
