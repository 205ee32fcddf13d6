"""Training objectives: one loss function per model kind (DESIGN section 8).

Every objective has the signature `objective(model, batch, generator) -> (loss, metrics)`:
- `model`: the module, possibly wrapped in `DistributedDataParallel` (objectives only call `model(...)`, the
  training forward, so DDP's gradient hooks fire);
- `batch`: a dict of tensors on the model's device (keys in `pixal3d.training.synthetic`);
- `generator`: the source of all training noise (posterior samples, timesteps), on the model's device;
- returns the scalar loss to back-propagate and a dict of detached scalar tensors to log.

Losses are means over samples (dense) or over voxels (sparse), so they do not depend on the batch size. Under DDP
the sparse means divide by the voxel count averaged over ranks (one all-reduce of the counts), so that DDP's
average of the rank losses is the mean over the global batch's voxels, as one process would compute it.
`OBJECTIVES` maps the VAE names of `pixal3d.models.MODELS` to these functions; a `"flow"` run's objective is
`pixal3d.training.conditioned.make_flow_objective` (`flow_loss` is the unconditional loss on stored latents).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.geometry.corners import average_corners, corner_index, corner_targets
from pixal3d.models.shape_vae import ShapeVAEOutput
from pixal3d.sampling import flow_matching_loss
from pixal3d.sparse import SparseTensor

Objective = Callable[[nn.Module, dict[str, torch.Tensor], torch.Generator], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every latent element; fp32 scalar."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def global_means(sums: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor]:
    """`sums[i] / counts[i]`, with each count replaced by its mean over DDP ranks (see the module docstring)."""
    # Built on the host and copied without waiting: `torch.tensor(..., device=cuda)` would synchronise the stream.
    denominators = torch.tensor(counts, dtype=torch.float64).to(sums[0].device, non_blocking=True)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(denominators)
        denominators = denominators / dist.get_world_size()
    return [s / d.clamp_min(1).to(s.dtype) for s, d in zip(sums, denominators, strict=True)]


def _kl_sum(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum()


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per sample, averaged: `logits`, `target` `[B, ...]`, target in {0, 1}."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    return (1.0 - (2.0 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)).mean()


def structure_vae_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                       generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-1 VAE: voxel BCE + `dice_weight` * Dice + `kl_weight` * KL on `batch["occupancy"] [B, 1, R, R, R]`."""
    config = _unwrap(model).config
    target = batch["occupancy"]
    out = model(target, generator=generator)
    bce = F.binary_cross_entropy_with_logits(out.logits.float(), target.float())
    dice = dice_loss(out.logits, target)
    kl = kl_divergence(out.mean, out.logvar)
    loss = bce + config.dice_weight * dice + config.kl_weight * kl
    with torch.no_grad():
        pred = out.logits > 0
        iou = ((pred & (target > 0.5)).flatten(1).sum(1) / ((pred | (target > 0.5)).flatten(1).sum(1)).clamp_min(1))
    return loss, {"bce": bce.detach(), "dice": dice.detach(), "kl": kl.detach(), "iou": iou.mean()}


def shape_vae_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                   generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-2 VAE: child-occupancy BCE (all levels) + dual-vertex L1 + edge-flag CE + KL on the fine voxels.

    With `decoder_target = "corners"` also `corner_weight` * (corner inside/outside BCE on the closed voxels' corners,
    logits averaged over the voxels sharing a corner as at decode, + open-flag BCE on every voxel); the targets come
    from the batch's coords and edge flags (`pixal3d.geometry.corners.corner_targets`), so every data source has them.
    """
    config = _unwrap(model).config
    out = model(batch["coords"], batch["vertex"], batch["edges"], generator=generator)
    occ_logits = torch.cat([x.reshape(-1) for x in out.occupancy_logits]).float()
    occ_target = torch.cat([x.reshape(-1) for x in out.occupancy_targets]).float()
    edge_target = (batch["edges"].long() + 1).reshape(-1)  # {-1, 0, 1} -> class {0, 1, 2}
    occupancy, vertex, edge, kl = global_means(
        [
            F.binary_cross_entropy_with_logits(occ_logits, occ_target, reduction="sum"),
            (out.vertex.float() - batch["vertex"].float()).abs().sum(),
            F.cross_entropy(out.edge_logits.float().reshape(-1, 3), edge_target, reduction="sum"),
            _kl_sum(out.mean, out.logvar),
        ],
        [occ_target.numel(), out.vertex.numel(), edge_target.numel(), out.mean.numel()],
    )
    loss = (config.occupancy_weight * occupancy + config.vertex_weight * vertex + config.edge_weight * edge
            + config.kl_weight * kl)
    with torch.no_grad():
        occ_acc = ((occ_logits > 0) == (occ_target > 0.5)).float().mean()
        edge_acc = (out.edge_logits.reshape(-1, 3).argmax(-1) == edge_target).float().mean()
    metrics = {"occupancy": occupancy.detach(), "vertex": vertex.detach(), "edge": edge.detach(),
               "kl": kl.detach(), "occupancy_acc": occ_acc, "edge_acc": edge_acc}
    if config.decoder_target == "corners":
        corner_loss, corner_metrics = _corner_loss(out, batch, config.resolution)
        loss = loss + config.corner_weight * corner_loss
        metrics.update(corner_metrics)
    return loss, metrics


def _corner_loss(out: ShapeVAEOutput, batch: dict[str, torch.Tensor],
                 resolution: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Corner BCE on closed voxels + open-flag BCE (both means over the global batch), and their accuracies."""
    with torch.no_grad():
        inside, open_voxel = corner_targets(batch["coords"], batch["edges"], resolution)
        index, num_corners = corner_index(batch["coords"], resolution)
    logits = out.corner_logits.float()
    shared = average_corners(index, num_corners, logits)[index]  # (N, 8): what decoding thresholds
    closed = ~open_voxel
    corner, open_bce = global_means(
        [
            F.binary_cross_entropy_with_logits(shared[closed], inside[closed].float(), reduction="sum"),
            F.binary_cross_entropy_with_logits(out.open_logits.float(), open_voxel.float(), reduction="sum"),
        ],
        [int(closed.sum()) * 8, open_voxel.numel()],
    )
    with torch.no_grad():
        corner_acc = ((shared[closed] > 0) == inside[closed]).float().sum() / max(int(closed.sum()) * 8, 1)
        open_acc = ((out.open_logits > 0) == open_voxel).float().mean()
    return corner + open_bce, {"corner": corner.detach(), "open": open_bce.detach(), "corner_acc": corner_acc,
                               "open_acc": open_acc, "open_fraction": open_voxel.float().mean()}


def texture_vae_loss(model: nn.Module, batch: dict[str, torch.Tensor],
                     generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage-3 VAE: L1 on the six PBR attributes of every fine voxel + KL."""
    config = _unwrap(model).config
    out = model(batch["coords"], batch["attrs"], generator=generator)
    l1, kl = global_means(
        [(out.attrs.float() - batch["attrs"].float()).abs().sum(), _kl_sum(out.mean, out.logvar)],
        [out.attrs.numel(), out.mean.numel()],
    )
    loss = l1 + config.kl_weight * kl
    return loss, {"l1": l1.detach(), "kl": kl.detach()}


def flow_loss(model: nn.Module, batch: dict[str, torch.Tensor],
              generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rectified-flow loss (`pixal3d.sampling.flow_matching_loss`) on pre-computed latents, unconditional.

    Batch keys: dense `latent [B, C, G, G, G]` (stage 1), or sparse `latent_coords [N, 4] (b, i, j, k)` with
    `latent_feats [N, C]` (stages 2-3) and, for stage 3, `concat_feats [N, C_shape]` (the shape latent). Image
    conditioning (lifted features, global tokens, p = 0.1 joint dropout) joins once the data engine's batches
    carry images and cameras; until then this trains the unconditional branch only.
    """
    config = _unwrap(model).config
    kwargs = {}
    if "latent" in batch:
        x0 = batch["latent"]
    else:
        x0 = SparseTensor(batch["latent_coords"], batch["latent_feats"], config.resolution)
        if "concat_feats" in batch:
            kwargs["concat"] = x0.replace(feats=batch["concat_feats"])
    loss = flow_matching_loss(model, x0, None, generator, model_kwargs=kwargs)
    return loss, {"mse": loss.detach()}


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


OBJECTIVES: dict[str, Objective] = {
    "structure_vae": structure_vae_loss,
    "shape_vae": shape_vae_loss,
    "texture_vae": texture_vae_loss,
}
