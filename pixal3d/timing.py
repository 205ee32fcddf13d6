"""The one step timer: `with timed(timings, "step", device):` adds the block's seconds to `timings["step"]`.

Used by the pipeline (`StepTimer`, which also logs each step), the data engine's profiler (`make_sample(...,
timings=...)`) and the voxeliser. On CUDA the device is synchronised before and after the block, so queued
kernels are charged to their own step; that costs two syncs per step, so callers pass `timings=None` (a no-op)
unless they profile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


@contextmanager
def timed(timings: dict[str, float] | None, step: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Add the seconds the block takes to `timings[step]` (no-op when `timings` is None)."""
    if timings is None:
        yield
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize(device)
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start


class StepTimer:
    """`with timer("name"):` times the block (`timed`) into `timer.timings` and logs it to `log`."""

    def __init__(self, device: torch.device | str, log: logging.Logger = logger) -> None:
        self.device = torch.device(device)
        self.timings: dict[str, float] = {}
        self._log = log

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        with timed(self.timings, name, self.device):
            yield
        self._log.info("%s: %.2f s", name, self.timings[name])
