"""Follow a running `Pixal3DPipeline.__call__` step by step, and stop it between model calls.

The pipeline's `__call__` is one call (DESIGN section 11); a server or demo still wants to say which step is
running, and to cancel a job or end it at its time limit. The pipeline reports its steps to a
`callback(step, info)` (at each step's start and before every sampler step); `stage_callback` turns that into
`StageProgress` updates and, when the caller's `should_stop` says so, raises `StageAborted` out of the call.

Limits: a step that calls no sampler (preprocessing's background removal, the mesh extraction, the GLB export) is
not interrupted; it ends, and the next report (or the caller's own check) stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pixal3d.stages import STEPS

STAGES = (*STEPS, "export")
"""The steps of one job, in order: the pipeline's steps (`pixal3d.stages.STEPS`) plus the GLB export."""


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


def stage_callback(
    progress: StageProgress, should_stop: Callable[[], str | None] = lambda: None
) -> Callable[[str, dict[str, Any]], None]:
    """The pipeline `callback` that reports each step to `progress` and raises `StageAborted` when
    `should_stop()` returns a reason: `pipe(image, ..., callback=stage_callback(progress, should_stop))`.

    Starts `progress` at "preprocess" (the input checks before it count as preprocessing).
    """
    progress.advance("preprocess")

    def callback(step: str, info: dict[str, Any]) -> None:
        reason = should_stop()
        if reason is not None:
            raise StageAborted(reason)
        progress.advance(step)

    return callback
