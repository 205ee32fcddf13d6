"""Analytic checks of the geometry metrics (pixal3d.eval.metrics) on generated point sets and meshes."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from pixal3d.eval.metrics import (
    chamfer_l1,
    feature_dihedral_error,
    fscore,
    nearest_neighbors,
    normal_consistency,
    sample_surface,
)


def sphere_points(radius: float, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = trimesh.creation.icosphere(5, radius=radius)
    generator = torch.Generator().manual_seed(seed)
    return sample_surface(torch.tensor(mesh.vertices), torch.tensor(mesh.faces), count, generator)


def test_sample_surface_lies_on_the_surface_and_is_reproducible():
    points, normals = sphere_points(0.3, 20000, seed=0)
    assert points.shape == (20000, 3) and points.dtype == torch.float32
    assert torch.allclose(points.norm(dim=1), torch.tensor(0.3), atol=2e-3)
    assert torch.allclose(normals.norm(dim=1), torch.tensor(1.0), atol=1e-5)
    assert float((normals * points).sum(1).min()) > 0  # outward
    again, _ = sphere_points(0.3, 20000, seed=0)
    assert torch.equal(points, again)
    assert abs(float(points.mean(0).norm())) < 0.01  # uniform, not clumped on one side


def test_sample_surface_rejects_zero_area():
    with pytest.raises(ValueError, match="zero area"):
        sample_surface(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 10)


def test_chamfer_of_concentric_spheres_is_the_radius_gap():
    delta = 0.02
    a, _ = sphere_points(0.3, 100000, seed=0)
    b, _ = sphere_points(0.3 + delta, 100000, seed=1)
    assert float(chamfer_l1(a, b)) == pytest.approx(delta, rel=0.1)
    assert float(chamfer_l1(a, a)) == 0.0


def test_chamfer_is_symmetric_mean_of_directed_distances():
    a = torch.tensor([[0.0, 0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])  # a->b: 1; b->a: (5 + 1) / 2
    assert float(chamfer_l1(a, b)) == pytest.approx(0.5 * (1.0 + 3.0))
    distance, index = nearest_neighbors(b, a)
    assert distance.tolist() == pytest.approx([5.0, 1.0]) and index.tolist() == [0, 0]


def test_fscore():
    a, _ = sphere_points(0.3, 5000, seed=0)
    assert float(fscore(a, a.clone(), 0.01)) == 1.0
    assert float(fscore(a, a + torch.tensor([0.05, 0.0, 0.0]), 0.01)) < 0.3
    # Half of the points far away: precision 0.5, recall 1 -> F = 2/3.
    far = torch.cat([a, a[:5000] + 10.0])
    assert float(fscore(far, a, 0.01)) == pytest.approx(2 / 3, abs=1e-6)


def test_normal_consistency():
    points, normals = sphere_points(0.3, 5000, seed=0)
    assert float(normal_consistency(points, normals, points, normals)) == pytest.approx(1.0)
    assert float(normal_consistency(points, normals, points, -normals)) == pytest.approx(1.0)
    assert float(normal_consistency(points, normals, points, -normals, oriented=True)) == pytest.approx(-1.0)
    tangent = torch.nn.functional.normalize(torch.cross(normals, torch.randn_like(normals), dim=1), dim=1)
    assert float(normal_consistency(points, normals, points, tangent)) < 1e-5


def test_feature_dihedral_error_sharp_versus_bevelled():
    box = trimesh.creation.box([0.4, 0.4, 0.4])
    segment = torch.tensor([[[0.2, 0.2, -0.2], [0.2, 0.2, 0.2]]])
    sharp = feature_dihedral_error(box, segment, torch.tensor([math.pi / 2]), 0.02, 0.03)
    assert sharp.numel() > 10 and float(sharp.max()) < 1e-6
    # A 45-degree bevel replaces the 90-degree fold by two 45-degree ones.
    corners = [[x, y, z] for x in (-0.2, 0.2) for y in (-0.2, 0.2) for z in (-0.2, 0.2) if x < 0.2 or y < 0.2]
    corners += [[0.2, 0.18, z] for z in (-0.2, 0.2)] + [[0.18, 0.2, z] for z in (-0.2, 0.2)]
    bevelled = trimesh.convex.convex_hull(corners)
    error = feature_dihedral_error(bevelled, segment, torch.tensor([math.pi / 2]), 0.02, 0.03)
    assert float(error.median()) == pytest.approx(math.pi / 4, abs=1e-3)
