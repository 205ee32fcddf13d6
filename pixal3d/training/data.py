"""Training batches from the data engine: the on-the-fly procedural stream and stored shards (DESIGN sections 7-8).

Both sources are iterables of batch dicts with `state_dict()` / `load_state_dict()` (the data position goes in
every checkpoint, so a resumed run sees the batches it would have seen). `collate_samples` turns `Sample`s
(`pixal3d.data.samples`) into one batch, on the CPU:
- `image [B, 4, S, S] float32` RGBA in [0, 1], RGB premultiplied on black: what `Pixal3DPipeline.preprocess`
  gives the encoder at inference;
- `fov [B] float32` radians and `cameras`: one `Camera(fov, size=S)` per sample (the inference camera);
- the voxel keys of `pixal3d.training.synthetic` (`coords`, `vertex`, `edges`, `attrs` at R_hr, `occupancy`
  at the coarse resolution), so the VAEs train on these batches too;
- `coarse_coords [M, 4] int32 (b, i, j, k)`: the occupied coarse voxels, key-sorted per sample;
- `resolution`: the fine voxels' `R_hr` (an int).

Rank split: both sources make the global batch of a step independent of the rank count (rank `r` of `W` takes
the `r`-th slice of every global batch).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from pixal3d.data.dataset import ProceduralStream, ShardDataset
from pixal3d.data.samples import Sample
from pixal3d.data.shards import SampleOptions
from pixal3d.errors import InputError
from pixal3d.training.config import DataConfig
from pixal3d.training.synthetic import collate_voxels

logger = logging.getLogger(__name__)


def collate_samples(samples: list[Sample]) -> dict[str, Any]:
    """`Sample`s of one image size and resolution -> a batch dict (see the module docstring)."""
    sizes = {(int(s.image.shape[0]), s.voxels.resolution, s.coarse_resolution) for s in samples}
    if len(sizes) != 1:
        raise InputError(f"samples of one batch must share (S, R_hr, coarse); got {sorted(sizes)}")
    if any(s.voxels.attrs is None for s in samples):
        raise InputError(f"sample {next(s.sample_id for s in samples if s.voxels.attrs is None)} has no attributes")
    batch: dict[str, Any] = collate_voxels([s.voxels for s in samples], samples[0].coarse_resolution)
    images = torch.stack([s.image for s in samples])  # (B, S, S, 4) uint8
    batch["image"] = images.permute(0, 3, 1, 2).float() / 255.0  # -> (B, 4, S, S) in [0, 1]
    batch["fov"] = torch.tensor([s.fov for s in samples], dtype=torch.float32)
    batch["cameras"] = [s.camera for s in samples]
    batch["sample_ids"] = [s.sample_id for s in samples]
    batch["resolution"] = samples[0].voxels.resolution
    batch["coarse_coords"] = torch.cat([
        torch.cat([torch.full((len(s.coarse), 1), b, dtype=torch.int32), s.coarse.to(torch.int32)], dim=1)
        for b, s in enumerate(samples)
    ])
    return batch


class ProceduralSource:
    """Endless batches made on the fly by `ProceduralStream` (optionally in DataLoader workers).

    The stream's position is that of the last sample handed to the loop, so samples that workers made ahead
    are made again after a resume, never skipped.
    """

    def __init__(self, config: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        options = SampleOptions(image_size=config.image_size, resolution=config.resolution,
                                coarse=config.coarse_resolution, seed=config.seed)
        engine = torch.device(device) if config.engine_device == "cuda" else torch.device("cpu")
        if engine.type == "cuda" and not torch.cuda.is_available():
            raise InputError('data.engine_device is "cuda" but CUDA is not available; use "cpu"')
        self.config, self.batch_size = config, batch_size
        self.stream = ProceduralStream(options, config.views, config.seed_offset, rank=rank, world_size=world_size,
                                       device=str(engine), batch=config.engine_batch, family_set=config.families)

    def state_dict(self) -> dict[str, object]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Resume the stream; a checkpoint of another rank count maps to the same global position.

        Every rank consumes the same number of samples, so `next_index * world_size` is the global count.
        """
        state = dict(state)
        world, mine = int(state["world_size"]), self.stream.world_size
        if world != mine:
            consumed = int(state["next_index"]) * world
            if consumed % mine:
                raise InputError(f"the checkpoint consumed {consumed} samples over {world} ranks, which {mine} ranks "
                                 "cannot split evenly; resume with a rank count that divides it")
            state.update(world_size=mine, next_index=consumed // mine)
        self.stream.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        workers = self.config.workers
        if workers:
            # The workers keep `workers` cores busy; this process collates on the rest. More threads than free
            # cores make its collation spin against the workers (measured on one H100 host, 16 cores, 12 workers:
            # 30 samples/s with 16 threads here, 53 with 4).
            threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - workers))
            if threads < torch.get_num_threads():
                logger.info("%d data workers: this process keeps %d torch threads (was %d)", workers, threads,
                            torch.get_num_threads())
                torch.set_num_threads(threads)
            context = "spawn" if self.config.engine_device == "cuda" else None
            samples = iter(DataLoader(self.stream, batch_size=None, num_workers=workers,
                                      multiprocessing_context=context, prefetch_factor=2 * self.batch_size))
        else:
            samples = iter(self.stream)
        while True:
            chunk = [next(samples) for _ in range(self.batch_size)]
            self.stream.consumed(chunk[-1])
            yield collate_samples(chunk)


class ShardSource:
    """Endless batches over a shard folder, epoch after epoch; the position is the number of batches drawn.

    Global item `g` (the `g`-th sample the run consumes over all ranks) is sample `perm_e[g % n]` of epoch
    `e = g // n`, where `perm_e` is a permutation seeded by `(seed, e)` (or the stored order).
    """

    def __init__(self, config: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        self.dataset = ShardDataset(config.root)
        self.config, self.batch_size, self.rank, self.world_size = config, batch_size, rank, world_size
        self.position = 0
        self._perm: tuple[int, torch.Tensor] | None = None
        first = self.dataset[0]
        have = (int(first.image.shape[0]), first.voxels.resolution, first.coarse_resolution)
        want = (config.image_size, config.resolution, config.coarse_resolution)
        if have != want:
            raise InputError(f"{config.root} holds samples with (image_size, resolution, coarse_resolution) = {have}, "
                             f"the data config asks for {want}; make them equal")

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "samples": len(self.dataset)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["samples"]) != len(self.dataset):
            raise InputError(f"the checkpoint read {state['samples']} samples from {self.config.root}, it now holds "
                             f"{len(self.dataset)}; resume on the same data folder")
        self.position = int(state["position"])

    def _index(self, g: int) -> int:
        n = len(self.dataset)
        epoch, i = divmod(g, n)
        if not self.config.shuffle:
            return i
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(n, generator=gen))
        return int(self._perm[1][i])

    def batch_at(self, position: int) -> dict[str, Any]:
        """The collated batch this rank draws at batch `position` (a pure function of the position)."""
        start = (position * self.world_size + self.rank) * self.batch_size
        return collate_samples([self.dataset[self._index(g)] for g in range(start, start + self.batch_size)])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Batches from `position` on. With `config.workers`, DataLoader workers read and collate the next batches
        while the model trains (in order: the same batches as without workers); `position` counts the batches
        handed to the loop, so a checkpoint resumes after the last batch trained on, never after one read ahead."""
        if not self.config.workers:
            while True:
                batch = self.batch_at(self.position)
                self.position += 1
                yield batch
        loader = DataLoader(_ShardBatches(self), sampler=itertools.count(self.position), batch_size=None,
                            num_workers=self.config.workers, prefetch_factor=2)
        for batch in loader:
            self.position += 1
            yield batch


class _ShardBatches(Dataset):
    """`ShardSource.batch_at` as a map-style dataset, so DataLoader workers can make batches by position."""

    def __init__(self, source: ShardSource) -> None:
        self.source = source

    def __getitem__(self, position: int) -> dict[str, Any]:
        return self.source.batch_at(position)
