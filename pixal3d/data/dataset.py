"""Feeding training: `ShardDataset` (samples stored by `pixal3d.data.shards`) and `ProceduralStream` (on the fly).

`ShardDataset` is a map-style dataset over every index of a data folder, in a fixed order (unit id, then view);
item `i` is a `Sample`. A missing or corrupt shard or tensor raises `InputError` naming the sample id and file.

`ProceduralStream` is an endless `IterableDataset` of procedural samples, so a fresh machine trains without stored
data. Stream position `n` (per rank) maps to global item `g = n * world_size + rank`, asset seed
`seed_offset + g // views` (of the stream's family set, "classic" by default) and view `g % views`. DataLoader worker `w` of `W` makes the positions
`n = start + w, start + w + W, ...`; with `batch_size=None` (the training loop batches) the loader interleaves
workers round-robin, so the consumer sees positions `start, start + 1, ...` in order. Every sample carries its
`stream_index`; after consuming sample `x`, `stream.consumed(x)` (or `load_state_dict({"next_index": ...})` in a
fresh process) makes the next iteration resume at `x.stream_index + 1`, in any process and worker count.
With `batch=B` a worker makes its next B positions together (`make_units`: one voxelisation pass for all, fewer
GPU kernel launches per sample) and yields them in order; the samples and positions are the same as with B = 1.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from pixal3d.data.align import ViewDoesNotFitError
from pixal3d.data.samples import Sample, make_sample, view_generator
from pixal3d.data.shard_format import FIELDS, SHARD_FORMAT, read_indexes, sample_from_tensors
from pixal3d.data.shards import gpu_worker_setup
from pixal3d.data.units import SampleOptions, engine_batch, make_units, procedural_unit
from pixal3d.errors import InputError

logger = logging.getLogger(__name__)


class ShardDataset(Dataset):
    """The samples of a data folder written by `write_shards` (all ranks' indexes)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        indexes = read_indexes(self.root)
        if not indexes:
            raise InputError(f"{self.root}: no index*.json; write samples with `pixal3d data generate -o DIR`")
        entries = []
        for _, index in indexes:
            for unit_id, unit in index["units"].items():
                for scalars in unit.get("samples", []):
                    entries.append((unit_id, int(scalars["view"]), unit["shard"], scalars))
        entries.sort(key=lambda e: (e[0], e[1]))
        self._entries = [(shard, scalars) for _, _, shard, scalars in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def sample_id(self, index: int) -> str:
        """`"<asset_id>/<view>"` of item `index`."""
        _, scalars = self._entries[index]
        return f"{scalars['asset_id']}/{scalars['view']}"

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        shard, scalars = self._entries[index]
        path, key = self.root / shard, str(scalars["key"])
        name = f"sample {self.sample_id(index)} (item {index}, {path})"
        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("format") != SHARD_FORMAT:
                    raise ValueError("not a pixal3d samples shard")
                names = set(handle.keys())
                tensors = {f"{key}.{f}": handle.get_tensor(f"{key}.{f}") for f in FIELDS if f"{key}.{f}" in names}
            return sample_from_tensors(tensors, scalars, key)
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as err:
            raise InputError(f"{name} is unreadable: {err}; regenerate its shard (delete the unit from the "
                             "index and rerun `pixal3d data generate`)") from err


class ProceduralStream(IterableDataset):
    """Endless procedural samples made in the loader's workers; see the module docstring for the split.

    Args:
        options: image size, resolutions, data seed.
        views: views per asset.
        seed_offset: first asset seed.
        rank, world_size: this DDP rank's share; None reads `torch.distributed` (0 / 1 when not initialised).
        device: where rendering and voxelisation run (a worker on a GPU machine may use "cuda").
        limit: stop after this many positions per rank (None: endless).
        batch: positions a worker makes together (views of B assets rendered and voxelised together); the
            samples do not change, only the kernel launches per sample and the memory per worker. None:
            `engine_batch` (8 on a GPU, 1 on the CPU).
        family_set: the procedural families the seeds map to (`pixal3d.data.procedural.FAMILY_SETS`).
    """

    def __init__(
        self,
        options: SampleOptions | None = None,
        views: int = 4,
        seed_offset: int = 0,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        device: str = "cpu",
        limit: int | None = None,
        batch: int | None = None,
        family_set: str = "classic",
    ) -> None:
        super().__init__()
        from pixal3d.data.procedural import check_family_set

        self.family_set = check_family_set(family_set)
        dist = torch.distributed
        ready = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if ready else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if ready else 1)
        if views < 1 or seed_offset < 0 or not (0 <= self.rank < self.world_size):
            raise InputError(f"need views >= 1, seed_offset >= 0, 0 <= rank < world_size; got {views}, "
                             f"{seed_offset}, rank {self.rank} of {self.world_size}")
        self.options = options if options is not None else SampleOptions()
        self.views, self.seed_offset, self.device, self.limit = views, seed_offset, device, limit
        self.batch = engine_batch(batch, device)
        self.next_index = 0

    def item(self, position: int) -> tuple[int, int]:
        """`(asset seed, view)` of this rank's stream position."""
        g = position * self.world_size + self.rank
        return self.seed_offset + g // self.views, g % self.views

    def make(self, position: int) -> Sample:
        """The sample at a stream position (deterministic: the same position gives the same bytes)."""
        from pixal3d.data.procedural import generate, procedural_asset_id

        seed, view = self.item(position)
        asset_id = procedural_asset_id(seed, self.family_set)
        scene = generate(seed, family_set=self.family_set).scene
        try:
            sample = make_sample(
                scene, view_generator(asset_id, view, self.options.seed), self.options.image_size,
                self.options.resolution, self.options.coarse, asset_id=asset_id, view=view, device=self.device,
            )
        except ViewDoesNotFitError as err:
            # Still deterministic: the same position always fails, and its replacement is the next view seed.
            logger.warning("%s; drawing view %d with another view seed", err, view)
            sample = make_sample(
                scene, view_generator(asset_id, view, self.options.seed + 1),
                self.options.image_size, self.options.resolution, self.options.coarse, asset_id=asset_id,
                view=view, device=self.device,
            )
        sample.stream_index = position
        return sample

    def make_batch(self, positions: list[int]) -> list[Sample]:
        """The samples at several stream positions, made together (`make_units`); each is `make(position)`'s."""
        units = []
        for position in positions:
            seed, view = self.item(position)
            units.append(procedural_unit(seed, (view, view + 1), self.family_set))
        samples = []
        for position, result in zip(positions, make_units(units, self.options, self.device), strict=True):
            # A view that never fits (or a bad asset): `make` redraws it with another view seed (or raises).
            sample = result.samples[0] if result.samples else self.make(position)
            sample.stream_index = position
            samples.append(sample)
        return samples

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            gpu_worker_setup()
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
            # Share sample tensors by file name: with file descriptors the loader fetches each of a sample's ~8
            # from this worker's sharer thread, which waits for this busy process's GIL every time.
            torch.multiprocessing.set_sharing_strategy("file_system")
        position = self.next_index + worker
        while self.limit is None or position < self.limit:
            positions = [position + k * workers for k in range(self.batch)]  # this worker's next positions
            positions = [p for p in positions if self.limit is None or p < self.limit]
            for sample in self.make_batch(positions):
                if info is None:
                    self.next_index = sample.stream_index + 1
                yield sample
            position = positions[-1] + workers

    def consumed(self, sample: Sample) -> None:
        """Record that the training loop took `sample`: the next iteration starts after it."""
        self.next_index = sample.stream_index + 1

    def state_dict(self) -> dict[str, object]:
        """The data position and the settings it depends on (JSON-able; goes in the checkpoint)."""
        return {"next_index": self.next_index, "views": self.views, "seed_offset": self.seed_offset,
                "world_size": self.world_size, "options": json.loads(json.dumps(self.options.__dict__)),
                "family_set": self.family_set}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Resume at `state["next_index"]`; the settings must match (else the positions mean other samples).
        A state without "family_set" (written before family sets existed) means "classic"."""
        mine = self.state_dict()
        state = {"family_set": "classic", **state}
        for key in ("views", "seed_offset", "world_size", "options", "family_set"):
            if state.get(key) != mine[key]:
                raise InputError(f"stream state has {key}={state.get(key)!r}, this stream {mine[key]!r}; resume "
                                 "with the same data settings")
        self.next_index = int(state["next_index"])
