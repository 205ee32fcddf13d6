"""The export seam's writer registry: one writer per suffix; the OBJ + MTL + textures writer reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from pixal3d.errors import InputError
from pixal3d.geometry import writers
from pixal3d.geometry.bake import bake_textures
from pixal3d.geometry.export import ExportOptions, export_mesh


def colour_sampler(points: torch.Tensor) -> torch.Tensor:
    n = len(points)
    return torch.cat([(points + 0.5).clamp(0, 1), torch.full((n, 1), 0.25), torch.full((n, 1), 0.75),
                      torch.ones(n, 1)], 1)


@pytest.fixture(scope="module")
def baked():
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    return bake_textures(mesh, colour_sampler, 256)


def test_registry_is_keyed_by_suffix_and_names_the_choices(tmp_path: Path) -> None:
    from pixal3d.cli.assets import OUTPUT_SUFFIXES

    assert set(writers.WRITERS) == {".glb", ".obj"} == set(OUTPUT_SUFFIXES)
    assert writers.writer_for(tmp_path / "A.GLB") is writers.WRITERS[".glb"]
    with pytest.raises(InputError, match=r"\.glb.*\.obj"):
        writers.writer_for(tmp_path / "a.stl")
    with pytest.raises(InputError, match="does not exist"):
        writers.writer_for(tmp_path / "missing" / "a.obj")


def test_obj_writer_reads_back_with_uvs_normals_and_textures(tmp_path: Path, baked) -> None:
    path = writers.write_obj(tmp_path / "ball.obj", baked)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ball.mtl", "ball.obj", "ball_basecolor.png", "ball_metallic.png", "ball_normal.png",
                     "ball_roughness.png"]
    mtl = (tmp_path / "ball.mtl").read_text()
    assert "map_Kd ball_basecolor.png" in mtl and "norm ball_normal.png" in mtl and "map_Pr" in mtl
    loaded = trimesh.load(path, process=False, maintain_order=True)
    assert len(loaded.faces) == len(baked.faces)
    np.testing.assert_allclose(loaded.vertices, baked.vertices, atol=1e-6)
    np.testing.assert_array_equal(loaded.faces, baked.faces)
    # trimesh reads OBJ's vt (origin bottom-left) as is: v_obj = 1 - v_gltf
    np.testing.assert_allclose(loaded.visual.uv[:, 0], baked.uvs[:, 0], atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv[:, 1], 1 - baked.uvs[:, 1], atol=1e-6)
    texture = np.asarray(loaded.visual.material.image.convert("RGBA"))
    np.testing.assert_array_equal(texture, baked.base_color)
    roughness = np.asarray(Image.open(tmp_path / "ball_roughness.png"))
    np.testing.assert_array_equal(roughness, baked.metallic_roughness[..., 1])


def test_obj_writer_base_colour_only_and_placement(tmp_path: Path, baked) -> None:
    from pixal3d.geometry.gltf import Placement

    writers.write_obj(tmp_path / "a.obj", baked, include_pbr=False, placement=Placement(2.0, (1.0, 0.0, 0.0)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mtl", "a.obj", "a_basecolor.png"]
    loaded = trimesh.load(tmp_path / "a.obj", process=False, maintain_order=True)
    np.testing.assert_allclose(loaded.vertices, baked.vertices * 2.0 + [1.0, 0.0, 0.0], atol=1e-5)


def test_obj_writer_failure_leaves_nothing(tmp_path: Path, baked, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_text_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        writers.write_obj(tmp_path / "a.obj", baked)
    assert list(tmp_path.iterdir()) == []


def test_export_mesh_picks_the_writer_from_the_suffix(tmp_path: Path) -> None:
    mesh = trimesh.creation.box(extents=(0.5, 0.4, 0.3))
    options = ExportOptions(faces=100, texture_size=256)
    export_mesh(mesh, colour_sampler, tmp_path / "box.obj", options)
    export_mesh(mesh, colour_sampler, tmp_path / "box.glb", options)
    assert {"box.obj", "box.glb", "box.mtl"} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="face budget"):
        ExportOptions(faces=3)
    with pytest.raises(InputError, match="export device"):
        ExportOptions(device="tpu")
