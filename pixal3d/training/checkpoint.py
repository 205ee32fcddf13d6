"""Training checkpoints: sharded safetensors (weights, EMA, optimizer state) plus one small JSON, written atomically.

Layout of a run folder (`TrainConfig.out_dir`):

```
checkpoints/latest.json                 {"step": 1000, "path": "step_00001000"}   (written last, atomically)
checkpoints/step_00001000/checkpoint.json   step, train config, RNG states per rank, data position, tensor index
checkpoints/step_00001000/model-00000.safetensors, ema-00000.safetensors, optimizer-00000.safetensors, ...
```

Every file stays under `max_shard_bytes` (16 MiB by default, so checkpoints move easily): the shards are written and
read by `pixal3d.tensor_files`; `checkpoint.json` maps each tensor name to its pieces and shape. A checkpoint folder is written under a temporary name and renamed into place, then
`latest.json` is replaced, so a crash at any moment leaves the previous checkpoint intact.

Loading never unpickles: a `torch.save`/pickle file offered as weights, a truncated file, or tensors whose shapes
do not match the model each raise one `InputError` that names the file and the problem. A checkpoint's index may
only name plain file names inside its own folder (no paths), checked before anything is opened.

Crash leftovers (issue 17): a process killed while writing leaves a `.step_*` temporary folder or a
`.latest.json.*.tmp` file; `remove_stale_temps` deletes them when training starts. `resumable_checkpoint` is what
resume uses: the checkpoint `latest.json` names if it is intact, else (with a warning) the newest intact `step_*`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import torch
import torch.nn as nn

from pixal3d.atomic import atomic_folder, write_json_atomic
from pixal3d.config import read_json
from pixal3d.errors import InputError
from pixal3d.tensor_files import check_tensors, index_files, load_sharded, read_safetensors, save_sharded

logger = logging.getLogger(__name__)

FORMAT = "pixal3d-checkpoint"
VERSION = 1
GROUPS = ("model", "ema", "optimizer")


def load_weights(model: nn.Module, path: str | os.PathLike, group: str = "model") -> None:
    """Load weights into `model`, strictly: a `.safetensors` file, a checkpoint folder or a run's `checkpoints/`.

    Args:
        model: the module (its config decides the expected tensor shapes).
        path: a safetensors file; a `step_*` folder; or a `checkpoints` folder (its latest checkpoint).
        group: for checkpoint folders, `model` or `ema` weights.
    """
    path = Path(path)
    if path.is_dir():
        folder = latest_checkpoint(path) if (path / "latest.json").is_file() else path
        meta = _read_meta(folder)
        tensors = load_sharded(folder, meta["index"][group])
        source = f"checkpoint {folder} ({group})"
    else:
        tensors = read_safetensors(path)
        source = str(path)
    check_tensors(model.state_dict(), tensors, source)
    model.load_state_dict(tensors, strict=True)


# ------------------------------------------------------------------------------------------------ optimizer, RNG
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (`state.{param}.{name}`) and JSON (param groups, scalars)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars[f"state.{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of `optimizer_tensors`; shapes are checked against the optimizer's own state where it has one."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for pid, entry in state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entry and pid < len(params) and entry[key].shape != params[pid].shape:
                raise InputError(
                    f"optimizer state of parameter {pid} has shape {list(entry[key].shape)}, the model's is "
                    f"{list(params[pid].shape)}; the checkpoint was written for a different model config"
                )
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states as JSON-ready lists of ints: torch CPU/CUDA, the training generator, numpy, python."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state().tolist(),
        "torch_cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "generator": generator.get_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of `rng_state`."""
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if state["torch_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]])
    generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ------------------------------------------------------------------------------------------------ save / load
def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    meta: dict[str, Any],
    max_shard_bytes: int = 16 * 2**20,
    keep: int = 2,
) -> Path:
    """Atomically write `run_dir/checkpoints/step_{step:08d}` and point `latest.json` at it.

    Args:
        run_dir: the run folder.
        step: optimizer steps done.
        tensors: per group (`model`, `ema`, `optimizer`) a flat dict of tensors.
        meta: JSON-ready state (config, RNG, data position, optimizer param groups...).
        max_shard_bytes: largest file written.
        keep: checkpoints kept (older `step_*` folders are deleted).

    Returns:
        The checkpoint folder.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    with atomic_folder(root / name) as tmp:  # re-saving a step (a resumed run) replaces the old folder
        index = {group: save_sharded(t, tmp, group, max_shard_bytes) for group, t in tensors.items()}
        # Compact JSON: the RNG states are long int lists (one per line would be ~10x larger). The folder is
        # still temporary here, so a plain write is atomic from the reader's point of view.
        record = {"format": FORMAT, "version": VERSION, "step": step, **meta, "index": index}
        (tmp / "checkpoint.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    final = root / name
    write_json_atomic(root / "latest.json", {"step": step, "path": name})
    for old in sorted(root.glob("step_*"))[:-keep]:
        if old.name != name:
            shutil.rmtree(old)
    return final


def latest_checkpoint(run_dir_or_checkpoints: str | os.PathLike) -> Path | None:
    """The folder `latest.json` points to (a run folder or its `checkpoints/`), or None when there is none."""
    root = Path(run_dir_or_checkpoints)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["path"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{pointer} is damaged ({err!r}); delete it to fall back to no checkpoint") from err
    if not isinstance(name, str) or not re.fullmatch(r"step_\d{8}", name):
        raise InputError(f"{pointer} names {str(name)[:80]!r}, not a step_NNNNNNNN folder beside it")
    folder = root / name
    if not folder.is_dir():
        raise InputError(f"{pointer} points to {folder}, which does not exist")
    return folder


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete what a crashed checkpoint write leaves behind: `.step_*` folders, `.latest.json.*.tmp` files.

    Call it when training starts, before any checkpoint is written (one writer per run folder).

    Returns:
        The paths removed (each also logged).
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if (p.name.startswith(".step_") and p.is_dir())
             or (p.name.startswith(".latest.json.") and p.name.endswith(".tmp") and p.is_file())]
    for path in stale:
        logger.warning("removing %s, left by an interrupted checkpoint write", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def check_checkpoint(folder: str | os.PathLike) -> None:
    """Check a checkpoint folder is whole without loading it: its JSON, its index, every shard's header and length.

    Raises:
        InputError: what is wrong (missing or truncated JSON or shard, a foreign file name, a missing tensor piece).
    """
    folder = Path(folder)
    meta = _read_meta(folder)
    if not isinstance(meta.get("index"), dict):
        raise InputError(f"checkpoint {folder} has no tensor index")
    for group, index in meta["index"].items():
        keys: dict[str, set[str]] = {}
        for file in sorted(index_files(folder, index)):
            try:
                with safetensors.safe_open(str(folder / file), framework="pt") as f:  # reads the header only
                    keys[file] = set(f.keys())
            except (safetensors.SafetensorError, OSError) as err:
                raise InputError(f"checkpoint {folder}: {group} shard {file} is missing or truncated ({err})") \
                    from err
        missing = [key for entry in index.values() for file, key in entry["pieces"] if key not in keys[file]]
        if missing:
            raise InputError(f"checkpoint {folder}: {group} tensor pieces {missing[:3]} are missing")


def resumable_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a resumed run starts from: `latest.json`'s if intact, else the newest intact `step_*`.

    Each unusable checkpoint passed over is logged as a warning with its problem. Returns None when the run has
    no checkpoint at all (no `latest.json` and no `step_*` folder).

    Raises:
        InputError: checkpoints exist but none is intact.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    candidates: list[Path] = []
    try:
        latest = latest_checkpoint(root)
        if latest is not None:
            candidates.append(latest)
    except InputError as err:
        logger.warning("%s; looking for an earlier checkpoint", err)
    candidates += [p for p in sorted(root.glob("step_*"), reverse=True) if p.is_dir() and p not in candidates]
    problems = []
    for folder in candidates:
        try:
            check_checkpoint(folder)
        except InputError as err:
            logger.warning("checkpoint %s is unusable (%s); falling back to an earlier one", folder.name, err)
            problems.append(str(err))
            continue
        if problems:
            logger.warning("resuming from %s, not from the latest checkpoint", folder.name)
        return folder
    if problems:
        raise InputError(f"no intact checkpoint in {root}: " + " | ".join(problems[:3]))
    return None


def _read_meta(folder: Path) -> dict[str, Any]:
    return read_json(folder / "checkpoint.json", missing=f"{folder} is not a pixal3d checkpoint (no checkpoint.json)",
                     format=FORMAT, version=VERSION)


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint folder: per group the tensors (CPU), and the JSON meta (step, config, RNG, data...)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    return {group: load_sharded(folder, index) for group, index in meta["index"].items()}, meta
