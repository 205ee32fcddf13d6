"""Back-projection (DESIGN section 3): dense == sparse, bilinear exactness, masks, multi-view, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pixal3d.camera import Camera, coords_to_centers, look_at
from pixal3d.lift import (
    DEPTH_CHANNELS,
    depth_channels,
    lift_dense,
    lift_dense_multiview,
    lift_sparse,
    lift_sparse_multiview,
)


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


# ------------------------------------------------------------------------------------------------ batched == per-element
# The reference: the per-element lift that `lift_sparse` replaced (a Python loop over the batch, `nonzero` per element,
# one `grid_sample` per map and element; half maps sampled in float32 on the CPU), kept here verbatim.
_CPU_SAMPLE_DTYPES = (torch.float32, torch.float64)


def _sample_loop(maps: list[torch.Tensor], b: int, grid: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for m in maps:
        src = m[b : b + 1]
        if src.device.type == "cpu" and src.dtype not in _CPU_SAMPLE_DTYPES:
            src = src.float()
        s = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        out.append(s[0, :, :, 0].T.to(m.dtype))  # (1, C, M, 1) -> (M, C)
    return out


def _lift_points_loop(maps, camera, b, points, depth=None, alpha=None, resolution=1) -> torch.Tensor:
    uv, point_depth = camera.project(points.float())
    size = camera.size
    inside = (point_depth > 0) & (uv >= 0).all(-1) & (uv <= size).all(-1)
    grid = camera.normalized(uv).nan_to_num(0.0, 0.0, 0.0)
    feats = torch.cat(_sample_loop(maps, b, grid[None, :, None, :]), dim=1)
    mask = inside[:, None].to(feats.dtype)
    if depth is None:
        return torch.cat([feats * mask, mask], dim=1)
    geo = depth_channels(uv, point_depth, inside, depth[b, 0], alpha[b, 0], size, resolution)
    return torch.cat([feats * mask, geo.to(feats.dtype), mask], dim=1)


def _lift_sparse_loop(maps, cams, coords, resolution, chunk_size=262144, depth=None, alpha=None) -> torch.Tensor:
    batch = maps[0].shape[0]
    channels = sum(m.shape[1] for m in maps) + 1 + (DEPTH_CHANNELS if depth is not None else 0)
    out = torch.zeros(coords.shape[0], channels, dtype=maps[0].dtype)
    for b in range(batch):
        idx = torch.nonzero(coords[:, 0] == b, as_tuple=True)[0]
        for start in range(0, idx.numel(), chunk_size):
            sel = idx[start : start + chunk_size]
            points = coords_to_centers(coords[sel, 1:], resolution)
            out[sel] = _lift_points_loop(maps, cams[b], b, points, depth, alpha, resolution)
    return out


def _batch_scene(size: int = 64) -> tuple[list[Camera], torch.Tensor, torch.Tensor]:
    """Four different cameras (FoVs, distances, a posed side view, one inside the cube: voxels behind it), with a
    random depth map (some no-surface pixels) at S/4 and a random alpha at S."""
    gen = torch.Generator().manual_seed(7)
    cams = [
        Camera.from_degrees(25.0, size=size, distance=1.6),  # narrow: the cube's corners fall outside the image
        Camera.from_degrees(60.0, size=size),
        Camera(fov=math.radians(45), size=size, cam_to_world=look_at(torch.tensor([1.8, 0.6, 0.9]), torch.zeros(3))),
        Camera(fov=math.radians(90), size=size,
               cam_to_world=look_at(torch.tensor([0.0, 0.05, 0.1]), torch.tensor([0.0, 0.0, -1.0]))),
    ]
    depth = 1.0 + 1.5 * torch.rand(4, 1, size // 4, size // 4, generator=gen)
    depth[depth > 2.3] = float("inf")  # no surface there
    alpha = (torch.rand(4, 1, size, size, generator=gen) > 0.3).float()
    return cams, depth, alpha


def _feature_scale(maps: list[torch.Tensor]) -> float:
    return max(m.float().abs().max().item() for m in maps)


# Measured against the reference (this test's scene at R = 10, 16 and 24): canonical cameras match bit for bit;
# posed cameras differ by the float32 rounding of their projection (a per-voxel sum instead of a gemm), which moves
# the sample by ~1e-6 px: features differ in ~5 % of the values, by at most 6.2e-6 x the feature scale for float32
# and float64 maps. Half maps round the same float32 result, so a value differs by at most one unit in the last
# place (eps x scale; measured 1.1e-3 x scale for bfloat16, in 0.01 % of the values). The mask is identical, the
# indicators too, the signed distance within 2.4e-7 (one float32 rounding; float32 maps).


def _tolerance(dtype: torch.dtype) -> float:
    """Allowed difference from the reference, relative to the feature scale."""
    return 1e-5 if dtype in (torch.float32, torch.float64) else torch.finfo(dtype).eps


@pytest.mark.parametrize("with_depth", [False, True], ids=["plain", "depth"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_batched_lift_matches_the_per_element_loop(dtype: torch.dtype, with_depth: bool) -> None:
    """Four cameras in one batch (FoVs, distances, a posed view, voxels behind the camera and outside the image),
    lifted in chunks smaller than the row count, equal the per-element reference within float32 rounding."""
    cams, depth, alpha = _batch_scene()
    maps = [(3.0 * m).to(dtype) for m in _maps(batch=4, seed=2)]
    r = 10
    coords = _all_coords(4, r)[torch.randperm(4 * r**3, generator=torch.Generator().manual_seed(5))]  # mixed order
    kwargs = {"depth": depth, "alpha": alpha} if with_depth else {}
    ref = _lift_sparse_loop(maps, cams, coords, r, **kwargs)
    out = lift_sparse(maps, cams, coords, r, chunk_size=333, **kwargs)
    assert out.shape == ref.shape and out.dtype == dtype
    mask = ref[:, -1]
    assert torch.equal(out[:, -1], mask)
    assert 0 < mask.sum() < mask.numel()  # some voxels outside the image or behind the camera
    behind = (cams[3].project(coords_to_centers(coords[:, 1:], r))[1] <= 0) & (coords[:, 0] == 3)
    assert behind.any() and (out[behind] == 0).all()
    channels = sum(m.shape[1] for m in maps)
    error = (out[:, :channels].double() - ref[:, :channels].double()).abs().max()
    assert error <= _tolerance(dtype) * _feature_scale(maps)
    if with_depth:
        geo, geo_ref = out[:, channels:-1].double(), ref[:, channels:-1].double()
        assert (geo - geo_ref).abs().max() <= max(1e-6, _tolerance(dtype))  # the signed distance lies in [-1, 1]
        assert torch.equal(geo[:, 1:], geo_ref[:, 1:])  # the indicators are exact
        assert geo[:, 1:4].sum(1).max() == 1 and geo[:, 0].abs().max() > 0


def test_batched_dense_lift_matches_the_per_element_loop() -> None:
    cams, depth, alpha = _batch_scene()
    maps, r = _maps(batch=4, seed=3), 6
    dense = lift_dense(maps, cams, r, depth=depth, alpha=alpha)
    ref = _lift_sparse_loop(maps, cams, _all_coords(4, r), r, depth=depth, alpha=alpha)
    assert dense.shape == (4, ref.shape[1], r, r, r) and dense.is_contiguous()
    flat = dense.permute(0, 2, 3, 4, 1).reshape(-1, ref.shape[1])  # (B, C, R, R, R) -> (B*R^3, C), b-major like coords
    assert (flat - ref).abs().max() <= 1e-5 * _feature_scale(maps)
    assert torch.equal(flat[:, -1], ref[:, -1])


def test_cameras_of_different_sizes_in_one_batch() -> None:
    """Each voxel uses its own camera's image side (normalisation, in-image test, nearest depth pixel)."""
    _, depth, alpha = _batch_scene()
    cams = [Camera.from_degrees(40.0, size=s) for s in (64, 32, 100, 17)]
    maps, r = _maps(batch=4, seed=4), 8
    coords = _all_coords(4, r)
    ref = _lift_sparse_loop(maps, cams, coords, r, depth=depth, alpha=alpha)
    out = lift_sparse(maps, cams, coords, r, chunk_size=1000, depth=depth, alpha=alpha)
    assert (out - ref).abs().max() <= 1e-5 * _feature_scale(maps)
    assert torch.equal(out[:, -1], ref[:, -1])


def test_empty_coords() -> None:
    cams, depth, alpha = _batch_scene()
    maps = [m.to(torch.bfloat16) for m in _maps(batch=4)]
    channels = sum(m.shape[1] for m in maps)
    for kwargs, extra in (({}, 0), ({"depth": depth, "alpha": alpha}, DEPTH_CHANNELS)):
        out = lift_sparse(maps, cams, torch.zeros(0, 4, dtype=torch.int32), 8, **kwargs)
        assert out.shape == (0, channels + extra + 1) and out.dtype == torch.bfloat16


def test_shared_camera_and_int32_coords() -> None:
    """One `Camera` for the batch and int32 coordinates (as `SparseTensor` holds them) give the same lift."""
    cam = Camera.from_degrees(35.0, size=64)
    maps, r = _maps(batch=2), 8
    coords = _all_coords(2, r)
    out = lift_sparse(maps, cam, coords.int(), r, chunk_size=100)
    assert torch.equal(out, lift_sparse(maps, [cam, cam], coords, r))
    assert (out - _lift_sparse_loop(maps, [cam, cam], coords, r)).abs().max() <= 1e-5 * _feature_scale(maps)


def test_chunk_size_must_be_positive() -> None:
    cam = Camera.from_degrees(50.0, size=64)
    with pytest.raises(ValueError, match="chunk_size"):
        lift_sparse(_maps(batch=1), cam, _all_coords(1, 2), 2, chunk_size=0)


def test_batched_lift_gradients_match_the_per_element_loop() -> None:
    """A fine-tuned encoder (`train_encoder`) gets the same gradients through the lift as before."""
    cams, depth, alpha = _batch_scene()
    maps = [m.requires_grad_() for m in _maps(batch=4)]
    coords = _all_coords(4, 8)
    weights = torch.randn(coords.shape[0], sum(m.shape[1] for m in maps) + DEPTH_CHANNELS + 1,
                          generator=torch.Generator().manual_seed(0))
    ref = torch.autograd.grad((_lift_sparse_loop(maps, cams, coords, 8, depth=depth, alpha=alpha) * weights).sum(), maps)
    out = torch.autograd.grad((lift_sparse(maps, cams, coords, 8, chunk_size=300, depth=depth, alpha=alpha)
                               * weights).sum(), maps)
    for g, g_ref in zip(out, ref, strict=True):
        assert (g - g_ref).abs().max() <= 1e-5 * g_ref.abs().max()


def test_channels_last_maps_lift_the_same() -> None:
    cams, depth, alpha = _batch_scene()
    maps, r = _maps(batch=4, seed=6), 6
    coords = _all_coords(4, r)
    out = lift_sparse([m.contiguous(memory_format=torch.channels_last) for m in maps], cams, coords, r)
    assert torch.equal(out, lift_sparse(maps, cams, coords, r))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_batched_lift_does_not_sync() -> None:
    """On a GPU the batched lift only queues work: any host sync (nonzero, item, a blocking copy) raises here."""
    cams, depth, alpha = _batch_scene()
    maps = [m.cuda() for m in _maps(batch=4)]
    coords, depth, alpha = _all_coords(4, 8).cuda(), depth.cuda(), alpha.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = lift_sparse(maps, cams, coords, 8, chunk_size=500, depth=depth, alpha=alpha)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = _lift_sparse_loop([m.cpu() for m in maps], cams, coords.cpu(), 8, depth=depth.cpu(), alpha=alpha.cpu())
    assert (out.cpu() - ref).abs().max() <= 1e-4 * _feature_scale(maps)
