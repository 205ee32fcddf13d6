"""Tests for the export chain: clean-up, UV bake, normal map, GLB writer, colour round trip and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from gltf_validator import assert_valid_glb
from PIL import Image

from pixal3d.errors import InputError
from pixal3d.geometry import bake, cleanup, gltf
from pixal3d.geometry import uv as uv_atlas
from pixal3d.geometry.export import convert_file, mesh_to_glb, voxels_to_glb

CHECKER_SQUARES = 5  # odd: the pattern is the same under a vertical flip, so either UV v convention reads it
CHECKER_COLOURS = np.array([[0.85, 0.15, 0.10], [0.10, 0.30, 0.80]])
BOX_EXTENTS = np.array(
    [0.96, 0.70, 0.50]
)  # longest side 1 - 2 * 0.02: normalize_to_unit_cube leaves it as is
# Per box face (normal axis, sign): the axes that carry (u, v) across the face.
BOX_FACES = [
    (0, 1, (1, 2)),
    (0, -1, (1, 2)),
    (1, 1, (0, 2)),
    (1, -1, (0, 2)),
    (2, 1, (0, 1)),
    (2, -1, (0, 1)),
]


def constant_sampler(points: torch.Tensor) -> torch.Tensor:
    """Stand-in attributes: colour from position, metallic 0.25, roughness 0.75, opaque."""
    n = len(points)
    return torch.cat(
        [(points + 0.5).clamp(0, 1), torch.full((n, 1), 0.25), torch.full((n, 1), 0.75), torch.ones(n, 1)], 1
    )


def checker_local(points: np.ndarray, face: np.ndarray) -> np.ndarray:
    """`[M, 2]` local (u, v) in [0, 1] of points on the checker box, given their box face index `[M]`."""
    axes = np.array([f[2] for f in BOX_FACES])[face]  # (M, 2)
    half = BOX_EXTENTS / 2
    coords = np.take_along_axis(points, axes, axis=1)
    return (coords + half[axes]) / BOX_EXTENTS[axes]


def checker_colour(local: np.ndarray) -> np.ndarray:
    cell = np.floor(np.clip(local, 0, 1 - 1e-9) * CHECKER_SQUARES).astype(int)
    return CHECKER_COLOURS[(cell[:, 0] + cell[:, 1]) % 2]


def box_face_of(points: np.ndarray) -> np.ndarray:
    """Box face index of surface points: the axis/sign where the point touches the box."""
    rel = points / (BOX_EXTENTS / 2)
    axis = np.argmax(np.abs(rel), axis=1)
    sign = np.sign(rel[np.arange(len(points)), axis])
    return axis * 2 + (sign < 0)


def checker_box() -> trimesh.Trimesh:
    """A box whose every face maps its full [0, 1]^2 UV square onto one checkerboard texture."""
    half = BOX_EXTENTS / 2
    vertices, uvs, faces = [], [], []
    for axis, sign, (a, b) in BOX_FACES:
        corners = np.zeros((4, 3))
        corners[:, axis] = sign * half[axis]
        local = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
        corners[:, a] = (local[:, 0] - 0.5) * BOX_EXTENTS[a]
        corners[:, b] = (local[:, 1] - 0.5) * BOX_EXTENTS[b]
        quad = np.array([[0, 1, 2], [0, 2, 3]]) + len(vertices) * 4
        normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
        if normal[axis] * sign < 0:
            quad = quad[:, ::-1]
        vertices.append(corners)
        uvs.append(local)
        faces.append(quad)
    side = 160
    cell = np.arange(side) * CHECKER_SQUARES // side
    image = CHECKER_COLOURS[(cell[:, None] + cell[None, :]) % 2]
    texture = Image.fromarray(np.rint(image * 255).astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255]
    )
    visual = trimesh.visual.TextureVisuals(uv=np.concatenate(uvs), material=material)
    return trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), visual=visual, process=False)


def bumpy_box(subdivisions: int = 5) -> trimesh.Trimesh:
    """A 0.8-cube whose top (+y) face carries sinusoidal bumps; the other faces stay flat."""
    mesh = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    for _ in range(subdivisions):
        mesh = mesh.subdivide()
    v = mesh.vertices.copy()
    top = v[:, 1] > 0.4 - 1e-9
    inner = np.clip((0.4 - np.abs(v[:, [0, 2]])) / 0.05, 0, 1).prod(axis=1)  # bumps fade out at the rim
    v[top, 1] += 0.03 * inner[top] * np.sin(v[top, 0] * 2 * np.pi / 0.2) * np.sin(v[top, 2] * 2 * np.pi / 0.2)
    return trimesh.Trimesh(v, mesh.faces, process=False)


def surface_samples(
    mesh: bake.TexturedMesh, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(points [M, 3], face_id [M], bary [M, 3])` area-uniform on a baked mesh."""
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    points, face_id = trimesh.sample.sample_surface(tm, count, seed=seed)
    bary = trimesh.triangles.points_to_barycentric(tm.triangles[face_id], points)
    return points, face_id, bary


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


# ------------------------------------------------------------------------------------------------ clean-up
def test_remove_small_components_drops_floater_keeps_parts() -> None:
    big = trimesh.creation.icosphere(subdivisions=5, radius=0.3)
    other = trimesh.creation.icosphere(subdivisions=5, radius=0.2).apply_translation([0.6, 0, 0])
    floater = trimesh.creation.icosphere(subdivisions=0, radius=0.01).apply_translation([0, 0.6, 0])
    mesh = trimesh.util.concatenate([big, other, floater])
    out = cleanup.remove_small_components(mesh)
    assert len(out.faces) == len(big.faces) + len(other.faces)
    assert out.vertices[:, 1].max() < 0.5


def test_fill_small_holes_closes_hole_keeps_open_border() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    fan = (sphere.faces == 0).any(axis=1)
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[~fan], process=False)  # a hole of 5 edges
    holed.remove_unreferenced_vertices()
    assert not holed.is_watertight
    filled = cleanup.fill_small_holes(holed, max_hole_edges=16)
    assert filled.is_watertight and filled.is_winding_consistent
    assert filled.volume > 0  # outward orientation kept
    sheet = trimesh.creation.box(extents=(0.8, 0.8, 0.01)).subdivide().subdivide()
    sheet = trimesh.Trimesh(sheet.vertices, sheet.faces[sheet.face_normals[:, 2] > 0.9], process=False)
    sheet.remove_unreferenced_vertices()
    assert len(cleanup.fill_small_holes(sheet, max_hole_edges=12).faces) == len(
        sheet.faces
    )  # border: 16 edges


def test_simplify_meets_budget_and_checks_it() -> None:
    mesh = trimesh.creation.icosphere(subdivisions=4)
    out = cleanup.simplify(mesh, 500)
    assert 300 <= len(out.faces) <= 500
    assert out.is_watertight
    for bad in (3, 0, -5, 10**9, 1.5):
        with pytest.raises(InputError, match="face budget"):
            cleanup.simplify(mesh, bad)


# ------------------------------------------------------------------------------------------------ bake
def test_rasterize_uv_covers_square_with_exact_barycentrics() -> None:
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    face_id, bary = uv_atlas.rasterize_uv(uvs, faces, 32)
    assert (face_id >= 0).all()
    rebuilt = np.einsum("hwc,hwcd->hwd", bary, uvs[faces[face_id]])
    rows, cols = np.mgrid[0:32, 0:32]
    np.testing.assert_allclose(rebuilt[..., 0], (cols + 0.5) / 32, atol=1e-5)
    np.testing.assert_allclose(rebuilt[..., 1], (rows + 0.5) / 32, atol=1e-5)


def test_unwrap_in_parts_keeps_every_face_in_one_atlas(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large meshes go to xatlas as k-d parts: every face comes back once, and the parts' charts do not overlap."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.4)  # 1,280 faces
    monkeypatch.setattr(uv_atlas, "_UNWRAP_PART_FACES", 200)
    parts = uv_atlas._unwrap_parts(np.asarray(mesh.vertices), np.asarray(mesh.faces))
    assert len(parts) == 8 and all(len(f) == 160 for _, f in parts)  # 1,280 / 200 -> 3 halvings
    monkeypatch.setattr(uv_atlas, "_UNWRAP_PART_FACES", 2_000)
    assert len(uv_atlas._unwrap_parts(np.asarray(mesh.vertices), np.asarray(mesh.faces))) == 1
    monkeypatch.setattr(uv_atlas, "_UNWRAP_PART_FACES", 200)
    vertex_map, faces, uvs = uv_atlas.unwrap_uv(mesh, 512)
    returned = sorted(map(tuple, np.sort(vertex_map[faces], axis=1)))
    assert returned == sorted(map(tuple, np.sort(mesh.faces, axis=1)))
    assert uvs.min() >= 0.0 and uvs.max() <= 1.0
    tri = uvs[faces]  # (F, 3, 2)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    face_id, _ = uv_atlas.rasterize_uv(uvs, faces, 1024)
    covered = (face_id >= 0).mean()  # the union of the UV triangles; overlapping charts would make it smaller
    assert abs(covered - area) <= 0.05 * area


def test_fill_empty_texels_copies_nearest() -> None:
    image = np.zeros((8, 8, 1), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=bool)
    image[1, 1], mask[1, 1] = 10, True
    image[6, 6], mask[6, 6] = 200, True
    out = bake.fill_empty_texels(image, mask)
    assert out[0, 0, 0] == 10 and out[7, 7, 0] == 200 and out[2, 2, 0] == 10


def test_glb_loads_back_with_material_slots_and_validates(tmp_path: Path) -> None:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    for image_format in ("png", "webp"):
        path = mesh_to_glb(
            mesh,
            constant_sampler,
            tmp_path / f"a_{image_format}.glb",
            faces=200,
            texture_size=256,
            image_format=image_format,
        )
        report = assert_valid_glb(path)
        assert report["issues"]["numWarnings"] == 0
        if image_format == "png":
            scene = trimesh.load(path)
            (loaded,) = scene.geometry.values()
            material = loaded.visual.material
            assert isinstance(material, trimesh.visual.material.PBRMaterial)
            for slot in ("baseColorTexture", "metallicRoughnessTexture", "normalTexture"):
                assert getattr(material, slot) is not None, slot
            mr = np.asarray(material.metallicRoughnessTexture)
            assert (
                abs(np.median(mr[..., 1]) - 0.75 * 255) <= 1 and abs(np.median(mr[..., 2]) - 0.25 * 255) <= 1
            )
            assert len(loaded.faces) <= 200
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_png.glb",
        "a_webp.glb",
    ]  # no temporary files left


def test_cancelling_vertex_normals_still_give_a_valid_glb(tmp_path: Path) -> None:
    """A double-sided sheet (each triangle also present reversed) has zero angle-weighted vertex normals."""
    sheet = trimesh.creation.box(extents=(0.6, 0.6, 0.01)).subdivide()
    sheet = trimesh.Trimesh(sheet.vertices, sheet.faces[sheet.face_normals[:, 2] > 0.9], process=False)
    double = trimesh.Trimesh(
        sheet.vertices, np.concatenate([sheet.faces, sheet.faces[:, ::-1]]), process=False
    )
    box = trimesh.creation.box(extents=(0.3, 0.3, 0.3)).apply_translation([0, 0, 0.2])
    mesh = trimesh.util.concatenate([double, box])
    assert (np.linalg.norm(mesh.vertex_normals, axis=1) < 0.5).any()
    path = mesh_to_glb(mesh, constant_sampler, tmp_path / "d.glb", faces=500, texture_size=256)
    assert_valid_glb(path)


def test_bake_colour_round_trip_with_stand_in_sampler(tmp_path: Path) -> None:
    """Bake an analytic checker (3D position -> colour) and read it back from the GLB through trimesh's UVs."""

    def checker_sampler(points: torch.Tensor) -> torch.Tensor:
        p = points.numpy()
        colour = checker_colour(checker_local(p, box_face_of(p)))
        return torch.from_numpy(np.concatenate([colour, np.tile([[0.0, 0.5, 1.0]], (len(p), 1))], 1)).float()

    box = checker_box()
    path = mesh_to_glb(box, checker_sampler, tmp_path / "c.glb", faces=200, texture_size=256)
    assert_valid_glb(path)
    (loaded,) = trimesh.load(path).geometry.values()
    points, face_id = trimesh.sample.sample_surface(loaded, 4000, seed=1)
    bary = trimesh.triangles.points_to_barycentric(loaded.triangles[face_id], points)
    uv = np.einsum("mc,mcd->md", bary, loaded.visual.uv[loaded.faces[face_id]])
    uv[:, 1] = 1 - uv[:, 1]  # trimesh flips glTF v on load
    baked = bake.lookup_texture(np.asarray(loaded.visual.material.baseColorTexture.convert("RGB")), uv)
    local = checker_local(points, box_face_of(points))
    away = np.abs(local * CHECKER_SQUARES - np.rint(local * CHECKER_SQUARES)).min(axis=1) > 0.1
    error = np.abs(baked - checker_colour(local)).mean(axis=1)[away]
    assert np.median(error) <= 0.02 and np.quantile(error, 0.95) <= 0.05


def test_normal_map_carries_fine_detail_and_is_flat_on_flat_faces() -> None:
    fine = bumpy_box()
    coarse = cleanup.simplify(fine, 300)
    baked = bake.bake_textures(coarse, constant_sampler, 256, fine_mesh=fine)
    points, face_id, bary = surface_samples(baked, 20000)
    decoded = bake.decode_normal_map(baked, face_id, bary)
    face_normals = trimesh.Trimesh(baked.vertices, baked.faces, process=False).face_normals[face_id]
    fine_face, fine_bary = bake.closest_surface_points(fine, points)
    truth = np.einsum("mc,mcd->md", fine_bary, fine.vertex_normals[fine.faces[fine_face]])

    inner = (np.abs(points) < 0.35).sum(axis=1) >= 2  # away from the cube's edges
    top = inner & (points[:, 1] > 0.3)
    flat = inner & (points[:, 1] < 0.3)
    assert top.sum() > 1000 and flat.sum() > 5000
    assert np.quantile(angle_deg(decoded[flat], face_normals[flat]), 0.95) <= 5.0
    assert np.median(angle_deg(decoded[top], face_normals[top])) >= 10.0  # the bumps are in the map ...
    assert np.median(angle_deg(decoded[top], truth[top])) <= 5.0  # ... and they are the fine mesh's normals
    tangent_space = baked.normal_map.reshape(-1, 3).astype(float)
    assert tangent_space.std(axis=0).max() > 5  # not a constant (flat) map


def test_normal_map_without_fine_mesh_is_flat() -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    baked = bake.bake_textures(mesh, constant_sampler, 256)
    assert (np.abs(baked.normal_map.astype(int) - [128, 128, 255]) <= 1).all()


def test_tangents_are_unit_orthogonal_with_signed_w() -> None:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    baked = bake.bake_textures(mesh, constant_sampler, 256)
    t, w = baked.tangents[:, :3], baked.tangents[:, 3]
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert np.abs(np.sum(t * baked.normals, axis=1)).max() < 1e-4
    assert set(np.unique(w)) <= {-1.0, 1.0}


@pytest.mark.parametrize("mirrored", [False, True])
def test_tangents_follow_gltf_convention(mirrored: bool) -> None:
    """glTF: T along +u, B = cross(N, T) * w points up in the image (-v), so +Y in the normal map is image-up."""
    vertices = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    u = 0.5 - vertices[:, 0] if mirrored else vertices[:, 0] + 0.5
    uvs = np.stack([u, 0.5 - vertices[:, 1]], axis=1)  # image up (v decreasing) = world +y
    normals = np.tile([[0.0, 0.0, 1.0]], (4, 1))
    tangents = bake.vertex_tangents(vertices, faces, uvs, normals)
    np.testing.assert_allclose(tangents[:, :3], [[-1.0 if mirrored else 1.0, 0, 0]] * 4, atol=1e-6)
    bitangent = np.cross(normals, tangents[:, :3]) * tangents[:, 3:]
    np.testing.assert_allclose(bitangent, [[0, 1.0, 0]] * 4, atol=1e-6)


def test_write_glb_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = bake.bake_textures(trimesh.creation.icosphere(subdivisions=1, radius=0.4), constant_sampler, 256)
    target = tmp_path / "x.glb"
    target.write_bytes(b"old")

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gltf.os, "replace", explode)
    with pytest.raises(OSError, match="disk full"):
        gltf.write_glb(target, mesh)
    assert [p.name for p in tmp_path.iterdir()] == ["x.glb"] and target.read_bytes() == b"old"


# ------------------------------------------------------------------------------------------------ full chain
@pytest.fixture(scope="module")
def checker_voxels():
    from pixal3d.geometry.dual_grid import mesh_to_voxels, normalize_to_unit_cube

    box = checker_box()
    return mesh_to_voxels(normalize_to_unit_cube(box), 64)


def test_colour_round_trip_through_voxels(tmp_path: Path, checker_voxels) -> None:
    """Checker box -> voxels (R = 64) -> baked GLB: median base-colour error <= 0.05 away from checker edges."""
    path = voxels_to_glb(checker_voxels, tmp_path / "box.glb", faces=2000, texture_size=256)
    assert_valid_glb(path)
    (loaded,) = trimesh.load(path).geometry.values()
    points, face_id = trimesh.sample.sample_surface(loaded, 10000, seed=2)
    bary = trimesh.triangles.points_to_barycentric(loaded.triangles[face_id], points)
    uv = np.einsum("mc,mcd->md", bary, loaded.visual.uv[loaded.faces[face_id]])
    uv[:, 1] = 1 - uv[:, 1]
    baked = bake.lookup_texture(np.asarray(loaded.visual.material.baseColorTexture.convert("RGB")), uv)
    local = checker_local(points, box_face_of(points))
    voxel = 1.0 / 64
    square = BOX_EXTENTS[np.array([f[2] for f in BOX_FACES])[box_face_of(points)]] / CHECKER_SQUARES  # (M, 2)
    to_line = np.abs(local * CHECKER_SQUARES - np.rint(local * CHECKER_SQUARES)) * square
    to_rim = (BOX_EXTENTS / 2 - np.abs(points)).copy()
    to_rim[np.arange(len(points)), box_face_of(points) // 2] = 1.0
    away = (to_line.min(axis=1) > 2 * voxel) & (to_rim.min(axis=1) > 2 * voxel)
    assert away.sum() > 2000
    error = np.abs(baked - checker_colour(local)).mean(axis=1)[away]
    assert np.median(error) <= 0.05


# ------------------------------------------------------------------------------------------------ bad input
def write_obj(path: Path, vertices: str, faces: str = "f 1 2 3\n", mtl: str | None = None) -> Path:
    header = ""
    if mtl is not None:
        (path.parent / "m.mtl").write_text(mtl)
        header = "mtllib m.mtl\nusemtl skin\n"
    path.write_text(header + vertices + faces)
    return path


TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"


@pytest.mark.parametrize(
    "case, kwargs, match",
    [
        ("unsupported", {}, "unsupported input"),
        ("missing", {}, "does not exist"),
        ("garbage", {}, "could not read"),
        ("empty", {}, "no triangles"),
        ("nan", {}, "NaN"),
        ("missing_texture", {}, "do not exist"),
        ("missing_buffer", {}, "do not exist"),
        ("ok", {"resolution": 100}, "resolution"),
        ("ok", {"faces": 2}, "face budget"),
        ("ok", {"texture_size": 100}, "texture size"),
        ("ok", {"image_format": "jpg"}, "image format"),
    ],
)
def test_bad_input_raises_and_leaves_no_file(tmp_path: Path, case: str, kwargs: dict, match: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    inputs = {
        "unsupported": lambda: (src / "a.stl").write_text("solid a\nendsolid a\n") and src / "a.stl",
        "missing": lambda: src / "nothing.obj",
        "garbage": lambda: (src / "a.glb").write_bytes(b"not a glb at all") and src / "a.glb",
        "empty": lambda: write_obj(src / "a.obj", "v 0 0 0\nv 1 0 0\n", faces=""),
        "nan": lambda: write_obj(src / "a.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\n"),
        "missing_texture": lambda: write_obj(
            src / "a.obj", TRIANGLE, "f 1/1 2/2 3/3\n", mtl="newmtl skin\nmap_Kd skin.png\n"
        ),
        "missing_buffer": lambda: (
            (src / "a.gltf").write_text(
                '{"asset": {"version": "2.0"}, "buffers": [{"uri": "a.bin", "byteLength": 36}]}'
            )
            and src / "a.gltf"
        ),
        "ok": lambda: write_obj(src / "a.obj", TRIANGLE),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match=match):
        convert_file(
            inputs[case](),
            out_dir / "a.glb",
            **{"resolution": 64, "texture_size": 256, "faces": 1000, **kwargs},
        )
    assert list(out_dir.iterdir()) == []


def test_alpha_mode_needs_a_real_share_of_see_through_texels():
    from pixal3d.geometry.gltf import is_translucent

    alpha = np.full((64, 64), 220, dtype=np.uint8)  # a nearly opaque prediction: OPAQUE
    assert not is_translucent(alpha)
    alpha[:8] = 100  # 12.5 % clearly see-through: BLEND
    assert is_translucent(alpha)
    assert not is_translucent(np.full((64, 64), 255, dtype=np.uint8))


# ------------------------------------------------------------------------------------------------ issue 17
def glb_json(path: Path) -> dict:
    import json
    import struct

    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20 : 20 + length])


def edge_face_counts(mesh: trimesh.Trimesh) -> np.ndarray:
    """Faces per undirected edge, vertices welded by position (UV-seam copies are one vertex)."""
    welded = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    edges = np.sort(welded.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def test_open_surfaces_are_double_sided_closed_ones_are_not(tmp_path: Path) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    cap = sphere.triangles_center[:, 2] > 0.3
    open_sphere = trimesh.Trimesh(sphere.vertices, sphere.faces[~cap], process=False)  # a bowl: a 30-edge+ rim
    options = cleanup.CleanupOptions(max_hole_edges=3)  # keep the rim open
    for mesh, name, expected in ((sphere, "closed", False), (open_sphere, "open", True)):
        path = mesh_to_glb(mesh, constant_sampler, tmp_path / f"{name}.glb", faces=500, texture_size=256,
                           cleanup=options)
        assert glb_json(path)["materials"][0]["doubleSided"] is expected, name
    assert gltf.is_closed(sphere.vertices, sphere.faces) and not gltf.is_closed(open_sphere.vertices,
                                                                                 open_sphere.faces)
    for name in ("closed", "open"):
        assert_valid_glb(tmp_path / f"{name}.glb")  # skips (last) where the validator is not installed


def test_clean_up_drops_duplicate_triangles_and_over_shared_edges(tmp_path: Path) -> None:
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.5))
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    # Two fins on one box edge (4 faces on it), a duplicate triangle and a reversed duplicate.
    a, b = f[0][0], f[0][1]
    fins = [[a, b, len(v)], [b, a, len(v) + 1]]
    vertices = np.vstack([v, v[a] + (0, 0.3, 0.1), v[a] + (0.1, -0.3, 0)])
    faces = np.vstack([f, fins, f[3], f[5][::-1]])
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert edge_face_counts(mesh).max() > 2
    fixed = cleanup.make_edge_manifold(mesh)
    assert edge_face_counts(fixed).max() == 2
    assert len(np.unique(np.sort(fixed.faces, axis=1), axis=0)) == len(fixed.faces)
    assert len(fixed.faces) == len(f)  # the duplicates and the two smaller fins went, the box stayed
    path = mesh_to_glb(mesh, constant_sampler, tmp_path / "fins.glb", faces=500, texture_size=256,
                       cleanup=cleanup.CleanupOptions(drop_over_shared=True))
    (loaded,) = trimesh.load(path).geometry.values()
    assert edge_face_counts(loaded).max() <= 2
    # By default over-shared edges stay (dropping faces there opens holes in dual-grid meshes); duplicates go.
    kept = cleanup.make_edge_manifold(mesh, drop_over_shared=False)
    assert len(kept.faces) == len(f) + 2 and edge_face_counts(kept).max() == 4
    assert cleanup.make_edge_manifold(box).faces.tolist() == box.faces.tolist()  # nothing to do: a copy
