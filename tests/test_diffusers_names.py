"""The names diffusers users expect (issue 19, item 7): `pipe(image=..., guidance_scale=..., num_inference_steps=...)`,
`.meshes[0]`, `export(..., include_pbr=...)` and `compile_sparse_grid`, on the micro preset with random weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from gltf_validator import assert_valid_glb
from PIL import Image

from pixal3d import InputError, Pixal3DPipeline


def glb_document(path: Path) -> dict:
    """The JSON chunk of a GLB file."""
    data = path.read_bytes()
    length, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A
    return json.loads(data[20:20 + length])


@pytest.fixture(scope="module")
def pipe() -> Pixal3DPipeline:
    pipe = Pixal3DPipeline.from_config("micro")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[20:60, 25:55] = (200, 120, 40, 255)
    path = tmp_path_factory.mktemp("img") / "box.png"
    Image.fromarray(rgba).save(path)
    return path


def test_seed_style_call(pipe: Pixal3DPipeline, image: Path, tmp_path: Path) -> None:
    result = pipe(image=str(image), guidance_scale=4.5, num_inference_steps=2, compile_sparse_grid=True)
    glb = result.meshes[0].export(tmp_path / "x.glb", include_pbr=True, faces=2000, texture_size=256)
    material = glb_document(glb)["materials"][0]
    assert set(material["pbrMetallicRoughness"]) >= {"baseColorTexture", "metallicRoughnessTexture"}
    assert "normalTexture" in material
    ours = pipe(str(image), guidance=4.5, steps=2)  # the same call under our names
    assert torch.equal(ours.voxels.coords, result.voxels.coords)
    assert torch.equal(ours.voxels.attrs, result.voxels.attrs)
    assert_valid_glb(glb)


def test_include_pbr_false_writes_base_colour_only(pipe: Pixal3DPipeline, image: Path, tmp_path: Path) -> None:
    asset = pipe(image=str(image), num_inference_steps=1)
    glb = asset.meshes[0].export(tmp_path / "base.glb", include_pbr=False, faces=2000, texture_size=256)
    doc = glb_document(glb)
    material = doc["materials"][0]
    assert list(material["pbrMetallicRoughness"]) == ["baseColorTexture", "metallicFactor", "roughnessFactor"]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0 and "normalTexture" not in material
    assert len(doc["images"]) == len(doc["textures"]) == 1
    assert "TANGENT" not in doc["meshes"][0]["primitives"][0]["attributes"]
    assert_valid_glb(glb)


def test_alias_conflicts_and_switch(pipe: Pixal3DPipeline, image: Path) -> None:
    with pytest.raises(InputError, match="num_inference_steps=2 and steps=3"):
        pipe(image=str(image), num_inference_steps=2, steps=3)
    with pytest.raises(InputError, match="guidance_scale"):
        pipe(image=str(image), guidance_scale=4.5, guidance=2.0)
    with pytest.raises(InputError, match="background"):
        pipe(image=str(image), background="white")
    pipe.compile_sparse_grid = False
    assert pipe.cuda_graphs is False
    pipe.compile_sparse_grid = True
    assert pipe.cuda_graphs is True
