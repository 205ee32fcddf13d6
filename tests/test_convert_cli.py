"""`pixal3d convert` end to end: a textured OBJ -> GLB (+ saved voxels -> WebP GLB), and bad input -> exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from gltf_validator import assert_valid_glb
from PIL import Image

from pixal3d.cli import main

SMALL = ["--resolution", "64", "--faces", "1500", "--texture-size", "256"]


def write_textured_obj(folder: Path) -> Path:
    """A cube whose texture is left half red, right half blue; written as OBJ + MTL + PNG."""
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :32] = (220, 30, 30)
    image[:, 32:] = (30, 30, 220)
    Image.fromarray(image).save(folder / "skin.png")
    cube = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    lines = ["mtllib cube.mtl", "usemtl skin"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in cube.vertices]
    # u from x: the -x half of the cube is red, the +x half blue.
    lines += [f"vt {(x + 0.5) * 0.98 + 0.01:.6f} 0.5" for x, _, _ in cube.vertices]
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in cube.faces]
    (folder / "cube.obj").write_text("\n".join(lines) + "\n")
    (folder / "cube.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd skin.png\n")
    return folder / "cube.obj"


def baked_colours(path: Path, count: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """`(points [M, 3], base colour [M, 3] in [0, 1])` sampled on a GLB written by pixal3d."""
    (mesh,) = trimesh.load(path).geometry.values()
    points, face_id = trimesh.sample.sample_surface(mesh, count, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face_id], points)
    uv = np.einsum("mc,mcd->md", bary, mesh.visual.uv[mesh.faces[face_id]])
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), dtype=np.float32) / 255
    h, w = image.shape[:2]
    cols = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    rows = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)  # trimesh flips glTF v on load
    return points, image[rows, cols]


def test_convert_obj_and_saved_voxels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_textured_obj(tmp_path)
    out, voxels = tmp_path / "cube.glb", tmp_path / "cube.safetensors"
    assert main(["convert", str(src), "-o", str(out), *SMALL, "--save-voxels", str(voxels)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert_valid_glb(out)
    points, colours = baked_colours(out)
    left, right = points[:, 0] < -0.05, points[:, 0] > 0.05  # the normalised cube spans x in [-0.48, 0.48]
    assert np.median(np.abs(colours[left] - [220 / 255, 30 / 255, 30 / 255]).max(axis=1)) <= 0.05
    assert np.median(np.abs(colours[right] - [30 / 255, 30 / 255, 220 / 255]).max(axis=1)) <= 0.05

    again = tmp_path / "again.glb"
    args = ["--faces", "1500", "--texture-size", "256", "--format", "webp"]
    assert main(["convert", str(voxels), "-o", str(again), *args]) == 0
    report = assert_valid_glb(again)
    assert "EXT_texture_webp" in report["info"]["extensionsRequired"]


@pytest.mark.parametrize(
    "args",
    [
        ["--resolution", "100"],
        ["--faces", "3"],
        ["--texture-size", "64"],
    ],
)
def test_convert_bad_options_exit_2_without_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    src = write_textured_obj(tmp_path)
    out = tmp_path / "out" / "cube.glb"
    out.parent.mkdir()
    assert main(["convert", str(src), "-o", str(out), *SMALL, *args]) == 2
    assert "error" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_convert_missing_texture_and_corrupt_voxels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_textured_obj(tmp_path)
    (tmp_path / "skin.png").unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["convert", str(src), "-o", str(out_dir / "a.glb"), *SMALL]) == 2
    assert "skin.png" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 32)
    assert main(["convert", str(bad), "-o", str(out_dir / "b.glb")]) == 2
    assert list(out_dir.iterdir()) == []


def test_failure_after_voxelising_removes_saved_voxels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixal3d.geometry.export as export

    def fail(*args: object, **kwargs: object) -> None:
        raise export.InputError("the voxels have no crossing edges")

    monkeypatch.setattr(export, "export_voxels", fail)
    src = write_textured_obj(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [
        "convert",
        str(src),
        "-o",
        str(out_dir / "a.glb"),
        *SMALL,
        "--save-voxels",
        str(out_dir / "a.safetensors"),
    ]
    assert main(args) == 2
    assert list(out_dir.iterdir()) == []


def test_binary_and_non_utf8_obj_are_clear_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    garbage = tmp_path / "garbage.obj"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    latin = tmp_path / "latin.obj"
    latin.write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\n# caf\xe9\nf 1 2 3\n")
    for src, words in ((garbage, "binary data"), (latin, "not UTF-8")):
        assert main(["convert", str(src), "-o", str(tmp_path / "out.glb"), *SMALL]) == 2
        err = capsys.readouterr().err
        assert words in err and "charset_normalizer" not in err
    assert not (tmp_path / "out.glb").exists()


def test_convert_keeps_the_source_size_and_place(tmp_path: Path) -> None:
    """A 4.87 m 'truck' away from the origin comes back at its size and position (within one voxel), by a node
    transform that is the exact inverse of the normalisation; --normalized keeps the unit cube."""
    import json
    import struct

    from pixal3d.geometry.dual_grid import normalize_to_unit_cube, unit_cube_transform
    from pixal3d.geometry.gltf import Placement

    truck = trimesh.creation.box(extents=(4.87, 1.8, 1.9))
    truck.apply_translation((10.0, 0.9, -3.0))
    src = tmp_path / "truck.obj"
    truck.export(src)
    out, cube = tmp_path / "truck.glb", tmp_path / "cube.glb"
    assert main(["convert", str(src), "-o", str(out), *SMALL]) == 0
    assert main(["convert", str(src), "-o", str(cube), "--normalized", *SMALL]) == 0

    voxel = 4.87 / (64 * (1 - 2 * 0.02))  # one voxel at R = 64, in the source's units
    assert np.abs(trimesh.load(out).bounds - truck.bounds).max() <= voxel
    assert np.abs(trimesh.load(cube).bounds - normalize_to_unit_cube(truck).bounds).max() <= 1 / 64
    data = out.read_bytes()
    node = json.loads(data[20 : 20 + struct.unpack("<I", data[12:16])[0]])["nodes"][0]
    scale, offset = unit_cube_transform(truck)
    forward = np.eye(4)
    forward[:3, :3] *= scale
    forward[:3, 3] = offset
    written = Placement(node["scale"][0], tuple(node["translation"]))
    assert node["scale"] == [node["scale"][0]] * 3 and "rotation" not in node and "matrix" not in node
    assert np.abs(written.matrix() @ forward - np.eye(4)).max() < 1e-6
    assert "scale" not in json.loads(cube.read_bytes()[20 : 20 + struct.unpack("<I", cube.read_bytes()[12:16])[0]]
                                     )["nodes"][0]
    assert_valid_glb(out)
