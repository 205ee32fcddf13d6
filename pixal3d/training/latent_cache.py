"""The frozen VAEs' posteriors of a flow run's training samples, kept on the device after their first batch.

A flow run's VAEs are frozen, so a sample's posterior (mean and log-variance) is the same every epoch; encoding it
again each time it comes round is most of a sparse flow's step besides the flow itself (the sparse VAE encoder runs
over every fine voxel of the batch). `LatentCache` keeps each sample's posterior by `batch["sample_ids"]` (shard
data: `"<asset>/<view>"`, unique per sample), up to `FlowTrainConfig.latent_cache` samples, and rebuilds a batch's
latents from it; the posterior sample (`latent: "sample"`) is still drawn fresh per step, from the same generator in
the same order, so a cached batch gives the latents that encoding it again gives: bit for bit in the batch its
samples were encoded in, up to float rounding in another (the encoder's products are blocked by the row count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from pixal3d.errors import InputError
from pixal3d.sparse import SparseTensor


@dataclass
class Posterior:
    """One sample's posterior: dense `[C, G, G, G]` (structure) or sparse rows `[n, C]` on `coords [n, 3]`."""

    mean: torch.Tensor
    logvar: torch.Tensor
    coords: torch.Tensor | None = None
    concat_mean: torch.Tensor | None = None
    concat_logvar: torch.Tensor | None = None


@torch.no_grad()
def encode_batch(stage: str, vaes: dict[str, nn.Module], batch: dict[str, Any]) -> tuple[Any, ...]:
    """The batch's posterior for `stage`: `(mean, logvar, concat_mean, concat_logvar)`; `mean` a dense tensor
    (structure) or a `SparseTensor` of means, `concat_*` stage 3's shape posterior (rows of `mean`'s voxels)."""
    if stage == "structure":
        mean, logvar = vaes["structure_vae"].encode(batch["occupancy"])
        return mean, logvar, None, None
    shape_mean, shape_logvar = vaes["shape_vae"].encode(batch["coords"], batch["vertex"], batch["edges"])
    if stage == "shape":
        return shape_mean, shape_logvar, None, None
    mean, logvar = vaes["texture_vae"].encode(batch["coords"], batch["attrs"])
    # Both encoders pool the same fine voxels to R_tok (check_stage makes their token_resolution equal), so the
    # token sets agree; comparing shapes keeps a guard without reading the coordinates back (a sync per step).
    if mean.coords.shape != shape_mean.coords.shape:
        raise InputError("the shape and texture VAEs put their tokens on different voxels; their token_resolution "
                         "must be equal")
    return mean, logvar, shape_mean.feats, shape_logvar


def stage_latents(stage: str, vaes: dict[str, nn.Module], batch: dict[str, Any], mode: str,
                  generator: torch.Generator) -> tuple[torch.Tensor | SparseTensor, SparseTensor | None]:
    """The flow's clean latents `x0` (and stage 3's `concat`) of a batch, encoded by the frozen VAEs."""
    mean, logvar, concat_mean, concat_logvar = encode_batch(stage, vaes, batch)
    if stage == "structure":
        return draw(mean, logvar, mode, generator), None
    concat = None if concat_mean is None else mean.replace(feats=draw(concat_mean, concat_logvar, mode, generator))
    return mean.replace(feats=draw(mean.feats, logvar, mode, generator)), concat


def split_posteriors(stage: str, encoded: tuple[Any, ...]) -> list[Posterior]:
    """`encode_batch`'s result -> one `Posterior` per sample (reads the batch offsets: a host sync)."""
    mean, logvar, concat_mean, concat_logvar = encoded
    if stage == "structure":
        return [Posterior(m, v) for m, v in zip(mean.float(), logvar.float(), strict=True)]
    bounds = mean.batch_offsets.tolist()
    out = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        rows = slice(start, end)
        out.append(Posterior(mean.feats[rows], logvar[rows], mean.coords[rows, 1:],
                             None if concat_mean is None else concat_mean[rows],
                             None if concat_logvar is None else concat_logvar[rows]))
    return out


def draw(mean: torch.Tensor, logvar: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """The flow's target from a posterior: its mean, or mean + std * noise (`mode` "sample")."""
    if mode == "mean":
        return mean.float()
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    return mean.float() + torch.exp(0.5 * logvar.float()) * noise


def batch_latents(posteriors: list[Posterior], resolution: int | None, mode: str,
                  generator: torch.Generator) -> tuple[torch.Tensor | SparseTensor, SparseTensor | None]:
    """A batch's `x0` (and stage 3's `concat`) from its samples' posteriors, as `stage_latents` returns them.

    The concat (shape) latent is drawn before the texture latent, the order in which encoding draws them.
    """
    if posteriors[0].coords is None:
        return draw(torch.stack([p.mean for p in posteriors]), torch.stack([p.logvar for p in posteriors]),
                    mode, generator), None
    counts = [len(p.coords) for p in posteriors]
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(posteriors[0].coords.device)
    coords = torch.cat([index[:, None].to(torch.int32), torch.cat([p.coords for p in posteriors])], dim=1)
    concat = None
    if posteriors[0].concat_mean is not None:
        feats = draw(torch.cat([p.concat_mean for p in posteriors]), torch.cat([p.concat_logvar for p in posteriors]),
                     mode, generator)
        concat = SparseTensor.grouped(coords, feats, resolution, len(posteriors))
    feats = draw(torch.cat([p.mean for p in posteriors]), torch.cat([p.logvar for p in posteriors]), mode, generator)
    return SparseTensor.grouped(coords, feats, resolution, len(posteriors)), concat


class LatentCache:
    """Posteriors by sample id, at most `capacity` samples (later samples are encoded every time)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: dict[str, Posterior] = {}
        self.hits = self.misses = 0

    def latents(self, stage: str, vaes: dict[str, nn.Module], batch: dict[str, Any], mode: str,
                generator: torch.Generator) -> tuple[torch.Tensor | SparseTensor, SparseTensor | None]:
        """The batch's latents: from the cache when every sample is in it; else encoded, and the samples kept while
        there is room (a full or disabled cache encodes the batch as `stage_latents` does, with no host sync)."""
        ids = batch.get("sample_ids")
        if ids is not None and ids and all(i in self.entries for i in ids):
            self.hits += 1
            return batch_latents([self.entries[i] for i in ids], _token_resolution(stage, vaes), mode, generator)
        self.misses += 1
        room = self.capacity - len(self.entries)
        if ids is None or room <= 0:
            return stage_latents(stage, vaes, batch, mode, generator)
        posteriors = split_posteriors(stage, encode_batch(stage, vaes, batch))
        for sample_id, posterior in zip(ids, posteriors, strict=True):
            if sample_id not in self.entries and len(self.entries) < self.capacity:
                self.entries[sample_id] = posterior
        return batch_latents(posteriors, _token_resolution(stage, vaes), mode, generator)


def _token_resolution(stage: str, vaes: dict[str, nn.Module]) -> int | None:
    return None if stage == "structure" else vaes[f"{stage}_vae"].config.token_resolution
