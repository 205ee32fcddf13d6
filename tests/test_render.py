"""Renderer (DESIGN section 7): geometry agrees with `Camera.project`, shading behaves, views are aimed and centred."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial import ConvexHull

from pixal3d.camera import Camera, look_at
from pixal3d.errors import InputError
from pixal3d.render import (
    Lighting,
    Material,
    RenderMesh,
    mesh_from_trimesh,
    random_lighting,
    render_mesh,
    render_meshes,
    sample_view,
)


def _box_mesh(extents: tuple[float, float, float], transform: np.ndarray | None = None) -> RenderMesh:
    box = trimesh.creation.box(extents=extents)
    if transform is not None:
        box.apply_transform(transform)
    return mesh_from_trimesh(box)


def _tilted_cube() -> RenderMesh:
    rot = trimesh.transformations.euler_matrix(0.5, 0.7, 0.2)
    return _box_mesh((0.5, 0.5, 0.5), rot)


def _reference_coverage(points_uv: np.ndarray, size: int, sub: int = 6) -> np.ndarray:
    """Fraction of each pixel inside the convex hull of `points_uv`, from `sub x sub` samples per pixel."""
    hull = ConvexHull(points_uv)
    s = (np.arange(size * sub) + 0.5) / sub
    uu, vv = np.meshgrid(s, s)
    pts = np.stack([uu.ravel(), vv.ravel()], axis=1)
    inside = (pts @ hull.equations[:, :2].T + hull.equations[:, 2] <= 0).all(axis=1)
    return inside.reshape(size, sub, size, sub).mean(axis=(1, 3))


def test_cube_silhouette_matches_projected_hull() -> None:
    mesh = _tilted_cube()
    cam = Camera.from_degrees(40.0, size=128)
    out = render_mesh(mesh, cam)
    uv, _ = cam.project(mesh.vertices.double())
    ref = _reference_coverage(uv.numpy(), 128)
    alpha = out.alpha.double().numpy()
    soft_iou = np.minimum(alpha, ref).sum() / np.maximum(alpha, ref).sum()
    hard_iou = ((alpha > 0.5) & (ref > 0.5)).sum() / ((alpha > 0.5) | (ref > 0.5)).sum()
    assert soft_iou > 0.98 and hard_iou > 0.98, (soft_iou, hard_iou)
    assert np.abs(alpha - ref).max() < 0.5  # every pixel within half a pixel's coverage
    # No cracks: the interior of a closed mesh is fully covered.
    assert (alpha[ref == 1.0] == 1.0).all()


def test_plane_depth_is_analytic() -> None:
    normal = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    normal = normal / normal.norm()
    # A square in the plane n.p = 0.05, tessellated so shared edges are exercised.
    grid = trimesh.creation.box(extents=(0.8, 0.8, 1e-9))
    plane = trimesh.Trimesh(*trimesh.remesh.subdivide(grid.vertices, grid.faces))
    rot = look_at(torch.zeros(3, dtype=torch.float64), -normal)[:3, :3].numpy()
    vertices = plane.vertices @ rot.T + normal.numpy() * 0.05
    mesh = RenderMesh(torch.tensor(vertices, dtype=torch.float32), torch.tensor(plane.faces))
    cam = Camera.from_degrees(50.0, size=64)
    out = render_mesh(mesh, cam, supersample=1)
    covered = out.face_id >= 0
    assert covered.float().mean() > 0.2
    origins, directions = cam.rays()
    eye = origins[0, 0].double()
    # depth along the axis = t * (d . forward) where p = eye + t d hits the plane
    d = directions.double()
    t = (0.05 - eye @ normal) / (d @ normal)
    expected = t * (-d[..., 2])
    err = (out.depth.double() - expected).abs()[covered] / expected[covered]
    assert err.max() < 1e-4
    assert (out.depth[~covered] == 0).all()


def test_sphere_normals_are_analytic() -> None:
    radius = 0.4
    mesh = mesh_from_trimesh(trimesh.creation.icosphere(subdivisions=4, radius=radius))
    cam = Camera.from_degrees(40.0, size=64)
    out = render_mesh(mesh, cam)
    origins, d = cam.rays()
    o = origins.double()
    d = d.double()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius**2)
    hit = disc > 0
    t = -b - disc.clamp(min=0).sqrt()
    analytic = torch.nn.functional.normalize(o + t[..., None] * d, dim=-1)
    facing = (analytic * -d).sum(-1)
    region = hit & (facing > 0.3) & (out.alpha == 1.0)
    assert region.sum() > 500
    cos = (out.normals.double() * analytic).sum(-1)[region]
    angle = torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))
    assert angle.mean() < 0.5 and angle.max() < 2.0, (angle.mean(), angle.max())
    assert torch.allclose(out.normals.norm(dim=-1)[out.alpha > 0], torch.ones(1), atol=1e-5)


def _quadrant_texture() -> np.ndarray:
    """`[8, 8, 4] uint8`: image top-left red, top-right green, bottom-left blue, bottom-right white."""
    tex = np.zeros((8, 8, 4), dtype=np.uint8)
    tex[..., 3] = 255
    tex[:4, :4, 0] = 255
    tex[:4, 4:, 1] = 255
    tex[4:, :4, 2] = 255
    tex[4:, 4:, :3] = 255
    return tex


def _textured_quad() -> trimesh.Trimesh:
    """A quad facing +z; UV (0, 0) at its bottom-left corner (OpenGL / trimesh convention)."""
    vertices = np.array([[-0.4, -0.4, 0], [0.4, -0.4, 0], [0.4, 0.4, 0], [-0.4, 0.4, 0]], dtype=np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(_quadrant_texture()), metallicFactor=0.0, roughnessFactor=1.0
    )
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


def _assert_quadrants(out_base: torch.Tensor) -> None:
    s = out_base.shape[0]
    lo, hi = s // 2 - 8, s // 2 + 8
    expected = {
        (lo, lo): (1, 0, 0),  # image top-left of the render = texture top-left
        (lo, hi): (0, 1, 0),
        (hi, lo): (0, 0, 1),
        (hi, hi): (1, 1, 1),
    }
    for (row, col), colour in expected.items():
        assert torch.allclose(out_base[row, col], torch.tensor(colour, dtype=torch.float32), atol=0.02), (
            row,
            col,
        )


def _glb_texcoords(data: bytes) -> np.ndarray:
    """TEXCOORD_0 of the first primitive, read straight from GLB bytes (glTF convention, v down)."""
    json_len = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20 : 20 + json_len])
    binary = data[20 + json_len + 8 :]
    accessor = gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"]]
    view = gltf["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(binary, dtype=np.float32, count=2 * accessor["count"], offset=start).reshape(-1, 2)


def test_texture_orientation_and_glb_round_trip() -> None:
    cam = Camera.from_degrees(40.0, size=64)
    quad = _textured_quad()
    _assert_quadrants(render_mesh(mesh_from_trimesh(quad), cam).base_color)
    data = trimesh.exchange.gltf.export_glb(trimesh.Scene(quad))
    # glTF's own convention: the quad's bottom-left vertex samples the image's bottom-left, i.e. glTF v = 1.
    assert np.allclose(_glb_texcoords(data)[0], [0.0, 1.0])
    loaded = trimesh.load(io.BytesIO(data), file_type="glb")
    _assert_quadrants(render_mesh(mesh_from_trimesh(loaded), cam).base_color)


def _red_sphere(metallic: float) -> RenderMesh:
    mesh = mesh_from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.4))
    mesh.materials = [
        Material(
            base_color_factor=torch.tensor([0.8, 0.03, 0.03, 1.0]),
            metallic_factor=metallic,
            roughness_factor=0.25,
        )
    ]
    return mesh


def _white_light_from_camera() -> Lighting:
    return Lighting(
        sky=torch.full((3,), 0.02),
        ground=torch.full((3,), 0.02),
        up=torch.tensor([0.0, 1.0, 0.0]),
        light_directions=torch.tensor([[0.0, 0.0, 1.0]]),
        light_distances=torch.tensor([4.0]),
        light_colors=torch.full((1, 3), 3.0),
    )


def test_metallic_highlight_is_tinted_dielectric_is_white() -> None:
    cam = Camera.from_degrees(40.0, size=64)
    highlights = {}
    for metallic in (0.0, 1.0):
        rgb = render_mesh(_red_sphere(metallic), cam, _white_light_from_camera()).rgba[..., :3]
        brightest = rgb.sum(-1).flatten().argmax()
        highlights[metallic] = rgb.reshape(-1, 3)[brightest]
    r, g, b = highlights[1.0].tolist()
    assert r > 0.5 and g < 0.5 * r and b < 0.5 * r, highlights[1.0]
    r, g, b = highlights[0.0].tolist()
    assert g > 0.7 * r and b > 0.7 * r, highlights[0.0]


def test_same_generator_same_render() -> None:
    mesh = _tilted_cube()

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        view = sample_view(generator, mesh, size=48)
        return render_mesh(mesh, view.camera, random_lighting(generator)).rgba

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def _asymmetric_object() -> RenderMesh:
    """A long box with a cone stuck off-centre: nothing symmetric to hide an aiming error."""
    box = trimesh.creation.box(extents=(0.7, 0.25, 0.3))
    cone = trimesh.creation.cone(radius=0.15, height=0.5)
    cone.apply_translation((0.3, 0.1, 0.1))
    return mesh_from_trimesh(trimesh.util.concatenate([box, cone]))


@pytest.mark.parametrize("seed", range(6))
def test_sampled_views_are_centred_with_a_margin(seed: int) -> None:
    mesh = _asymmetric_object()
    size = 96
    generator = torch.Generator().manual_seed(seed)
    view = sample_view(generator, mesh, size=size)
    assert math.radians(10) <= view.camera.fov <= math.radians(70)
    uv, depth = view.camera.project(mesh.vertices.double())
    lo, hi = uv.amin(dim=0), uv.amax(dim=0)
    assert torch.allclose((lo + hi) / 2, torch.full((2,), size / 2, dtype=torch.float64), atol=0.02)
    assert abs(float((hi - lo).max()) / size - view.fill) < 1e-3
    assert abs(view.aim_depth - float(depth.mean())) < 0.5 * float(depth.max() - depth.min()) + 1e-6
    alpha = render_mesh(mesh, view.camera).alpha
    border = torch.cat([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    assert (border == 0).all()
    rows, cols = torch.nonzero(alpha > 0, as_tuple=True)
    centre = torch.tensor([(cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2])
    assert (centre - size / 2).abs().max() <= 1.0


def test_scene_with_two_materials_and_node_transforms() -> None:
    red = trimesh.visual.material.PBRMaterial(
        baseColorFactor=[255, 0, 0, 255], metallicFactor=0.0, roughnessFactor=0.8
    )
    mr = np.zeros((4, 4, 3), dtype=np.uint8)
    mr[..., 1], mr[..., 2] = 128, 255  # G = roughness 0.5, B = metallic 1
    blue = trimesh.visual.material.PBRMaterial(
        baseColorFactor=[0, 0, 255, 255],
        metallicFactor=1.0,
        roughnessFactor=1.0,
        metallicRoughnessTexture=Image.fromarray(mr),
    )
    scene = trimesh.Scene()
    for material, x in ((red, -0.25), (blue, 0.25)):
        box = trimesh.creation.box(extents=(0.3, 0.3, 0.3))
        box.visual = trimesh.visual.TextureVisuals(uv=np.zeros((len(box.vertices), 2)), material=material)
        scene.add_geometry(box, transform=trimesh.transformations.translation_matrix((x, 0, 0)))
    mesh = mesh_from_trimesh(scene)
    assert len(mesh.materials) == 2 and mesh.faces.shape[0] == 24
    assert torch.allclose(mesh.bounds()[:, 0], torch.tensor([-0.4, 0.4]), atol=1e-6)
    out = render_mesh(mesh, Camera.from_degrees(40.0, size=64))
    row = 32
    left, right = 32 - 12, 32 + 12
    assert torch.allclose(out.base_color[row, left], torch.tensor([1.0, 0, 0]), atol=1e-3)
    assert torch.allclose(out.base_color[row, right], torch.tensor([0, 0, 1.0]), atol=1e-3)
    assert out.metallic[row, left] == 0 and out.roughness[row, left] == pytest.approx(0.8)
    assert out.metallic[row, right] == pytest.approx(1.0) and out.roughness[row, right] == pytest.approx(
        128 / 255
    )
    assert int(mesh.face_materials[out.face_id[row, right]]) == 1
    assert (out.face_id[out.alpha == 0] == -1).all()


def test_bad_inputs_raise() -> None:
    with pytest.raises(InputError):
        RenderMesh(torch.zeros(3, 3), torch.tensor([[0, 1, 5]]))
    with pytest.raises(InputError):
        render_mesh(_tilted_cube(), Camera.from_degrees(40.0, size=16), supersample=0)
    with pytest.raises(InputError):
        mesh_from_trimesh(trimesh.Scene())


def test_vertex_face_colours_and_simple_material() -> None:
    cam = Camera.from_degrees(40.0, size=32)
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    box.visual.vertex_colors = np.tile([0, 255, 0, 255], (len(box.vertices), 1)).astype(np.uint8)
    assert torch.allclose(
        render_mesh(mesh_from_trimesh(box), cam).base_color[16, 16], torch.tensor([0.0, 1, 0])
    )
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    box.visual.face_colors = np.tile([255, 0, 255, 255], (len(box.faces), 1)).astype(np.uint8)
    assert torch.allclose(
        render_mesh(mesh_from_trimesh(box), cam).base_color[16, 16], torch.tensor([1.0, 0, 1])
    )
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    simple = trimesh.visual.material.SimpleMaterial(diffuse=[0, 0, 255, 255])
    box.visual = trimesh.visual.TextureVisuals(uv=np.zeros((len(box.vertices), 2)), material=simple)
    out = render_mesh(mesh_from_trimesh(box), cam)
    assert torch.allclose(out.base_color[16, 16], torch.tensor([0.0, 0, 1]), atol=1e-3)


def _batch_items(device: str) -> list:
    """Four renders of one size: textured procedural objects with 1-3 lights, plus a bare mesh with vertex
    colours (no UVs, no normals, default lighting)."""
    from pixal3d.data.procedural import generate

    items = []
    for seed in (0, 1, 2):
        mesh = mesh_from_trimesh(generate(seed).scene, device=device)
        generator = torch.Generator().manual_seed(seed)
        items.append((mesh, sample_view(generator, mesh, size=40).camera, random_lighting(generator)))
    first = items[0][0]
    colours = torch.rand(first.vertices.shape[0], 4, generator=torch.Generator().manual_seed(9)).to(device)
    items.append((RenderMesh(vertices=first.vertices, faces=first.faces, colors=colours), items[1][1], None))
    return items


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_render_meshes_equals_one_render_per_item(device: str) -> None:
    items = _batch_items(device)
    lights = {len(lighting.light_distances) for _, _, lighting in items[:3]}
    assert len(lights) > 1  # items with different light counts share the pass
    together = render_meshes(items)
    for (mesh, camera, lighting), batched in zip(items, together, strict=True):
        alone = render_mesh(mesh, camera, lighting)
        assert alone.alpha.sum() > 50
        for name in ("depth", "normals", "metallic", "roughness", "face_id"):
            assert torch.equal(getattr(alone, name), getattr(batched, name)), name
        for name in ("rgba", "base_color"):  # the CPU's vectorised pow rounds a call's tail differently
            a, b = getattr(alone, name), getattr(batched, name)
            assert torch.equal(a, b) if device == "cuda" else torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_rgba_only_render_matches_the_full_render() -> None:
    items = _batch_items("cpu")[:2]
    full = render_meshes(items)
    light = render_meshes(items, gbuffers=False)
    for a, b in zip(full, light, strict=True):
        assert torch.equal(a.rgba, b.rgba)
        assert b.depth is None and b.normals is None and b.face_id is None


def test_render_meshes_refuses_mixed_sizes() -> None:
    mesh = _tilted_cube()
    with pytest.raises(InputError, match="one image size"):
        render_meshes([(mesh, Camera(fov=0.8, size=32), None), (mesh, Camera(fov=0.8, size=48), None)])
    assert render_meshes([]) == []


def test_transfer_round_trip_keeps_values_and_gives_own_storage() -> None:
    from pixal3d.transfer import to_device, to_host

    moved = to_device(np.arange(6, dtype=np.float32).reshape(3, 2), "cpu")
    assert moved.dtype == torch.float32 and moved.shape == (3, 2)
    assert to_device([[1, 2]], "cpu", torch.int64).dtype == torch.int64
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        parts = [to_device(torch.arange(n * 3, dtype=torch.float32).view(n, 3), device) for n in (2, 5)]
        (back,) = to_host([parts])
        assert [tuple(t.shape) for t in back] == [(2, 3), (5, 3)]
        assert all(torch.equal(b, p.cpu()) and b.device.type == "cpu" for b, p in zip(back, parts, strict=True))
        if device == "cuda":  # split copies with their own memory (shards refuse shared storage)
            assert back[0].untyped_storage().data_ptr() != back[1].untyped_storage().data_ptr()
