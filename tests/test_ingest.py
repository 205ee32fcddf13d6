"""Real-mesh ingestion (DESIGN section 7): a generated folder with one corrupt file reports exactly one skip.

Sizes: S = 32, R_hr = 64, coarse 16; the meshes are procedural GLBs and an OBJ written by the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from pixal3d.cli import main
from pixal3d.data.dataset import ShardDataset
from pixal3d.data.ingest import find_meshes, load_asset
from pixal3d.data.procedural import export_glb, generate
from pixal3d.data.shards import ingest_folder
from pixal3d.data.units import SampleOptions
from pixal3d.errors import InputError

OPTIONS = SampleOptions(image_size=32, resolution=64, coarse=16)


def _folder(tmp_path: Path) -> Path:
    meshes = tmp_path / "meshes"
    export_glb(generate(13), meshes / "house.glb")
    export_glb(generate(14), meshes / "nested" / "sign.glb")
    (meshes / "corrupt.glb").write_bytes(b"glTF\x02\x00\x00\x00 not really")
    return meshes


@pytest.mark.parametrize("batch", [1, 3])
def test_ingest_reports_exactly_one_skip(tmp_path: Path, batch: int) -> None:
    """With batch 3 the corrupt file shares a job (one voxelisation pass) with the two good ones."""
    meshes = _folder(tmp_path)
    summary = ingest_folder(meshes, tmp_path / "out", views=1, options=OPTIONS, batch=batch)
    assert [s["id"] for s in summary.skipped] == ["mesh-corrupt@0-1"]
    assert "corrupt.glb" in summary.skipped[0]["reason"]
    assert summary.units_written == 2 and summary.failed == []
    dataset = ShardDataset(tmp_path / "out")
    assert [dataset.sample_id(i) for i in range(len(dataset))] == ["mesh-house/0", "mesh-nested_sign/0"]
    again = ingest_folder(meshes, tmp_path / "out", views=1, options=OPTIONS)  # skips are remembered too
    assert again.units_already_done == 3 and again.units_written == 0


def test_load_asset_normalises_and_rejects_bad_meshes(tmp_path: Path) -> None:
    box = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    box.apply_translation((10.0, 0.0, 0.0))
    box.export(tmp_path / "box.obj")
    scene = load_asset(tmp_path / "box.obj")
    assert np.allclose(scene.bounds, [[-0.48, -0.24, -0.12], [0.48, 0.24, 0.12]], atol=1e-6)
    (tmp_path / "empty.obj").write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(InputError):
        load_asset(tmp_path / "empty.obj")
    (tmp_path / "textured.obj").write_text("mtllib textured.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "textured.mtl").write_text("newmtl m\nmap_Kd missing.png\n")
    with pytest.raises(InputError, match="missing.png"):
        load_asset(tmp_path / "textured.obj")
    assert [p.name for p in find_meshes(tmp_path)] == ["box.obj", "empty.obj", "textured.obj"]


def test_cli_ingest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meshes = tmp_path / "meshes"
    export_glb(generate(14), meshes / "sign.glb")
    (meshes / "broken.obj").write_text("mtllib nowhere.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    code = main(["data", "ingest", str(meshes), "-o", str(tmp_path / "out"), "--views", "1", "--size", "32",
                 "--resolution", "64", "--coarse", "16"])
    assert code == 0
    out = capsys.readouterr().out
    assert "skipped mesh-broken@0-1" in out and "nowhere.mtl" in out


def test_obj_texture_names_may_hold_spaces_and_options(tmp_path):
    from pixal3d.data.ingest import check_references

    obj = tmp_path / "thing.obj"
    obj.write_text("mtllib thing.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl m\nf 1/1 2/2 3/3\n")
    (tmp_path / "thing.mtl").write_text("newmtl m\nmap_Kd -s 1 1 1 my texture.png\nmap_Bump -bm 0.5 bump.png\n")
    (tmp_path / "bump.png").write_bytes(b"")
    with pytest.raises(InputError, match="my texture.png"):
        check_references(obj)
    (tmp_path / "my texture.png").write_bytes(b"")
    check_references(obj)  # both found: the options are skipped, the spaced name is kept whole
