"""Pixal3DPipeline with micro random weights: image -> validated GLB, every stage's shapes, determinism, bad input."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gltf_validator import assert_valid_glb
from PIL import Image

from pixal3d import Asset, Camera, InputError, Pixal3DPipeline
from pixal3d.presets import PipelineConfig, check_compatible, micro_config
from pixal3d.sampling import SamplerConfig
from pixal3d.sparse import SparseTensor
from pixal3d.stages import (
    EmptyStructureError,
    decode,
    encode_images,
    make_condition,
    sample_shape,
    sample_structure,
    sample_texture,
    select_active,
)


def write_object_png(path: Path) -> Path:
    """An RGBA image of an orange box with a darker lid on a transparent background."""
    image = np.zeros((96, 96, 4), dtype=np.uint8)
    image[24:76, 28:68] = (210, 110, 40, 255)
    image[24:34, 28:68] = (120, 60, 20, 255)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_object_png(tmp_path_factory.mktemp("input") / "box.png")


@pytest.fixture(scope="module")
def pipe() -> Pixal3DPipeline:
    pipe = Pixal3DPipeline.from_config("micro")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def asset(pipe: Pixal3DPipeline, image_path: Path) -> Asset:
    return pipe(image_path, seed=0, faces=2000, texture_size=256)


def test_image_to_validated_glb(asset: Asset, tmp_path: Path) -> None:
    assert isinstance(asset, Asset) and asset.fov_source == "estimated" and asset.seed == 0
    assert list(asset.timings) == ["preprocess", "encode", "camera", "structure", "shape", "texture", "decode"]
    assert asset.image.size == (64, 64) and asset.camera.size == 64
    assert len(asset.mesh.faces) > 0 and asset.voxels.attrs is not None
    out = asset.export(tmp_path / "box.glb")
    assert out == tmp_path / "box.glb"
    assert_valid_glb(out)
    assert [p.name for p in tmp_path.iterdir()] == ["box.glb"]  # no temporary file left behind


def test_torch_export_path_and_obj_writer_from_an_asset(asset: Asset, tmp_path: Path) -> None:
    """The PyTorch export (image texels projected on its device) and the OBJ writer, from a pipeline's asset."""
    timings: dict[str, float] = {}
    from pixal3d.geometry.export import ExportOptions

    baked = asset.bake(ExportOptions(faces=2000, texture_size=256, device="torch-cpu"), timings)
    assert len(baked.faces) > 0 and ((baked.uvs >= 0) & (baked.uvs <= 1)).all()
    assert {"input view + sampler", "uv charts + packing", "texel values"} <= set(timings)
    report = assert_valid_glb(asset.export(tmp_path / "t.glb", device="torch-cpu"))
    assert report["issues"]["numWarnings"] == 0
    asset.export(tmp_path / "t.obj", device="torch-cpu")
    assert {"t.obj", "t.mtl", "t_basecolor.png", "t_normal.png"} <= {p.name for p in tmp_path.iterdir()}


@pytest.fixture(scope="module")
def plain_asset(pipe: Pixal3DPipeline, image_path: Path) -> Asset:
    """The cascade alone: silhouette rule and image texels off."""
    return pipe(image_path, seed=0, faces=2000, texture_size=256, silhouette=False, image_texels=False)


def test_stages_alone_reproduce_the_call(pipe: Pixal3DPipeline, image_path: Path, plain_asset: Asset) -> None:
    """Each stage run by hand: shapes and data flow, and the same seed gives the same asset as `__call__` with the
    silhouette rule and the image texels off (turning them off gives the cascade alone, the old path)."""
    asset = plain_asset
    crops, images = pipe.preprocess([image_path])
    assert images.shape == (1, 4, 64, 64) and images.dtype == torch.float32 and 0 <= images.min() <= images.max() <= 1
    (features,) = encode_images(pipe.encoder, images)
    assert [tuple(m.shape) for m in features.maps] == [(1, 4, 64, 64), (1, 16, 16, 16)]
    assert features.global_tokens.shape == (1, 2, 16)
    cams, source = pipe.make_cameras(features, None, None)
    assert source == "estimated" and 0 < cams[0].fov < math.pi
    cond = make_condition([features], cams)
    generator = torch.Generator().manual_seed(0)
    samplers = pipe.stage_samplers(None, None)
    s = pipe.settings

    coords = sample_structure(pipe.structure_flow, pipe.structure_vae, cond, generator, samplers["structure"],
                              s.structure_threshold, s.min_structure_voxels, s.max_structure_voxels, progress=False)
    assert coords.dtype == torch.int32 and coords.shape[1] == 4
    assert s.min_structure_voxels <= coords.shape[0] <= s.max_structure_voxels
    assert (coords[:, 0] == 0).all() and coords[:, 1:].min() >= 0 and coords[:, 1:].max() < 16

    shape = sample_shape(pipe.shape_flow, cond, coords, generator, samplers["shape"], progress=False)
    assert isinstance(shape, SparseTensor) and shape.feats.shape == (coords.shape[0], 8)
    assert torch.equal(shape.coords, coords) and shape.resolution == 16
    texture = sample_texture(pipe.texture_flow, cond, shape, generator, samplers["texture"], progress=False)
    assert texture.feats.shape == (coords.shape[0], 8) and torch.equal(texture.coords, coords)

    voxels = decode(pipe.shape_vae, pipe.texture_vae, shape, texture)
    assert voxels.resolution == 32 and voxels.coords.shape[1] == 3
    assert voxels.attrs.shape == (len(voxels), 6) and 0 <= voxels.attrs.min() <= voxels.attrs.max() <= 1
    parents = {tuple(c) for c in (voxels.coords // 2).tolist()}
    assert parents <= {tuple(c) for c in coords[:, 1:].tolist()}  # fine voxels subdivide the active ones

    assert torch.equal(voxels.coords, asset.voxels.coords)
    assert torch.equal(voxels.vertex, asset.voxels.vertex) and torch.equal(voxels.attrs, asset.voxels.attrs)


def test_multiview_identical_views_low_vram(pipe: Pixal3DPipeline, image_path: Path, asset: Asset) -> None:
    """Two identical views with the same camera lift exactly like one view: the same asset as the single view."""
    camera = Camera(fov=asset.camera.fov, size=512)  # any image side: the pipeline rescales cameras
    multi = pipe([image_path, image_path], cameras=[camera, camera], seed=0, low_vram=True)
    assert multi.fov_source == "cameras"
    assert torch.equal(multi.voxels.coords, asset.voxels.coords)
    assert torch.allclose(multi.voxels.attrs, asset.voxels.attrs, atol=1e-5)
    assert all(p.device.type == "cpu" for p in pipe.encoder.parameters())


def test_select_active_fallback_and_cap() -> None:
    logits = torch.full((1, 1, 4, 4, 4), -5.0)
    with pytest.raises(EmptyStructureError, match="no occupied voxels"):
        select_active(logits)
    logits[0, 0, 1, 2, 3] = -1.0
    logits[0, 0, 0, 0, 1] = -2.0
    top = select_active(logits, min_voxels=2)
    assert top.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]  # the two highest logits, key-sorted
    logits[0, 0, :2] = 1.0  # 32 voxels above the threshold
    assert select_active(logits, max_voxels=5).shape == (5, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fov": 45.0}, r"degrees\? use math.radians\(45.0\)"),
        ({"fov": -0.3}, "fov must be a number"),
        ({"seed": -1}, "seed must be an integer"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"guidance": "3"}, "guidance must be a number"),
        ({"resolution": 64}, "decodes at resolution 32 only"),
        ({"faces": 0}, "face"),
        ({"texture_size": 100}, "texture size"),
        ({"cameras": [Camera(fov=0.7)] * 2}, "one Camera per view"),
        ({"cameras": [Camera(fov=0.7)], "fov": 0.7}, "not both"),
    ],
)
def test_bad_arguments_raise_before_any_work(pipe: Pixal3DPipeline, image_path: Path, kwargs: dict,
                                              message: str) -> None:
    with pytest.raises(InputError, match=message):
        pipe(image_path, **kwargs)


def test_bad_images(pipe: Pixal3DPipeline, image_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such image file"):
        pipe(tmp_path / "missing.png")
    with pytest.raises(InputError, match="without cameras"):
        pipe([image_path, image_path])
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((32, 32, 4), dtype=np.uint8)).save(blank)
    with pytest.raises(InputError, match="fully transparent"):
        pipe(blank)


def test_export_error_leaves_no_file(asset: Asset, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="texture size"):
        asset.export(tmp_path / "x.glb", texture_size=64)
    with pytest.raises(InputError, match=r"\.glb"):
        asset.export(tmp_path / "x.stl")
    assert list(tmp_path.iterdir()) == []


def test_configs_and_presets() -> None:
    with pytest.raises(InputError, match="known presets"):
        Pixal3DPipeline.from_config("nano")
    config = micro_config()
    config.shape_vae.latent_channels = 4
    with pytest.raises(InputError, match="shape_flow.in_channels = 8 but shape_vae.latent_channels = 4"):
        Pixal3DPipeline.from_config(config)
    a, b = Pixal3DPipeline.from_config("micro", seed=3), Pixal3DPipeline.from_config("micro", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.shape_flow.state_dict().values(),
                                                  b.shape_flow.state_dict().values(), strict=True))
    assert isinstance(PipelineConfig().settings.structure_sampler, SamplerConfig)
    check_compatible(a.components)
    assert a.device == torch.device("cpu") and a.to("cpu", torch.float32) is a and a.dtype == torch.float32


def test_depth_lift_flows_read_the_depth_heads_map(image_path: Path, plain_asset: Asset) -> None:
    """Flows with `depth_lift` get the depth head's map in their condition (multi-view: one per view); without a
    depth head the pipeline refuses them. Widened flows (zero depth columns) give the plain pipeline's asset."""
    from pixal3d.training.conditioned import widen_lift_weights

    config = micro_config()
    for name in ("structure_flow", "shape_flow", "texture_flow"):
        setattr(config, name, dataclasses.replace(getattr(config, name), depth_lift=True))
    lifting = Pixal3DPipeline.from_config(config)
    plain = Pixal3DPipeline.from_config("micro")
    for name, module in lifting.components.items():  # the plain pipeline's weights, flows widened
        state = getattr(plain, name).state_dict()
        if name.endswith("_flow"):
            state = widen_lift_weights(state, getattr(plain, name).config, module.config)
        module.load_state_dict(state, strict=True)
    lifting.set_progress_bar_config(disable=True)
    asset = lifting(image_path, seed=0, faces=2000, texture_size=256, silhouette=False, image_texels=False)
    assert torch.equal(asset.voxels.coords, plain_asset.voxels.coords)
    assert torch.allclose(asset.voxels.attrs, plain_asset.voxels.attrs, atol=1e-4)
    camera = Camera(fov=asset.camera.fov, size=64)
    depths = lifting.lift_depths(*_two_views(lifting, image_path, camera), asset.depth)
    assert len(depths) == 2 and depths[1].shape == asset.depth.shape
    with pytest.raises(InputError, match="no depth_head"):
        config.depth_head = None
        Pixal3DPipeline.from_config(config)


def _two_views(pipe: Pixal3DPipeline, image_path: Path, camera: Camera) -> tuple[list, list[Camera]]:
    _, images = pipe.preprocess([image_path, image_path])
    return encode_images(pipe.encoder, images), [camera, camera]
