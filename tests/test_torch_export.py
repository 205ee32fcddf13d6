"""The PyTorch export path (issue 18), run on CPU tensors: atlas invariants, known colours, and agreement with the
CPU reference path (xatlas + numpy bake).

Stated bounds (torus at R = 64, 256^2 textures, 3000 probe points on the fine surface):
- unsimplified: colour p95 <= 3/255, mean <= 1.5/255; normal angle mean <= 1.5 deg, p95 <= 3 deg;
- simplified to a quarter of the faces: colour p95 <= 4/255; normal angle mean <= 4 deg, p95 <= 10 deg.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
import trimesh
from gltf_validator import assert_valid_glb

from pixal3d.errors import InputError
from pixal3d.geometry import writers
from pixal3d.geometry.bake import bake_textures, closest_surface_points
from pixal3d.geometry.dual_grid import mesh_to_voxels, normalize_to_unit_cube
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh
from pixal3d.geometry.export import ExportOptions, textured_mesh
from pixal3d.geometry.torch_export import bake as tbake
from pixal3d.geometry.torch_export import charts, clean, export_textured
from pixal3d.geometry.torch_export.compare import compare_bakes, texel_efficiency
from pixal3d.geometry.torch_export.raster import rasterize_claims
from pixal3d.geometry.uv import rasterize_uv

SIZE = 256
FACE_COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9],
                         [0.9, 0.9, 0.1], [0.1, 0.9, 0.9], [0.8, 0.2, 0.8]], dtype=np.float32)


@pytest.fixture(scope="module")
def torus_voxels():
    mesh = trimesh.creation.torus(0.3, 0.12, major_sections=48, minor_sections=24)
    mesh.visual.vertex_colors = (np.clip(mesh.vertices * 2 + 0.5, 0, 1) * 255).astype(np.uint8)
    return mesh_to_voxels(normalize_to_unit_cube(mesh), 64)


def helicoid() -> trimesh.Trimesh:
    """A ramp winding twice around the z axis: every face looks up (+z), so its projection overlaps itself."""
    r, t = np.meshgrid(np.linspace(0.1, 0.3, 4), np.linspace(0, 4 * np.pi, 97), indexing="ij")
    xyz = np.stack([r * np.cos(t), r * np.sin(t), 0.01 * t], -1).reshape(-1, 3)
    idx = np.arange(r.size).reshape(r.shape)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return trimesh.Trimesh(xyz, faces, process=False)


def atlas_of(mesh: trimesh.Trimesh, size: int = SIZE):
    v = torch.tensor(mesh.vertices, dtype=torch.float32)
    f = torch.tensor(mesh.faces, dtype=torch.int64)
    return charts.build_atlas(v, f, size)


@pytest.mark.parametrize("name", ["torus", "helicoid", "box"])
def test_every_face_gets_uvs_in_the_unit_square_and_no_texel_is_claimed_twice(name: str, torus_voxels) -> None:
    mesh = {"torus": lambda: voxels_to_mesh(torus_voxels), "helicoid": helicoid,
            "box": lambda: trimesh.creation.box((0.6, 0.4, 0.2))}[name]()
    vertex_map, faces, uvs, chart = atlas_of(mesh)
    assert faces.shape == (len(mesh.faces), 3)
    assert ((uvs >= 0) & (uvs <= 1)).all()
    # The atlas keeps every face, with its corners' positions.
    np.testing.assert_array_equal(vertex_map[faces].numpy(), mesh.faces)
    # Exact check at texel precision: rasterise every face's texel centres (strictly inside) and count the claims.
    texel, _ = rasterize_claims(uvs[faces], SIZE, strict=True)
    assert len(texel) > 0 and int(torch.bincount(texel).max()) == 1
    # Charts keep their orientation (seen from outside, not mirrored): every face has positive UV area.
    tri = uvs[faces].double()
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    assert (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] < 0).all()  # v points down: counter-clockwise is negative


def test_helicoid_charts_are_cut_until_they_do_not_overlap() -> None:
    mesh = helicoid()
    v, f = torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces)
    chart, direction = charts.face_charts(v, f, cells=1)
    assert int(chart.max()) == 0  # one +z chart: it overlaps itself
    uv, _ = charts.pack_charts(charts.chart_coordinates(v, f, direction), chart, SIZE)
    assert charts.overlapping_faces(uv, SIZE).any()


def cube_sampler(points: torch.Tensor) -> torch.Tensor:
    """Colour of the cube face a surface point lies on (the axis where |p| is largest)."""
    p = points.numpy()
    axis = np.abs(p).argmax(1)
    face = axis * 2 + (p[np.arange(len(p)), axis] < 0)
    rgb = FACE_COLOURS[face]
    return torch.from_numpy(np.concatenate([rgb, np.tile([[0.0, 0.5, 1.0]], (len(p), 1))], 1)).float()


def cube_face_colours(mesh) -> np.ndarray:
    """`[F, 3]` the known colour of each face of a baked cube, from its normal."""
    p = mesh.vertices[mesh.faces.astype(np.int64)]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    axis = np.abs(n).argmax(1)
    return FACE_COLOURS[axis * 2 + (n[np.arange(len(n)), axis] < 0)]


def assert_known_colours(baked, tolerance: float = 1 / 255) -> None:
    face_id, bary = rasterize_uv(baked.uvs, baked.faces.astype(np.int64), SIZE)
    inner = (face_id >= 0) & (bary.min(axis=2) > 0.02)  # away from cube edges, where two faces meet
    expected = cube_face_colours(baked)[face_id[inner]]
    got = baked.base_color[inner][:, :3] / 255.0
    assert inner.sum() > 1000
    assert np.abs(got - expected).max() <= tolerance + 1e-6


def test_textured_cube_bakes_its_known_colours_on_both_paths() -> None:
    cube = trimesh.creation.box((0.6, 0.6, 0.6)).subdivide()
    assert_known_colours(bake_textures(cube, cube_sampler, SIZE))
    assert_known_colours(export_textured(cube, 1000, SIZE, "cpu", sampler=cube_sampler))


def reference_and_torch(voxels, faces: int):
    fine = voxels_to_mesh(voxels)
    options = ExportOptions(faces=faces, texture_size=SIZE)
    reference = textured_mesh(fine, partial(sample_attributes, voxels), options, sample_at_vertices=True)
    timings: dict[str, float] = {}
    other = export_textured(fine, faces, SIZE, "cpu", resolution=voxels.resolution, timings=timings)
    points, _ = trimesh.sample.sample_surface(fine, 3000, seed=0)
    return fine, reference, other, compare_bakes(reference, other, points), timings


def test_torch_path_matches_the_cpu_path_unsimplified(torus_voxels) -> None:
    fine, reference, other, diff, timings = reference_and_torch(torus_voxels, 100_000)
    assert len(other.faces) == len(reference.faces) == len(fine.faces)
    assert diff["colour_mean"] <= 1.5 and diff["colour_p95"] <= 3.0, diff
    assert diff["normal_mean_deg"] <= 1.5 and diff["normal_p95_deg"] <= 3.0, diff
    assert {"clean-up", "simplify", "uv charts + packing", "texel values"} <= set(timings)
    assert texel_efficiency(other) >= 0.8 * texel_efficiency(reference)


def test_torch_path_matches_the_cpu_path_simplified(torus_voxels, tmp_path: Path) -> None:
    fine, reference, other, diff, _ = reference_and_torch(torus_voxels, len(voxels_to_mesh(torus_voxels).faces) // 4)
    assert len(other.faces) <= len(fine.faces) // 4
    assert len(other.faces) >= len(fine.faces) // 8
    assert diff["colour_p95"] <= 4.0, diff
    assert diff["normal_mean_deg"] <= 4.0 and diff["normal_p95_deg"] <= 10.0, diff
    path = writers.WRITERS[".glb"](tmp_path / "torch.glb", other, "png", True, None)
    report = assert_valid_glb(path)
    assert report["issues"]["numWarnings"] == 0


def test_connected_components_agree_with_scipy() -> None:
    rng = np.random.default_rng(0)
    edges = rng.integers(0, 300, size=(250, 2))
    labels = clean.connected_components(300, torch.from_numpy(edges)).numpy()
    graph = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(300, 300))
    _, expected = scipy.sparse.csgraph.connected_components(graph, directed=False)
    # The same partition: labels map one to one.
    pairs = set(zip(labels.tolist(), expected.tolist(), strict=True))
    assert len(pairs) == len(set(labels.tolist())) == len(set(expected.tolist()))


def test_seam_dilation_fills_every_texel_from_a_near_covered_one() -> None:
    rng = np.random.default_rng(1)
    mask = torch.from_numpy(rng.random((64, 64)) < 0.02)
    source = tbake.nearest_covered(mask)
    assert mask.reshape(-1)[source].all()
    covered = torch.nonzero(mask.reshape(-1)).squeeze(1)
    rows, cols = torch.arange(64 * 64) // 64, torch.arange(64 * 64) % 64
    exact = ((rows[:, None] - covered // 64) ** 2 + (cols[:, None] - covered % 64) ** 2).min(1).values
    got = (rows - source // 64) ** 2 + (cols - source % 64) ** 2
    assert (got == exact).float().mean() >= 0.99 and (got.float().sqrt() - exact.float().sqrt()).max() <= 1.5


def test_simplification_meets_the_budget_and_keeps_the_shape(torus_voxels) -> None:
    fine = voxels_to_mesh(torus_voxels)
    mesh = clean.repair((torch.tensor(fine.vertices, dtype=torch.float32), torch.tensor(fine.faces),
                         torch.zeros(len(fine.vertices), 6)))
    v, f, _ = clean.cluster_simplify(mesh, 3000)
    assert 1500 <= len(f) <= 3000
    out = trimesh.Trimesh(v.numpy(), f.numpy(), process=False)
    probes = np.asarray(fine.vertices[::7], dtype=np.float32)
    face, bary = closest_surface_points(out, probes, candidates=8)
    closest = np.einsum("mc,mcd->md", bary, out.vertices[out.faces[face]])
    distance = np.linalg.norm(closest - probes, axis=1)
    assert np.quantile(distance, 0.95) <= 1.5 / 64


def test_cuda_export_device_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="needs a CUDA GPU"):
        ExportOptions(device="cuda")
    assert ExportOptions(device="auto").torch_device() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_the_cpu_path_and_the_torch_cpu_run(torus_voxels) -> None:
    """On the device: the GPU path within the same bounds of the CPU reference, and close to its own CPU run."""
    fine = voxels_to_mesh(torus_voxels)
    faces = len(fine.faces) // 4
    reference = textured_mesh(fine, partial(sample_attributes, torus_voxels), ExportOptions(faces, SIZE),
                              sample_at_vertices=True)
    on_gpu = export_textured(fine, faces, SIZE, "cuda", resolution=torus_voxels.resolution)
    on_cpu = export_textured(fine, faces, SIZE, "cpu", resolution=torus_voxels.resolution)
    points, _ = trimesh.sample.sample_surface(fine, 3000, seed=0)
    diff = compare_bakes(reference, on_gpu, points)
    assert diff["colour_p95"] <= 4.0 and diff["normal_mean_deg"] <= 4.0, diff
    same = compare_bakes(on_cpu, on_gpu, points)
    assert same["colour_p95"] <= 1.0 and same["normal_p95_deg"] <= 1.0, same


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_glb_validates(torus_voxels, tmp_path: Path) -> None:
    fine = voxels_to_mesh(torus_voxels)
    on_gpu = export_textured(fine, len(fine.faces) // 4, SIZE, "cuda", resolution=torus_voxels.resolution)
    path = writers.WRITERS[".glb"](tmp_path / "gpu.glb", on_gpu, "png", True, None)
    assert assert_valid_glb(path)["issues"]["numWarnings"] == 0
