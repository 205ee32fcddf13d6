"""Back-projection (DESIGN section 3): dense == sparse, bilinear exactness, masks, multi-view, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from pixal3d.camera import Camera, coords_to_centers, look_at
from pixal3d.lift import DEPTH_CHANNELS, lift_dense, lift_dense_multiview, lift_sparse, lift_sparse_multiview


def _maps(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Four maps of different scales and channel counts, as the encoder produces."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 64, 64), (8, 16, 16), (3, 8, 8), (2, 4, 4)]
    return [torch.randn(batch, c, h, w, generator=gen) for c, h, w in shapes]


def _all_coords(batch: int, r: int) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    return torch.cat([torch.cat([torch.full((grid.shape[0], 1), b), grid], dim=1) for b in range(batch)])


def test_dense_and_sparse_lift_agree() -> None:
    maps, r = _maps(), 12
    cams = [Camera.from_degrees(30.0, size=64), Camera.from_degrees(65.0, size=64)]
    dense = lift_dense(maps, cams, r)
    assert dense.shape == (2, 5 + 8 + 3 + 2 + 1, r, r, r)
    gen = torch.Generator().manual_seed(3)
    coords = _all_coords(2, r)[torch.randperm(2 * r**3, generator=gen)[:500]]
    sparse = lift_sparse(maps, cams, coords, r, chunk_size=97)  # several chunks
    b, i, j, k = coords.unbind(1)
    at_voxels = dense.permute(0, 2, 3, 4, 1)[b, i, j, k]  # (N, C)
    assert (at_voxels - sparse).abs().max() < 1e-5


def test_bilinear_exactness_on_a_uv_image() -> None:
    """Lifting an image whose pixels hold their own centre (u, v) returns each voxel's projected (u, v)."""
    size, r = 64, 16
    cam = Camera.from_degrees(40.0, size=size)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    v_img, u_img = torch.meshgrid(centres, centres, indexing="ij")
    uv_image = torch.stack([u_img, v_img])[None]  # (1, 2, S, S), channel 0 = u, channel 1 = v
    coords = _all_coords(1, r)
    lifted = lift_sparse([uv_image], cam, coords, r)
    uv, _ = cam.project(coords_to_centers(coords[:, 1:], r))
    interior = ((uv >= 0.5) & (uv <= size - 0.5)).all(dim=1)  # bilinear has two neighbours on every axis
    assert interior.sum() > 1000
    assert torch.allclose(lifted[interior, :2], uv[interior], atol=1e-3)
    assert (lifted[interior, 2] == 1).all()


def test_mask_marks_voxels_outside_the_image_and_zeroes_them() -> None:
    # A narrow FoV sees only the middle of the cube: corner voxels fall outside the image.
    cam = Camera.from_degrees(20.0, size=32, distance=1.5)
    maps = [torch.ones(1, 3, 32, 32)]
    lifted = lift_sparse(maps, cam, _all_coords(1, 8), 8)
    mask = lifted[:, -1]
    assert 0 < mask.sum() < mask.numel()
    assert (lifted[mask == 0, :3] == 0).all()
    assert torch.allclose(lifted[mask == 1, :3], torch.ones(int(mask.sum()), 3))


def test_voxels_behind_the_camera_are_masked() -> None:
    pose = look_at(torch.tensor([0.0, 0.0, 0.1]), torch.tensor([0.0, 0.0, -1.0]))  # camera inside the cube
    cam = Camera(fov=math.radians(90), size=16, cam_to_world=pose)
    lifted = lift_sparse([torch.ones(1, 1, 16, 16)], cam, _all_coords(1, 4), 4)
    behind = coords_to_centers(_all_coords(1, 4)[:, 1:], 4)[:, 2] > 0.1
    assert (lifted[behind, -1] == 0).all()


def test_identical_views_average_to_the_single_view() -> None:
    maps, r = _maps(batch=1), 6
    cam = Camera.from_degrees(45.0, size=64)
    coords = _all_coords(1, r)
    single = lift_sparse(maps, cam, coords, r)
    multi = lift_sparse_multiview([(maps, cam)] * 3, coords, r)
    assert torch.allclose(multi, single, atol=1e-6)
    dense_multi = lift_dense_multiview([(maps, cam)] * 2, r)
    assert torch.allclose(dense_multi, lift_dense(maps, cam, r), atol=1e-6)


def test_multiview_averages_only_views_that_see_the_voxel() -> None:
    r = 8
    coords = _all_coords(1, r)
    front = Camera.from_degrees(20.0, size=16, distance=1.2)  # sees only the middle
    wide = Camera.from_degrees(80.0, size=16, distance=2.0)  # sees everything
    a, b = [torch.full((1, 1, 16, 16), 2.0)], [torch.full((1, 1, 16, 16), 4.0)]
    lifted = lift_sparse_multiview([(a, front), (b, wide)], coords, r)
    mask_front = lift_sparse(a, front, coords, r)[:, -1]
    both = mask_front == 1
    assert torch.allclose(lifted[both, 0], torch.full((int(both.sum()),), 3.0))
    assert torch.allclose(lifted[~both, 0], torch.full((int((~both).sum()),), 4.0))
    assert torch.allclose(lifted[~both, 1], torch.full((int((~both).sum()),), 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_any_float_dtype(dtype: torch.dtype) -> None:
    maps, r = _maps(batch=1), 6
    cam = Camera.from_degrees(50.0, size=64)
    coords = _all_coords(1, r)
    ref = lift_sparse(maps, cam, coords, r)
    out = lift_sparse([m.to(dtype) for m in maps], cam, coords, r)
    assert out.dtype == dtype
    tol = 1e-6 if dtype == torch.float64 else 5e-2
    assert (out.float() - ref).abs().max() < tol * max(1.0, ref.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu() -> None:
    maps, r = _maps(batch=1), 6
    cam = Camera.from_degrees(50.0, size=64)
    coords = _all_coords(1, r)
    cpu = lift_sparse(maps, cam, coords, r)
    gpu = lift_sparse([m.cuda() for m in maps], cam, coords.cuda(), r)
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-5, atol=1e-4)  # float32 bilinear: FMA order differs by device


def test_bad_arguments_raise() -> None:
    cam = Camera.from_degrees(50.0, size=64)
    with pytest.raises(ValueError, match="at least one"):
        lift_sparse([], cam, torch.zeros(1, 4, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        lift_sparse(_maps(), cam, torch.zeros(3, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="one camera per batch"):
        lift_dense(_maps(batch=2), [cam], 4)
    with pytest.raises(ValueError, match="float"):
        lift_dense([torch.zeros(1, 1, 4, 4, dtype=torch.long)], cam, 4)


# ------------------------------------------------------------------------------------------------ depth-aware lift
def _plane_scene(size: int = 64, z_plane: float = 0.1) -> tuple[Camera, torch.Tensor, torch.Tensor]:
    """A plane at volume z = `z_plane` seen by the canonical camera: its depth map at S/4 (constant, except a
    no-surface patch) and an alpha whose left quarter is background."""
    cam = Camera.from_degrees(40.0, size=size)
    depth = torch.full((1, 1, size // 4, size // 4), cam.eye_distance - z_plane)
    depth[0, 0, : size // 8, -2:] = float("inf")  # top-right corner: no surface there
    alpha = torch.ones(1, 1, size, size)
    alpha[..., : size // 4] = 0.0
    return cam, depth, alpha


def test_depth_channels_are_exact_on_a_plane() -> None:
    """Signed distance = z_plane - z_voxel (both on the view axis), indicators from the half-diagonal tolerance,
    silhouette from the alpha; no surface (outside the silhouette, or an infinite depth) gives all zeros."""
    size, r, z_plane = 64, 8, 0.1
    cam, depth, alpha = _plane_scene(size, z_plane)
    coords = _all_coords(1, r)
    maps = _maps(batch=1)
    lifted = lift_sparse(maps, cam, coords, r, depth=depth, alpha=alpha)
    channels = sum(m.shape[1] for m in maps)
    assert lifted.shape == (coords.shape[0], channels + DEPTH_CHANNELS + 1)
    signed, front, on, behind, sil = lifted[:, channels : channels + DEPTH_CHANNELS].unbind(1)

    centres = coords_to_centers(coords[:, 1:], r).double()
    x, y, z = centres.unbind(1)
    eye, f = cam.eye_distance, cam.focal
    u, v = f * x / (eye - z) + size / 2, -f * y / (eye - z) + size / 2  # DESIGN section 2, in float64
    in_image = (u >= 0) & (u <= size) & (v >= 0) & (v <= size)
    in_sil = in_image & (u >= size // 4)
    no_surface = (u >= size - 8) & (v < size // 2)  # the infinite-depth patch (S/4 pixels -> 4 px each)
    known = in_sil & ~no_surface
    assert known.sum() > 100 and (in_sil & no_surface).sum() > 0 and (in_image & ~in_sil).sum() > 0
    expected = torch.where(known, z_plane - z, torch.zeros_like(z))
    assert torch.allclose(signed.double(), expected, atol=1e-6)
    tol = math.sqrt(3) / (2 * r)
    assert torch.equal(front.bool(), known & (expected < -tol))
    assert torch.equal(behind.bool(), known & (expected > tol))
    assert torch.equal(on.bool(), known & (expected.abs() <= tol))
    assert on.sum() > 0 and front.sum() > 0 and behind.sum() > 0
    assert torch.equal(sil.bool(), in_sil)
    # Outside the silhouette (and outside the image) every depth channel is 0.
    assert (lifted[~in_sil, channels : channels + DEPTH_CHANNELS] == 0).all()
    # The other channels are the plain lift's, bit for bit.
    plain = lift_sparse(maps, cam, coords, r)
    assert torch.equal(lifted[:, :channels], plain[:, :channels]) and torch.equal(lifted[:, -1], plain[:, -1])


def test_depth_lift_dense_sparse_and_multiview_agree() -> None:
    r, size = 8, 64
    cam, depth, alpha = _plane_scene(size)
    other = Camera.from_degrees(60.0, size=size)
    maps = _maps(batch=2)
    depth2, alpha2 = torch.cat([depth, depth + 0.2]), torch.cat([alpha, alpha.flip(-1)])
    dense = lift_dense(maps, [cam, other], r, depth=depth2, alpha=alpha2)
    coords = _all_coords(2, r)[torch.randperm(2 * r**3, generator=torch.Generator().manual_seed(1))[:400]]
    sparse = lift_sparse(maps, [cam, other], coords, r, chunk_size=50, depth=depth2, alpha=alpha2)
    b, i, j, k = coords.long().unbind(1)
    assert torch.equal(dense.permute(0, 2, 3, 4, 1)[b, i, j, k], sparse)

    single = lift_sparse(maps, [cam, other], coords, r, depth=depth2, alpha=alpha2)
    view = (maps, [cam, other], depth2, alpha2)
    assert torch.allclose(lift_sparse_multiview([view] * 3, coords, r), single, atol=1e-6)
    assert torch.allclose(lift_dense_multiview([view] * 2, r), dense, atol=1e-6)


def test_depth_lift_multiview_uses_each_views_camera_and_depth() -> None:
    """A second view from the side sees the same plane through its own camera; averaging mask-weights it."""
    r, size = 8, 32
    cam, depth, alpha = _plane_scene(size)
    pose = look_at(torch.tensor([2.5, 0.0, 0.0]), torch.zeros(3))
    side = Camera(fov=math.radians(40), size=size, cam_to_world=pose)
    side_depth = torch.full((1, 1, size // 4, size // 4), 2.5 - 0.2)  # a plane at volume x = 0.2
    maps = [torch.zeros(1, 1, size, size)]
    coords = _all_coords(1, r)
    a = lift_sparse(maps, cam, coords, r, depth=depth, alpha=alpha)
    b = lift_sparse(maps, side, coords, r, depth=side_depth, alpha=torch.ones(1, 1, size, size))
    centres = coords_to_centers(coords[:, 1:], r)
    seen = b[:, -1] == 1
    assert torch.allclose(b[seen, 1], (0.2 - centres[seen, 0]).clamp(-1, 1), atol=1e-5)  # depth = 2.5 - x
    multi = lift_sparse_multiview([(maps, cam, depth, alpha), (maps, side, side_depth, torch.ones(1, 1, size, size))],
                                  coords, r)
    weights = torch.stack([a[:, -1], b[:, -1]])  # (2, N)
    expected = (torch.stack([a[:, 1:-1], b[:, 1:-1]]) * weights[..., None]).sum(0) / weights.sum(0).clamp_min(1)[:, None]
    assert torch.allclose(multi[:, 1:-1], expected, atol=1e-6)


def test_depth_lift_bad_arguments_raise() -> None:
    cam, depth, alpha = _plane_scene()
    coords = _all_coords(1, 4)
    with pytest.raises(ValueError, match="both depth and alpha"):
        lift_sparse(_maps(batch=1), cam, coords, 4, depth=depth)
    with pytest.raises(ValueError, match="depth must be"):
        lift_dense(_maps(batch=1), cam, 4, depth=depth[0], alpha=alpha)
