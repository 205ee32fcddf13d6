"""Evaluation metrics against analytic cases: spheres, boxes, shifted squares, known noise, constant images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from pixal3d.eval.metrics import (
    chamfer_l1,
    fov_error_degrees,
    fscore,
    mean_abs_error,
    occupancy_grid,
    occupancy_scores,
    psnr,
    sample_surface,
    silhouette_iou,
    solid_occupancy,
    ssim,
    volume_iou,
)
from pixal3d.eval.topology import boundary_edge_ratio, connected_components, open_edges


def sphere_points(radius: float, count: int, seed: int) -> torch.Tensor:
    """Uniform points on an exact sphere (normalised Gaussian vectors)."""
    g = torch.randn(count, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (radius * g / g.norm(dim=1, keepdim=True)).float()


def box_grid(resolution: int, lo: tuple[int, int, int], hi: tuple[int, int, int]) -> torch.Tensor:
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return grid


def test_chamfer_of_concentric_spheres_is_the_radius_gap() -> None:
    delta = 0.05
    inner, outer = sphere_points(0.3, 20_000, 0), sphere_points(0.3 + delta, 20_000, 1)
    assert float(chamfer_l1(inner, outer)) == pytest.approx(delta, rel=0.02)


def test_fscore_of_concentric_spheres_steps_at_the_gap() -> None:
    inner, outer = sphere_points(0.3, 20_000, 0), sphere_points(0.34, 20_000, 1)
    assert float(fscore(inner, outer, 0.03)) == 0.0
    assert float(fscore(inner, outer, 0.05)) > 0.99


def test_identical_meshes_score_perfectly() -> None:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    v = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    f = torch.as_tensor(mesh.faces, dtype=torch.int64)
    points, _ = sample_surface(v, f, 5000, torch.Generator().manual_seed(0))
    assert float(fscore(points, points, 0.01)) == 1.0
    assert float(chamfer_l1(points, points)) == 0.0
    coords = torch.unique(((points + 0.5) * 64).floor().long().clamp(0, 63), dim=0)
    assert float(volume_iou(coords, coords)) == 1.0
    assert float(volume_iou(coords, coords, fill=False)) == 1.0


def test_volume_iou_of_shifted_boxes() -> None:
    a = box_grid(64, (0, 0, 0), (32, 32, 32))
    b = box_grid(64, (16, 0, 0), (48, 32, 32))  # overlap 16 of 48 along x
    assert float(volume_iou(a, b)) == pytest.approx(1 / 3)
    coords_a = torch.nonzero(a).int()
    batch = torch.zeros(coords_a.shape[0], 1, dtype=torch.int32)
    assert float(volume_iou(torch.cat([batch, coords_a], 1), b)) == pytest.approx(1 / 3)


def test_solid_occupancy_fills_a_closed_shell_only() -> None:
    solid = box_grid(32, (8, 8, 8), (24, 24, 24))
    shell = solid & ~box_grid(32, (9, 9, 9), (23, 23, 23))
    assert torch.equal(solid_occupancy(shell), solid)
    opened = shell.clone()
    opened[15, 15, 8] = False  # a hole in the bottom face
    assert torch.equal(solid_occupancy(opened), opened)
    # Shell IoU punishes a one-voxel shift far more than the volume IoU does.
    moved = torch.roll(shell, 1, dims=0)
    assert float(volume_iou(shell, moved)) == pytest.approx(15 / 17)  # 16-voxel cube moved by 1
    assert float(volume_iou(shell, moved, fill=False)) < 0.5


def test_occupancy_grid_rejects_out_of_range_coords() -> None:
    with pytest.raises(ValueError, match="lie in"):
        occupancy_grid(torch.tensor([[0, 0, 64]]), 64)


@pytest.mark.parametrize("shift", [0, 1, 5, 12])
def test_silhouette_iou_of_a_shifted_square(shift: int) -> None:
    side = 20
    a = torch.zeros(64, 64)
    a[10 : 10 + side, 10 : 10 + side] = 1.0
    b = torch.roll(a, shift, dims=1)
    assert float(silhouette_iou(a, b)) == pytest.approx((side - shift) / (side + shift))


def test_psnr_of_known_gaussian_noise() -> None:
    sigma = 0.05
    clean = torch.full((256, 256, 3), 0.5)
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert float(psnr(noisy, clean)) == pytest.approx(10 * math.log10(1 / sigma**2), abs=0.05)
    assert math.isinf(float(psnr(clean, clean)))


def test_psnr_and_error_on_a_mask() -> None:
    a, b = torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)
    b[:4] = 0.1
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    assert float(psnr(a, b, mask)) == pytest.approx(20.0)
    assert float(mean_abs_error(a, b, mask)) == pytest.approx(0.1)
    assert float(mean_abs_error(a, b)) == pytest.approx(0.05)
    assert math.isnan(float(mean_abs_error(a, b, torch.zeros(8, 8, dtype=torch.bool))))


def test_ssim_identical_constant_and_noisy() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(48, 48, 3, generator=g)
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-5)
    # Constant images: sigma = 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) exactly.
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert float(ssim(torch.full((32, 32), 0.2), torch.full((32, 32), 0.6))) == pytest.approx(expected, rel=1e-4)
    noisy = (image + 0.1 * torch.randn(image.shape, generator=g)).clamp(0, 1)
    value = float(ssim(image, noisy))
    assert 0.0 < value < 0.95
    assert value == pytest.approx(float(ssim(noisy, image)), abs=1e-6)


def test_ssim_rejects_small_images() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))


def test_fov_error_in_degrees() -> None:
    assert fov_error_degrees(math.radians(50), math.radians(40)) == pytest.approx(10.0)
    assert fov_error_degrees(math.radians(30), math.radians(40)) == pytest.approx(10.0)


# ------------------------------------------------------------------------------------------------ mesh topology
def cube_without_face(axis: int) -> trimesh.Trimesh:
    """A closed triangulated unit cube minus the two triangles of its +axis face."""
    cube = trimesh.creation.box()
    keep = cube.face_normals[:, axis] < 0.5
    assert (~keep).sum() == 2
    return trimesh.Trimesh(cube.vertices, cube.faces[keep], process=False)


def split_per_face(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """Every face with its own three vertex copies, as a UV unwrap with a seam on every edge leaves them."""
    vertices = np.asarray(mesh.vertices)[np.asarray(mesh.faces).reshape(-1)]
    return vertices, np.arange(len(vertices)).reshape(-1, 3)


def test_a_closed_cube_has_no_open_edges_and_one_component() -> None:
    cube = trimesh.creation.box()
    assert open_edges(cube.vertices, cube.faces) == 0
    assert boundary_edge_ratio(cube.vertices, cube.faces) == 0.0
    assert connected_components(cube.vertices, cube.faces) == 1
    # UV seams split vertices; the metrics are geometric, so nothing changes.
    assert boundary_edge_ratio(*split_per_face(cube)) == 0.0
    assert connected_components(*split_per_face(cube)) == 1


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_cube_with_one_face_removed_has_four_open_edges(axis: int) -> None:
    open_cube = cube_without_face(axis)
    assert open_edges(open_cube.vertices, open_cube.faces) == 4
    # 18 edges (12 sides + 6 diagonals) minus the removed face's diagonal.
    assert boundary_edge_ratio(open_cube.vertices, open_cube.faces) == pytest.approx(4 / 17)
    assert open_edges(*split_per_face(open_cube)) == 4
    assert connected_components(open_cube.vertices, open_cube.faces) == 1


def test_components_of_disjoint_and_touching_cubes() -> None:
    a = trimesh.creation.box()
    apart = trimesh.util.concatenate([a, a.copy().apply_translation([3.0, 0, 0])])
    assert connected_components(apart.vertices, apart.faces) == 2
    assert connected_components(*split_per_face(apart)) == 2
    corner = trimesh.util.concatenate([a, a.copy().apply_translation([1.0, 1.0, 1.0])])  # one shared corner
    assert connected_components(corner.vertices, corner.faces) == 1
    assert boundary_edge_ratio(apart.vertices, apart.faces) == 0.0


def test_topology_of_an_empty_mesh() -> None:
    vertices, faces = np.zeros((3, 3)), np.array([[0, 1, 2]])  # one triangle collapsed to a point
    assert connected_components(vertices, faces) == 0
    assert math.isnan(boundary_edge_ratio(vertices, faces))


def test_occupancy_scores_of_overlapping_sets() -> None:
    truth = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    predicted = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 1, 1]])
    scores = occupancy_scores(predicted, truth, 2)
    assert scores == pytest.approx({"iou": 2 / 5, "precision": 2 / 3, "recall": 2 / 4})
    assert occupancy_scores(truth, truth, 2) == {"iou": 1.0, "precision": 1.0, "recall": 1.0}
