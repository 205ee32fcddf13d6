"""Safetensors files, single and sharded: read strictly, write in shards under a size limit, compare to a model.

Used by pipeline folders (`pixal3d.weights`) and training checkpoints (`pixal3d.training.checkpoint`), which is
why it sits below both. Every file stays under `max_shard_bytes`: tensors are packed into shards greedily and a
tensor larger than a shard is split into flat pieces; the index `save_sharded` returns maps each tensor name to
its pieces and shape. Reading never unpickles: a `torch.save`/pickle file offered as weights, a truncated file,
or tensors whose shapes do not match the model each raise one `InputError` that names the file and the problem.
An index may only name plain file names inside its own folder (no paths), checked before anything is opened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load_file

from pixal3d.atomic import save_safetensors
from pixal3d.errors import InputError

_HEADER_RESERVE = 1024  # bytes kept free in each shard for the header's fixed part and alignment padding
_ENTRY_BYTES = 160  # upper bound of one tensor's header entry beyond its name (dtype, shape, offsets)
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2; torch.save's zip container


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load one safetensors file to CPU; a missing, pickled, truncated or corrupt file raises `InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its header length (u64, little-endian) and then '{'; a header of 128 + 256k
    # bytes starts with 0x80 too, so only a file without that '{' is taken for a pickle.
    if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
        raise InputError(
            f"{path} is a pickle / torch.save file, not safetensors; pixal3d never unpickles weights (that can run "
            "code). Convert it once in a trusted environment: "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')"
        )
    try:
        return load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError) as err:
        raise InputError(
            f"{path} is truncated or not a safetensors file ({err}); re-copy it or pick an earlier checkpoint"
        ) from err


def _pieces(name: str, tensor: torch.Tensor, limit: int) -> list[tuple[str, torch.Tensor]]:
    """Split `tensor` into flat pieces of at most `limit` bytes (one piece when it fits)."""
    t = tensor.detach().cpu().contiguous()
    if t.numel() * t.element_size() <= limit:
        return [(name, t)]
    per = max(limit // t.element_size(), 1)
    flat = t.reshape(-1)
    return [(f"{name}@{i}", flat[s : s + per].clone()) for i, s in enumerate(range(0, flat.numel(), per))]


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, prefix: str, max_shard_bytes: int) -> dict[str, Any]:
    """Write `tensors` as `folder/{prefix}-NNNNN.safetensors` files each under `max_shard_bytes`.

    Returns:
        The index `{name: {"shape": [...], "pieces": [[file, key], ...]}}` that `load_sharded` reads.
    """
    limit = max_shard_bytes - _HEADER_RESERVE
    if limit < 4096:
        raise InputError(f"max shard size must be at least {_HEADER_RESERVE + 4096} bytes, got {max_shard_bytes}")
    index: dict[str, Any] = {}
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, tensor in tensors.items():
        index[name] = {"shape": list(tensor.shape), "pieces": []}
        for key, piece in _pieces(name, tensor, limit - _ENTRY_BYTES - len(name) - 16):
            size = piece.numel() * piece.element_size() + _ENTRY_BYTES + len(key)
            if shards[-1] and used + size > limit:
                shards.append({})
                used = 0
            shards[-1][key] = piece
            used += size
            index[name]["pieces"].append([f"{prefix}-{len(shards) - 1:05d}.safetensors", key])
    for i, shard in enumerate(shards):
        save_safetensors(shard, folder / f"{prefix}-{i:05d}.safetensors")
    return index


SHARD_NAME = re.compile(r"[A-Za-z0-9_]+-\d{5}\.safetensors")
"""A shard's file name as `save_sharded` writes it: a plain name, never a path."""


def index_files(folder: Path, index: Any) -> set[str]:
    """The shard names an index refers to, each checked to be a plain `SHARD_NAME` inside `folder` (else InputError).

    Checked before any file is opened: a crafted `checkpoint.json` must not make us read `/etc/hostname`.
    """
    try:
        files = {file for entry in index.values() for file, _ in entry["pieces"]}
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"checkpoint {folder} has a malformed tensor index ({err!r})") from err
    bad = sorted(str(f) for f in files if not isinstance(f, str) or not SHARD_NAME.fullmatch(f))
    if bad:
        raise InputError(f"checkpoint {folder} names files outside its folder or of foreign names: {bad[:3]}; "
                         f"a checkpoint only refers to its own shards (like model-00000.safetensors)")
    return files


def load_sharded(folder: Path, index: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of `save_sharded`: read the files named in `index` and reassemble split tensors."""
    files = index_files(folder, index)
    loaded = {file: read_safetensors(folder / file) for file in sorted(files)}
    out = {}
    for name, entry in index.items():
        try:
            parts = [loaded[file][key] for file, key in entry["pieces"]]
        except KeyError as err:
            raise InputError(f"checkpoint {folder} is damaged: tensor piece {err} of '{name}' is missing") from err
        out[name] = parts[0] if len(parts) == 1 else torch.cat([p.reshape(-1) for p in parts]).reshape(entry["shape"])
    return out


def check_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise one `InputError` listing missing, unexpected and shape-mismatched tensors (`expected` = the model's)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{name}: checkpoint {list(found[name].shape)} vs model {list(expected[name].shape)}"
        for name in expected
        if name in found and found[name].shape != expected[name].shape
    ]
    if not (missing or unexpected or shapes):
        return
    problems = []
    for label, items in (("shape mismatch", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            shown = "; ".join(items[:8]) + (f"; ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    raise InputError(
        f"{source} does not match the model: " + " | ".join(problems)
        + ". It was written for a different model config; use the model_config it was trained with"
    )
