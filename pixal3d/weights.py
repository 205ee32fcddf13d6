"""Pipeline weights on disk: resolve `"default"` | a local folder | a hub name, and read/write the folder strictly.

A saved pipeline is one folder:

```
pipeline.json                 {"format": "pixal3d-pipeline", "version": 1,
                               "components": {"encoder": "encoder", "structure_flow": "flow", ...},
                               "settings": {image size, default FoV, stage-1 limits, one sampler per stage}}
encoder/config.json           the component's config dataclass as JSON (strict: unknown keys raise)
encoder/model.safetensors     its weights; above 16 MiB they are sharded instead:
                              model-00000.safetensors, model-00001.safetensors, ... + model.safetensors.index.json
structure_vae/ ...            one folder per component
```

`pipeline.json` names each component's model kind, a key of `pixal3d.models.MODELS`. Sharding is
`pixal3d.tensor_files` (shared with training checkpoints), so a tensor bigger than a shard is split into pieces
and every file stays under 16 MiB. Loading is strict and never unpickles: a missing folder or file, a truncated file, a pickle
offered as weights, or a missing / unexpected / mis-shaped tensor each raise one `InputError` naming it.

`"default"` is the weights folder shipped inside the package (`pixal3d/weights/default/`); a hub name is fetched
only when the caller asks (`allow_download=True`, CLI `--allow-download`), through `huggingface_hub` if installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixal3d.atomic import atomic_folder, save_safetensors, write_json_atomic
from pixal3d.config import config_from_dict, config_to_dict, load_config, read_json
from pixal3d.errors import InputError
from pixal3d.models import model_classes
from pixal3d.sampling import SamplerConfig
from pixal3d.tensor_files import check_tensors, load_sharded, read_safetensors, save_sharded

logger = logging.getLogger(__name__)

FORMAT = "pixal3d-pipeline"
VERSION = 1
PIPELINE_FILE = "pipeline.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_SHARD_BYTES = 16 * 2**20
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "default"

COMPONENT_KINDS: dict[str, str] = {
    "encoder": "encoder",
    "fov_head": "fov_head",
    "depth_head": "depth_head",
    "structure_vae": "structure_vae",
    "structure_flow": "flow",
    "shape_vae": "shape_vae",
    "shape_flow": "flow",
    "texture_vae": "texture_vae",
    "texture_flow": "flow",
}
"""Component name -> the model kind (key of `MODELS`) it must be. Every component but the heads is required."""
OPTIONAL_COMPONENTS = ("fov_head", "depth_head")


@dataclass
class PipelineSettings:
    """The pipeline's own settings (everything in `pipeline.json` besides the component list)."""

    image_size: int = 256
    """Side S of the preprocessed input image, pixels (a multiple of 32)."""
    default_fov: float = math.radians(40.0)
    """Horizontal FoV in radians used when none is given and there is no FoV head."""
    structure_threshold: float = 0.0
    """Stage-1 occupancy logit above which a coarse voxel is active (0 = probability 0.5)."""
    min_structure_voxels: int = 0
    """If stage 1 finds fewer active voxels, keep the top-k logits instead (0: fewer than 1 raises an error)."""
    max_structure_voxels: int = 0
    """Keep at most this many active voxels, the highest logits (a token budget for stages 2-3); 0 = no cap."""
    structure_sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Stage-1 sampler defaults."""
    shape_sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Stage-2 sampler defaults."""
    texture_sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Stage-3 sampler defaults."""

    def __post_init__(self) -> None:
        if not (isinstance(self.image_size, int) and self.image_size >= 32 and self.image_size % 32 == 0):
            raise InputError(f"image_size must be a positive multiple of 32 pixels, got {self.image_size!r}")
        if not 0 < self.default_fov < math.pi:
            raise InputError(f"default_fov must be in (0, pi) radians, got {self.default_fov!r}")
        if self.min_structure_voxels < 0 or self.max_structure_voxels < 0:
            raise InputError("min_structure_voxels and max_structure_voxels must be >= 0")
        if self.max_structure_voxels and self.max_structure_voxels < self.min_structure_voxels:
            raise InputError(
                f"max_structure_voxels ({self.max_structure_voxels}) must be >= min_structure_voxels "
                f"({self.min_structure_voxels}) or 0"
            )


# ------------------------------------------------------------------------------------------------ resolving
def resolve_pretrained(name_or_path: str | os.PathLike, allow_download: bool = False) -> Path:
    """Turn `"default"`, a local folder or a hub name into a local pipeline folder.

    Args:
        name_or_path: `"default"` (the weights shipped in the package), a folder holding `pipeline.json`, or a
            hub repository name such as `"user/pixal3d-tiny"`.
        allow_download: fetch a hub name with `huggingface_hub` (never done unless asked).

    Raises:
        InputError: no weights ship yet, the folder does not exist or is not a pipeline, a hub name without
            `allow_download`, or `huggingface_hub` is missing.
    """
    text = os.fspath(name_or_path)
    if text == "default":
        if not (DEFAULT_WEIGHTS_DIR / PIPELINE_FILE).is_file():
            raise InputError(
                f"the default weights are missing from this install ({DEFAULT_WEIGHTS_DIR / PIPELINE_FILE}); "
                "reinstall pixal3d from a full checkout, or pass a pipeline folder written by save_pretrained or "
                "pixal3d assemble (CLI: --model FOLDER)"
            )
        return DEFAULT_WEIGHTS_DIR
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{path} is a file; pass the pipeline folder that holds {PIPELINE_FILE}")
        if not (path / PIPELINE_FILE).is_file():
            raise InputError(
                f"{path} is not a pixal3d pipeline folder (no {PIPELINE_FILE}); write one with "
                "Pixal3DPipeline.save_pretrained(folder)"
            )
        return path
    looks_like_hub = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub:
        raise InputError(f"pipeline folder {text!r} does not exist; check the path, or use 'default'")
    if not allow_download:
        raise InputError(
            f"{text!r} is not a local folder; to download it from the Hugging Face hub pass allow_download=True "
            "(CLI: --allow-download)"
        )
    return _download(text)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise InputError("downloading a hub name needs huggingface_hub: pip install huggingface_hub") from err
    logger.info("downloading %s from the Hugging Face hub", repo_id)
    folder = Path(snapshot_download(repo_id=repo_id, allow_patterns=["*.json", "*.safetensors"]))
    if not (folder / PIPELINE_FILE).is_file():
        raise InputError(f"hub repository {repo_id!r} holds no {PIPELINE_FILE}; it is not a pixal3d pipeline")
    return folder


# ------------------------------------------------------------------------------------------------ one component
def save_component(module: nn.Module, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                   max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Write `module.config` as `config.json` and its state dict as safetensors (sharded when large).

    Args:
        module: a model from `MODELS` (it has a dataclass `config`).
        folder: created if missing.
        dtype: cast floating-point tensors to this dtype on disk (e.g. torch.bfloat16); None keeps them.
        max_shard_bytes: above this total size the weights are split into shards each under it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / CONFIG_FILE, config_to_dict(module.config))
    tensors = {}
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous().clone()  # clone: safetensors refuses tensors that share storage
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    if total + 2**16 <= max_shard_bytes:
        save_safetensors(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
        return
    index = save_sharded(tensors, folder, "model", max_shard_bytes)
    write_json_atomic(folder / INDEX_FILE, {"format": FORMAT, "version": VERSION, "index": index})


def is_component_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is one component of a pipeline folder (`config.json` + weights), as `save_component` writes."""
    folder = Path(path)
    return (folder / CONFIG_FILE).is_file() and ((folder / WEIGHTS_FILE).is_file() or (folder / INDEX_FILE).is_file())


def read_component_tensors(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of one component folder (single file or shards), on the CPU."""
    folder = Path(folder)
    if (folder / WEIGHTS_FILE).is_file():
        return read_safetensors(folder / WEIGHTS_FILE)
    if not (folder / INDEX_FILE).is_file():
        raise InputError(f"{folder} holds no weights: expected {WEIGHTS_FILE} or {INDEX_FILE}")
    try:
        index = json.loads((folder / INDEX_FILE).read_text())["index"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{folder / INDEX_FILE} is truncated or not a pixal3d shard index ({err})") from err
    return load_sharded(folder, index)


def load_component(folder: str | os.PathLike, kind: str) -> nn.Module:
    """Build the model of `kind` from `folder/config.json` and load its weights strictly (CPU, float32, eval).

    The encoder's ImageNet initialisation is skipped (`pretrained=False`): its weights come from the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"component folder {folder} is missing; the pipeline folder is incomplete")
    config_cls, module_cls = model_classes(kind)
    config = load_config(config_cls, folder / CONFIG_FILE)
    if any(f.name == "pretrained" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, pretrained=False)
    module = module_cls(config)
    tensors = read_component_tensors(folder)
    check_tensors(module.state_dict(), tensors, f"weights in {folder}")
    module.load_state_dict(tensors, strict=True)
    return module.float().eval()


# ------------------------------------------------------------------------------------------------ whole pipeline
def read_pipeline(folder: str | os.PathLike) -> tuple[PipelineSettings, dict[str, nn.Module]]:
    """Read a pipeline folder: its settings and every component, loaded strictly."""
    folder = Path(folder)
    path = folder / PIPELINE_FILE
    data = read_json(path, missing=f"{folder} is not a pixal3d pipeline folder (no {PIPELINE_FILE})",
                     format=FORMAT, version=VERSION)
    unknown = sorted(set(data) - {"format", "version", "components", "settings"})
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; valid keys are components, format, settings, version")
    components = data.get("components")
    if not isinstance(components, dict):
        raise InputError(f"{path}: 'components' must map component names to model kinds")
    check_components(components, str(path))
    settings = config_from_dict(PipelineSettings, data.get("settings", {}), where=f"{path} settings")
    modules = {name: load_component(folder / name, kind) for name, kind in components.items()}
    return settings, modules


def check_components(components: dict[str, Any], source: str) -> None:
    """Raise `InputError` unless `components` maps the known names to their kinds, with every required one."""
    unknown = sorted(set(components) - set(COMPONENT_KINDS))
    missing = sorted(set(COMPONENT_KINDS) - set(components) - set(OPTIONAL_COMPONENTS))
    wrong = [f"{n} is {k!r}, must be {COMPONENT_KINDS[n]!r}" for n, k in components.items()
             if n in COMPONENT_KINDS and k != COMPONENT_KINDS[n]]
    if unknown or missing or wrong:
        raise InputError(
            f"{source}: bad component list (unknown {unknown}, missing {missing}, wrong kind {wrong}); "
            f"valid components are {COMPONENT_KINDS}"
        )


def write_pipeline(folder: str | os.PathLike, settings: PipelineSettings, modules: dict[str, nn.Module],
                   dtype: torch.dtype | None = None) -> Path:
    """Write a pipeline folder atomically: everything goes to a temporary sibling, which is renamed into place.

    An existing pipeline folder at `folder` is replaced; any other existing non-empty folder is refused.
    """
    folder = Path(folder)
    check_components({name: _kind_of(name) for name in modules}, "save_pretrained")
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / PIPELINE_FILE).exists())):
        raise InputError(f"{folder} exists and is not a pixal3d pipeline folder; pick a new or empty folder")
    with atomic_folder(folder) as tmp:
        for name, module in modules.items():
            save_component(module, tmp / name, dtype)
        record = {
            "format": FORMAT,
            "version": VERSION,
            "components": {name: _kind_of(name) for name in modules},
            "settings": config_to_dict(settings),
        }
        (tmp / PIPELINE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def _kind_of(name: str) -> str:
    if name not in COMPONENT_KINDS:
        raise InputError(f"unknown pipeline component {name!r}; valid components are {sorted(COMPONENT_KINDS)}")
    return COMPONENT_KINDS[name]
