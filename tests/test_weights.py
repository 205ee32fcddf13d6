"""Pipeline folders: save_pretrained -> from_pretrained round trip, sharding, resolving names, strict loading errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import pixal3d.weights as weights_module
from pixal3d import InputError, Pixal3DPipeline
from pixal3d.models.fov_head import FovHead, FovHeadConfig
from pixal3d.weights import (
    DEFAULT_WEIGHTS_DIR,
    PIPELINE_FILE,
    load_component,
    resolve_pretrained,
    save_component,
    write_pipeline,
)


@pytest.fixture(scope="module")
def pipe() -> Pixal3DPipeline:
    pipe = Pixal3DPipeline.from_config("micro", seed=1)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def saved(pipe: Pixal3DPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipe.save_pretrained(tmp_path_factory.mktemp("saved") / "micro")


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved pipeline that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "pipe"))


def test_round_trip_gives_identical_outputs(pipe: Pixal3DPipeline, saved: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([PIPELINE_FILE, *pipe.components])
    assert all((saved / name / "model.safetensors").is_file() for name in pipe.components)
    loaded = Pixal3DPipeline.from_pretrained(saved)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.settings == pipe.settings
    for name, module in pipe.components.items():
        theirs = loaded.components[name].state_dict()
        assert all(torch.equal(t, theirs[k]) for k, t in module.state_dict().items()), name
    image = np.zeros((64, 64, 4), dtype=np.uint8)
    image[16:48, 20:44] = (40, 160, 90, 255)
    a = pipe(Image.fromarray(image), seed=5, steps=1)
    b = loaded(Image.fromarray(image), seed=5, steps=1)
    assert torch.equal(a.voxels.coords, b.voxels.coords) and torch.equal(a.voxels.attrs, b.voxels.attrs)
    assert np.array_equal(a.mesh.vertices, b.mesh.vertices) and np.array_equal(a.mesh.faces, b.mesh.faces)


def test_save_replaces_a_pipeline_but_not_other_folders(pipe: Pixal3DPipeline, copy: Path, tmp_path: Path) -> None:
    pipe.save_pretrained(copy)  # an existing pipeline folder is replaced atomically
    assert (copy / PIPELINE_FILE).is_file()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a pixal3d pipeline folder"):
        pipe.save_pretrained(other)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_sharded_component_round_trip(tmp_path: Path) -> None:
    head = FovHead(FovHeadConfig(feature_channels=64, tokens=5, hidden=128))  # ~41k floats = 164 KiB
    save_component(head, tmp_path / "fov_head", max_shard_bytes=64 * 1024)
    shards = sorted(p.name for p in (tmp_path / "fov_head").glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (tmp_path / "fov_head" / "model.safetensors").exists()
    assert all((tmp_path / "fov_head" / s).stat().st_size <= 64 * 1024 for s in shards)
    loaded = load_component(tmp_path / "fov_head", "fov_head")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in head.state_dict().items())
    save_component(head, tmp_path / "half", dtype=torch.bfloat16)
    assert load_file(str(tmp_path / "half" / "model.safetensors"))["mlp.0.weight"].dtype == torch.bfloat16
    assert load_component(tmp_path / "half", "fov_head").mlp[0].weight.dtype == torch.float32


def test_resolving_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS_DIR", tmp_path / "not-installed")
    with pytest.raises(InputError, match="default weights are missing from this install"):
        Pixal3DPipeline.from_pretrained()
    monkeypatch.undo()
    with pytest.raises(InputError, match="does not exist"):
        resolve_pretrained(tmp_path / "missing")
    with pytest.raises(InputError, match="not a pixal3d pipeline folder"):
        resolve_pretrained(tmp_path)
    with pytest.raises(InputError, match="allow_download=True"):
        resolve_pretrained("someone/pixal3d-tiny")


def _damage_missing_component(folder: Path) -> None:
    shutil.rmtree(folder / "shape_flow")


def _damage_shape(folder: Path) -> None:
    config = json.loads((folder / "shape_flow" / "config.json").read_text())
    config["mlp_ratio"] = 2.0
    (folder / "shape_flow" / "config.json").write_text(json.dumps(config))


def _damage_extra_tensor(folder: Path) -> None:
    path = folder / "fov_head" / "model.safetensors"
    tensors = load_file(str(path))
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path.with_suffix(".tmp")))  # not in place: load_file memory-maps the old file
    path.with_suffix(".tmp").replace(path)


def _damage_truncate(folder: Path) -> None:
    path = folder / "encoder" / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_pickle(folder: Path) -> None:
    path = folder / "structure_vae" / "model.safetensors"
    torch.save(load_file(str(path)), path.with_suffix(".pt"))
    path.with_suffix(".pt").replace(path)


def _damage_config_key(folder: Path) -> None:
    config = json.loads((folder / "texture_vae" / "config.json").read_text())
    config["colour_space"] = "srgb"
    (folder / "texture_vae" / "config.json").write_text(json.dumps(config))


def _damage_kind(folder: Path) -> None:
    meta = json.loads((folder / PIPELINE_FILE).read_text())
    meta["components"]["shape_flow"] = "shape_vae"
    (folder / PIPELINE_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_damage_missing_component, "component folder .*shape_flow is missing"),
        (_damage_shape, r"shape mismatch: blocks\.0\.mlp"),
        (_damage_extra_tensor, r"unexpected: extra\.weight"),
        (_damage_truncate, "truncated or not a safetensors file"),
        (_damage_pickle, "pickle / torch.save file"),
        (_damage_config_key, r"unknown key\(s\) \['colour_space'\]"),
        (_damage_kind, "shape_flow is 'shape_vae', must be 'flow'"),
    ],
)
def test_bad_weights_raise_one_clear_error(copy: Path, damage, message: str) -> None:  # noqa: ANN001
    damage(copy)
    with pytest.raises(InputError, match=message):
        Pixal3DPipeline.from_pretrained(copy)


def test_write_pipeline_rejects_unknown_components(pipe: Pixal3DPipeline, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown pipeline component 'upscaler'"):
        write_pipeline(tmp_path / "p", pipe.settings, {**pipe.components, "upscaler": pipe.fov_head})
    assert not (tmp_path / "p").exists()


def test_the_shipped_default_model_loads_within_budget() -> None:
    """DESIGN section 9: the default ships in the package, float16 safetensors, <= 40 MiB, and loads strictly."""
    files = [f for f in DEFAULT_WEIGHTS_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 40 * 2**20
    assert all(f.suffix in (".json", ".safetensors") for f in files)
    pipe = Pixal3DPipeline.from_pretrained()
    assert pipe.fov_head is not None and pipe.settings.image_size == 256
    assert pipe.components["shape_vae"].config.resolution == 128
