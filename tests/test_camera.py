"""Camera and frames (DESIGN section 2): known points, round trips, rays, view alignment."""

from __future__ import annotations

import math

import pytest
import torch

from pixal3d.camera import (
    Camera,
    coords_in_grid,
    coords_to_centers,
    fov_of_crop,
    look_at,
    points_to_coords,
    view_alignment,
    voxel_centers,
)
from pixal3d.errors import InputError


def _expected_uv(p: tuple[float, float, float], fov: float, size: int) -> tuple[float, float]:
    """DESIGN section 2's formulas written out independently of the implementation."""
    d = 0.5 / math.tan(fov / 2)
    f = (size / 2) / math.tan(fov / 2)
    xc, yc, zc = p[0], p[1], p[2] - d
    return f * xc / (-zc) + size / 2, -f * yc / (-zc) + size / 2


@pytest.mark.parametrize("fov_deg", [10.0, 40.0, 70.0])
@pytest.mark.parametrize("size", [64, 512])
def test_known_points_project_to_formula_pixels(fov_deg: float, size: int) -> None:
    cam = Camera.from_degrees(fov_deg, size=size)
    corners = [(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
    mid_edges = [(0.5, 0.0, 0.0), (-0.5, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, -0.5, 0.0)]
    points = corners + mid_edges + [(0.0, 0.0, 0.0)]
    uv, depth = cam.project(torch.tensor(points, dtype=torch.float64))
    for p, (u, v), dz in zip(points, uv.tolist(), depth.tolist(), strict=True):
        eu, ev = _expected_uv(p, cam.fov, size)
        assert abs(u - eu) < 1e-4 and abs(v - ev) < 1e-4, (p, (u, v), (eu, ev))
        assert dz == pytest.approx(cam.eye_distance - p[2])


def test_mid_plane_spans_image_width_and_centre_is_image_centre() -> None:
    cam = Camera.from_degrees(35.0, size=256)
    uv, _ = cam.project(torch.tensor([[-0.5, 0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(uv, torch.tensor([[0.0, 0.0], [256.0, 256.0], [128.0, 128.0]]), atol=1e-4)


def test_unproject_inverts_project() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(1000, 3, generator=gen, dtype=torch.float64) - 0.5
    pose = look_at(torch.tensor([1.3, 0.4, 2.0]), torch.zeros(3)).double()
    for cam in (Camera.from_degrees(50.0, size=128), Camera(fov=0.6, size=97, cam_to_world=pose)):
        uv, depth = cam.project(points)
        assert torch.allclose(cam.unproject(uv, depth), points, atol=1e-9)
        uv32, depth32 = cam.project(points.float())
        assert torch.allclose(cam.unproject(uv32, depth32), points.float(), atol=1e-5)


def test_rays_pass_through_their_pixel_centres() -> None:
    cam = Camera(fov=0.9, size=16, cam_to_world=look_at(torch.tensor([0.5, 1.0, 1.8]), torch.zeros(3)))
    origins, dirs = cam.rays()
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(16, 16), atol=1e-6)
    uv, depth = cam.project(origins + 0.7 * dirs)
    rows, cols = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    assert torch.allclose(uv, torch.stack([cols, rows], dim=-1), atol=1e-4)
    assert (depth > 0).all()


def test_voxel_grid_helpers_agree() -> None:
    r = 8
    centres = voxel_centers(r)
    assert centres.shape == (r, r, r, 3)
    coords = torch.tensor([[0, 0, 0], [7, 3, 5], [2, 6, 1]])
    assert torch.allclose(centres[coords[:, 0], coords[:, 1], coords[:, 2]], coords_to_centers(coords, r))
    assert torch.equal(points_to_coords(coords_to_centers(coords, r), r), coords)
    assert centres[0, 0, 0].tolist() == pytest.approx([-0.5 + 0.5 / r] * 3)
    assert coords_in_grid(torch.tensor([[0, 0, 0], [8, 0, 0], [-1, 2, 2]]), r).tolist() == [True, False, False]


def test_view_alignment_keeps_every_point_on_its_pixel() -> None:
    gen = torch.Generator().manual_seed(1)
    world = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 0.3 + torch.tensor([2.0, -1.0, 0.5])
    eye = torch.tensor([5.0, 1.0, 4.0])
    pose = look_at(eye, torch.tensor([2.0, -1.0, 0.5]))
    fov = math.radians(28.0)
    original = Camera(fov=fov, size=512, cam_to_world=pose)
    aim_depth = float((eye.double() - torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)).norm())
    align = view_alignment(pose, fov, aim_depth=aim_depth, size=512)
    vol = align.points_to_volume(world)
    uv_orig, _ = original.project(world)
    uv_vol, depth_vol = align.camera.project(vol)
    assert torch.allclose(uv_orig, uv_vol, atol=1e-4)
    assert (depth_vol > 0).all()
    # the aim point lands on the origin, the camera on (0, 0, d), and the inverse recovers the world points
    assert torch.allclose(align.points_to_volume(torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)),
                          torch.zeros(1, 3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(align.points_to_volume(eye[None].double()),
                          torch.tensor([[0.0, 0.0, align.camera.eye_distance]], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(align.points_to_world(vol), world, atol=1e-9)
    # distances scale uniformly
    ratio = (vol[1:] - vol[:-1]).norm(dim=-1) / (world[1:] - world[:-1]).norm(dim=-1)
    assert torch.allclose(ratio, torch.full_like(ratio, align.scale), atol=1e-9)


def test_fov_of_crop() -> None:
    fov = math.radians(60)
    assert fov_of_crop(fov, 512, 512) == pytest.approx(fov)
    assert math.tan(fov_of_crop(fov, 512, 256) / 2) == pytest.approx(math.tan(fov / 2) / 2)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.pi, 45.0, float("nan")])
def test_bad_fov_is_an_input_error(bad: float) -> None:
    with pytest.raises(InputError, match="fov"):
        Camera(fov=bad)


def test_degrees_hint_and_other_bad_values() -> None:
    with pytest.raises(InputError, match="math.radians"):
        Camera(fov=45.0)
    with pytest.raises(InputError, match="size"):
        Camera(fov=0.5, size=0)
    with pytest.raises(InputError, match="cam_to_world"):
        Camera(fov=0.5, cam_to_world=torch.eye(3))
    with pytest.raises(InputError, match="aim_depth"):
        view_alignment(torch.eye(4), 0.5, aim_depth=-1.0)
