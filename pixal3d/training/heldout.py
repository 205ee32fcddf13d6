"""The fixed held-out set and its metrics, logged during training next to the loss (nanoGPT's `estimate_loss`).

The set is `eval_batches` batches drawn once, at the start of a run, from objects the training stream never
visits (`heldout_data_config`), and kept for the whole run: every evaluation sees the same samples with the same
noise (a generator re-seeded per evaluation), so the curve moves only when the weights do. An evaluation runs
the EMA weights (the weights a run ships) in eval mode under `no_grad`, and returns the rank-averaged means of:
- `heldout_loss` and `heldout_<metric>` for every metric the training objective logs (for a flow the
  flow-matching `mse` at the same timesteps each time, with every sample conditioned since eval mode drops no
  condition, and `fov_l1` in radians with a FoV head);
- for the VAEs, a reconstruction of each sample through the posterior mean, as inference decodes it
  (`RECONSTRUCTION`): occupancy IoU / precision / recall for the structure VAE; fine-voxel IoU and crossed-edge
  recall (a ground-truth crossed edge whose voxel comes back with the same flag; a missing one is a hole) for
  the shape VAE, decoded without the ground-truth voxels; base-colour MAE (sRGB in [0, 1]) for the texture VAE.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from pixal3d.errors import InputError
from pixal3d.sparse import coords_to_keys
from pixal3d.training.config import DataConfig, TrainConfig

HELDOUT_SEED_OFFSET = 1_000_000
"""First procedural object seed of the default held-out set (training data stays below it)."""


def heldout_data_config(config: TrainConfig, device: torch.device | str = "cpu") -> DataConfig:
    """The held-out set's data config: `config.heldout_data`, or one drawn from unseen objects.

    The default for procedural and shard data is procedural objects from seed `HELDOUT_SEED_OFFSET` on, one view
    each (distinct objects), at the training data's sizes, made once in the training process on `device` (the
    run's device; one engine process made about 5 samples/s at S = 512, R_hr = 256 on an H100, so a tiny run's
    64 samples take seconds, but minutes on a CPU); for synthetic data, the next synthetic seed. The default set
    uses the classic families whatever `data.families` is, so held-out numbers stay comparable across runs.
    """
    if config.heldout_data is not None:
        return config.heldout_data
    data = config.data
    if data.kind == "synthetic":
        if data.num_objects:
            raise InputError("data.num_objects > 0 (an overfitting run) has no unseen objects to hold out; set "
                             '"heldout_data" or eval_interval = 0')
        return dataclasses.replace(data, seed=data.seed + 1)
    engine = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return DataConfig(kind="procedural", image_size=data.image_size, resolution=data.resolution,
                      coarse_resolution=data.coarse_resolution, views=1, seed=data.seed if data.kind == "procedural"
                      else 0, seed_offset=HELDOUT_SEED_OFFSET, workers=0, engine_device=engine)


def fixed_batches(source: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` batches of a data source (the held-out set, drawn once and kept)."""
    return list(itertools.islice(iter(source), count))


# ------------------------------------------------------------------------------------------------ reconstructions
def structure_reconstruction(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Occupancy IoU, precision and recall of `decode(mean)` against `occupancy [B, 1, R, R, R]` (pooled)."""
    target = batch["occupancy"] > 0.5
    mean, _ = model.encode(batch["occupancy"])
    pred = model.decode(mean) > 0
    hit = (pred & target).sum().float()
    return {"occupancy_iou": hit / (pred | target).sum().clamp_min(1),
            "occupancy_precision": hit / pred.sum().clamp_min(1), "occupancy_recall": hit / target.sum().clamp_min(1)}


def shape_reconstruction(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Fine-voxel IoU and crossed-edge recall of `decode(mean)` (occupancy predicted, no guide), pooled."""
    coords, edges, r = batch["coords"], batch["edges"], model.config.resolution
    mean, _ = model.encode(coords, batch["vertex"], edges)
    decoded = model.decode(mean)
    pred_coords = torch.cat([torch.cat([torch.full_like(v.coords[:, :1], b), v.coords], dim=1)
                             for b, v in enumerate(decoded)])
    pred_edges = torch.cat([v.edges for v in decoded])
    pred_keys, true_keys = coords_to_keys(pred_coords, r), coords_to_keys(coords, r)
    if pred_keys.numel() == 0:  # nothing decoded: no voxel and no edge comes back
        pred_keys, pred_edges = torch.full((1,), -1, dtype=torch.long, device=coords.device), edges[:1] * 0
    order = torch.argsort(pred_keys)
    pred_keys, pred_edges = pred_keys[order], pred_edges[order]
    pos = torch.searchsorted(pred_keys, true_keys).clamp_max(pred_keys.numel() - 1)
    found = pred_keys[pos] == true_keys  # (N,): the true voxel was decoded
    crossed = edges != 0  # (N, 3)
    same = found[:, None] & (pred_edges[pos].to(edges.dtype) == edges)
    pred_count = int((pred_keys >= 0).sum())
    hit = found.sum().float()
    union = true_keys.numel() + pred_count - hit
    return {"voxel_iou": hit / max(union, 1),
            "voxel_recall": hit / max(true_keys.numel(), 1),
            "edge_recall": (same & crossed).sum().float() / crossed.sum().clamp_min(1)}


def texture_reconstruction(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Base-colour MAE (sRGB, [0, 1]) of `decode(mean)` on the true voxels."""
    mean, _ = model.encode(batch["coords"], batch["attrs"])
    attrs = model.decode(mean, batch["coords"])
    return {"base_color_mae": (attrs[:, :3].float() - batch["attrs"][:, :3].float()).abs().mean()}


Reconstruction = Callable[[nn.Module, dict[str, Any]], dict[str, torch.Tensor]]
RECONSTRUCTION: dict[str, Reconstruction] = {
    "structure_vae": structure_reconstruction,
    "shape_vae": shape_reconstruction,
    "texture_vae": texture_reconstruction,
}
"""Per model name, its reconstruction metrics through the posterior mean (flows have none: loss only)."""


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def estimate_heldout(model: nn.Module, name: str, objective: Callable, batches: list[dict[str, Any]],
                     generator: torch.Generator, autocast: Any,
                     batch_to: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, float]:
    """Mean held-out loss and metrics of `model` (the EMA, unwrapped) over `batches`, rank-averaged.

    Args:
        model: the module to evaluate; it is put in eval mode and its mode is restored afterwards.
        name: the run's model name (selects `RECONSTRUCTION`).
        objective: the training objective `(model, batch, generator) -> (loss, metrics)`.
        batches: the fixed held-out batches of this rank.
        generator: re-seeded by the caller before every evaluation (same noise each time).
        autocast: the training autocast context.
        batch_to: moves a batch to the model's device.

    Returns:
        `{"heldout_loss": ..., "heldout_<metric>": ...}` as Python floats (one host sync per evaluation).
    """
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for batch in batches:
        batch = batch_to(batch)
        with autocast:
            loss, metrics = objective(model, batch, generator)
            if name in RECONSTRUCTION:
                metrics = {**metrics, **RECONSTRUCTION[name](model, batch)}
        for key, value in {"loss": loss, **metrics}.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float()
    model.train(was_training)
    names = list(sums)
    values = torch.stack([sums[k] for k in names]) / len(batches)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
        values = values / dist.get_world_size()
    return {f"heldout_{k}": v for k, v in zip(names, values.tolist(), strict=True)}
