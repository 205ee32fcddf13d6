"""The samples format on disk: safetensors shards and their JSON index (what `pixal3d.data.shards` writes and
`pixal3d.data.dataset` reads).

Layout of a data folder `DIR`:
- `DIR/shards/<unit>.safetensors`: one shard per work unit (one asset, a range of views). Tensors are named
  `<view>.<field>` with fields `image [S, S, 4] uint8`, `coords [N, 3] int32`, `vertex [N, 3] float32`,
  `edges [N, 3] int8`, `attrs [N, 6] float32`, `coarse [M, 3] int32`, `to_volume [4, 4] float64`; the
  safetensors metadata holds `format = "pixal3d.samples"`, `version = "1"` and `samples`, a JSON list of each
  view's scalars (asset_id, view, fov (radians), distance, scale, resolution, coarse_resolution, redraws,
  center_offset).
- `DIR/index.json` (or `DIR/index.rank<r>.json` for rank `r` of several): the JSON index. `options` (image size,
  resolutions, seed) and `units`: unit id -> `{"shard": relative path, "samples": [scalars...]}` for written
  units, or `{"skipped": reason}` for bad inputs (so a resumed run does not retry them).
- `DIR/summary.json` (`summary.rank<r>.json`): the last run's counts and reasons.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from pixal3d.atomic import atomic_path
from pixal3d.data.samples import Sample
from pixal3d.errors import InputError
from pixal3d.geometry.voxels import SparseVoxels

SHARD_FORMAT = "pixal3d.samples"
INDEX_FORMAT = "pixal3d.samples.index"
FORMAT_VERSION = "1"
FIELDS = ("image", "coords", "vertex", "edges", "attrs", "coarse", "to_volume")


def sample_scalars(sample: Sample) -> dict[str, object]:
    """The JSON-able scalars of a sample (index entries and shard metadata)."""
    return {
        "asset_id": sample.asset_id,
        "view": sample.view,
        "fov": sample.fov,
        "distance": sample.distance,
        "scale": sample.scale,
        "resolution": sample.voxels.resolution,
        "coarse_resolution": sample.coarse_resolution,
        "redraws": sample.redraws,
        "center_offset": list(sample.center_offset),
        "voxels": len(sample.voxels),
    }


def sample_tensors(sample: Sample, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a sample, named `<key>.<field>` (module docstring)."""
    v = sample.voxels
    attrs = v.attrs if v.attrs is not None else torch.zeros(len(v), 6)
    tensors = {
        "image": sample.image.to(torch.uint8),
        "coords": v.coords.to(torch.int32),
        "vertex": v.vertex.to(torch.float32),
        "edges": v.edges.to(torch.int8),
        "attrs": attrs.to(torch.float32),
        "coarse": sample.coarse.to(torch.int32),
        "to_volume": sample.to_volume.to(torch.float64),
    }
    return {f"{key}.{name}": t.contiguous().cpu() for name, t in tensors.items()}


def sample_from_tensors(tensors: dict[str, torch.Tensor], scalars: dict[str, object], key: str) -> Sample:
    """Inverse of `sample_tensors` + `sample_scalars`; raises `ValueError` naming what is wrong."""
    missing = [f for f in FIELDS if f"{key}.{f}" not in tensors]
    if missing:
        raise ValueError(f"missing tensors {missing}")
    t = {f: tensors[f"{key}.{f}"] for f in FIELDS}
    n = t["coords"].shape[0]
    expected = {
        "image": (torch.uint8, None), "coords": (torch.int32, (n, 3)), "vertex": (torch.float32, (n, 3)),
        "edges": (torch.int8, (n, 3)), "attrs": (torch.float32, (n, 6)), "coarse": (torch.int32, None),
        "to_volume": (torch.float64, (4, 4)),
    }
    for name, (dtype, shape) in expected.items():
        if t[name].dtype != dtype or (shape is not None and tuple(t[name].shape) != shape):
            raise ValueError(f"{name} is {t[name].dtype} {list(t[name].shape)}, expected {dtype} {shape}")
    image = t["image"]
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 4:
        raise ValueError(f"image must be [S, S, 4], got {list(image.shape)}")
    if t["coarse"].ndim != 2 or t["coarse"].shape[1] != 3:
        raise ValueError(f"coarse must be [M, 3], got {list(t['coarse'].shape)}")
    fov = float(scalars["fov"])
    if not (0.0 < fov < math.pi):
        raise ValueError(f"fov {fov} is not in (0, pi) radians")
    voxels = SparseVoxels(t["coords"], t["vertex"], t["edges"], t["attrs"], int(scalars["resolution"]))
    return Sample(
        image=image, fov=fov, distance=float(scalars["distance"]), scale=float(scalars["scale"]),
        voxels=voxels, coarse=t["coarse"], coarse_resolution=int(scalars["coarse_resolution"]),
        to_volume=t["to_volume"], asset_id=str(scalars["asset_id"]), view=int(scalars["view"]),
        redraws=int(scalars["redraws"]), center_offset=tuple(scalars["center_offset"]),
    )


# ------------------------------------------------------------------------------------------- shards
def shard_name(unit_id: str) -> str:
    """The shard file name of a work unit (characters other than `[A-Za-z0-9_.@-]` become `_`)."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", unit_id) + ".safetensors"


def write_shard(path: Path, samples: list[Sample]) -> list[dict[str, object]]:
    """Write samples to one safetensors shard atomically; returns their index entries (scalars + key)."""
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for sample in samples:
        key = str(sample.view)
        tensors.update(sample_tensors(sample, key))
        entries.append({"key": key, **sample_scalars(sample)})
    metadata = {"format": SHARD_FORMAT, "version": FORMAT_VERSION, "samples": json.dumps(entries)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return entries


# ------------------------------------------------------------------------------------------- index
def index_path(out_dir: Path, rank: int, world_size: int) -> Path:
    """The index file of `rank` among `world_size` ranks."""
    return out_dir / ("index.json" if world_size == 1 else f"index.rank{rank:03d}.json")


def read_indexes(out_dir: Path) -> list[tuple[Path, dict]]:
    """Every index file of a data folder, parsed (sorted by name)."""
    found = []
    for path in sorted(Path(out_dir).glob("index*.json")):
        try:
            index = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: unreadable index ({err}); restore it or delete the folder") from err
        if index.get("format") != INDEX_FORMAT:
            raise InputError(f"{path}: not a pixal3d samples index (format={index.get('format')!r})")
        found.append((path, index))
    return found
