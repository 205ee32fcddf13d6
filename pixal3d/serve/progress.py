"""Follow a running `Pixal3DPipeline.__call__` stage by stage, and stop it between model calls.

The pipeline's `__call__` is one call (DESIGN section 11); a server or demo still wants to say which step is
running, and to cancel a job or end it at its time limit. `StageTracker` gets both without changing the pipeline:
a forward pre-hook on every component sees each model call (the flow models run once per sampler step), maps the
component to its stage and, when the caller's `should_stop` says so, raises `StageAborted` out of the call.

Limits: a step that calls no model (preprocessing's background removal, the mesh extraction, the GLB export) is
not interrupted; it ends, and the next model call (or the caller's own check) stops the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch.nn as nn

from pixal3d.pipeline import Pixal3DPipeline

STAGES = ("preprocess", "encode", "camera", "structure", "shape", "texture", "decode", "export")
"""The steps of one job, in order: the pipeline's timed steps plus the GLB export."""

_COMPONENT_STAGE = {
    "encoder": "encode",
    "fov_head": "camera",
    "depth_head": "camera",
    "structure_flow": "structure",
    "structure_vae": "structure",
    "shape_flow": "shape",
    "texture_flow": "texture",
    "shape_vae": "decode",
    "texture_vae": "decode",
}


class StageAborted(RuntimeError):
    """Raised out of a pipeline call when `should_stop` returned a reason (cancelled, timed out)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StageProgress:
    """Stage states and times of one run: `states[stage]` is "pending", "running" or "done"."""

    def __init__(self, on_change: Callable[[StageProgress], None] | None = None) -> None:
        self.states = {s: "pending" for s in STAGES}
        self.timings: dict[str, float] = {}
        self.current: str | None = None
        self._started = 0.0
        self._on_change = on_change

    def advance(self, stage: str) -> None:
        """Mark `stage` running and every earlier stage done (stages only move forward)."""
        index = STAGES.index(stage)
        if self.current is not None and STAGES.index(self.current) >= index:
            return
        now = time.perf_counter()
        if self.current is not None:
            self.timings[self.current] = now - self._started
        for earlier in STAGES[:index]:
            self.states[earlier] = "done"
        self.states[stage], self.current, self._started = "running", stage, now
        if self._on_change is not None:
            self._on_change(self)

    def finish(self, timings: dict[str, float] | None = None) -> None:
        """Mark every stage done; `timings` (e.g. `Asset.timings`) replace the measured ones they name."""
        if self.current is not None:
            self.timings[self.current] = time.perf_counter() - self._started
        merged = {**self.timings, **(timings or {})}
        self.timings = {s: merged[s] for s in STAGES if s in merged}
        self.states = {s: "done" for s in STAGES}
        self.current = None

    @property
    def fraction(self) -> float:
        """Share of the stages done, in [0, 1]."""
        return sum(v == "done" for v in self.states.values()) / len(STAGES)


class StageTracker:
    """Forward pre-hooks on a pipeline's components that report stages and can stop the call.

    The hooks stay registered for the tracker's life and do nothing outside `watch`; one thread at a time may
    run the pipeline under `watch` (the server's worker, the demo's single-concurrency handler).
    """

    def __init__(self, pipe: Pixal3DPipeline) -> None:
        self._progress: StageProgress | None = None
        self._should_stop: Callable[[], str | None] = lambda: None
        self._handles = [
            module.register_forward_pre_hook(self._hook(_COMPONENT_STAGE[name]), prepend=True)
            for name, module in pipe.components.items()
        ]

    def _hook(self, stage: str) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            if self._progress is None:
                return
            reason = self._should_stop()
            if reason is not None:
                raise StageAborted(reason)
            self._progress.advance(stage)

        return hook

    @contextlib.contextmanager
    def watch(
        self, progress: StageProgress, should_stop: Callable[[], str | None] = lambda: None
    ) -> Iterator[StageProgress]:
        """Report the stages of the pipeline calls in the block to `progress`; stop them when `should_stop()`
        returns a reason. Starts `progress` at "preprocess"."""
        self._progress, self._should_stop = progress, should_stop
        progress.advance("preprocess")
        try:
            yield progress
        finally:
            self._progress, self._should_stop = None, lambda: None

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
