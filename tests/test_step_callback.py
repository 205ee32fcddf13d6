"""`Pixal3DPipeline.__call__(callback=...)` (issue 20): every step of `STEPS` is reported in order, the flow stages
once per sampler step too, the result does not change, and an exception from the callback stops the call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixal3d import Pixal3DPipeline
from pixal3d.serve.progress import STAGES, StageAborted, StageProgress, stage_callback
from pixal3d.stages import STEPS


@pytest.fixture(scope="module")
def pipe() -> Pixal3DPipeline:
    pipe = Pixal3DPipeline.from_config("micro", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image() -> np.ndarray:
    image = np.zeros((64, 64, 4), np.uint8)
    image[16:48, 20:44] = (200, 120, 60, 255)
    return image


def test_steps_are_reported_in_order_and_change_nothing(pipe: Pixal3DPipeline) -> None:
    calls: list[tuple[str, dict]] = []
    with_callback = pipe(_image(), seed=0, callback=lambda step, info: calls.append((step, info)))
    starts = [step for step, info in calls if "sampler_step" not in info]
    assert starts == list(STEPS) == list(with_callback.timings)
    steps = pipe.stage_samplers(None, None)
    for stage in ("structure", "shape", "texture"):
        sampled = [info["sampler_step"] for step, info in calls if step == stage and "sampler_step" in info]
        assert sampled == list(range(steps[stage].steps))
    assert all(info["num_steps"] == len(STEPS) and STEPS[info["step_index"]] == step for step, info in calls)
    plain = pipe(_image(), seed=0)
    assert torch.equal(plain.voxels.attrs, with_callback.voxels.attrs)
    assert STAGES == (*STEPS, "export")


def test_stage_callback_tracks_progress_and_stops_between_sampler_steps(pipe: Pixal3DPipeline) -> None:
    progress = StageProgress()
    asked = []

    def should_stop() -> str | None:
        asked.append(progress.current)
        return "cancelled" if progress.current == "shape" else None

    with pytest.raises(StageAborted, match="cancelled"):
        pipe(_image(), seed=0, callback=stage_callback(progress, should_stop))
    assert progress.current == "shape" and progress.states["structure"] == "done"
    assert progress.states["texture"] == "pending"
