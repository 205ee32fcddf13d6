"""Several images -> several asset files, with each export overlapped with the next image's sampling (issue 18).

    from pixal3d.batch import generate_batch
    for item in generate_batch(pipe, ["a.png", "b.png"], ["a.glb", "b.glb"], ExportOptions(device="auto")):
        print(item.output, item.timings)

The pipeline samples image `i + 1` on the calling thread while a worker thread exports asset `i` (bake, encode,
write: PyTorch kernels, Pillow's encoders and file writes release the GIL). On CUDA the worker runs on its own stream,
ordered after the asset's kernels by an event: the sampling thread may be capturing a CUDA graph meanwhile, which
work on the default stream or a device-wide sync from another thread would invalidate. Items come back in input order, each
once its file is written. `pixal3d generate IMAGE... / DIR` runs through this.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixal3d.errors import InputError
from pixal3d.geometry.export import ExportOptions

if TYPE_CHECKING:
    from pixal3d.asset import Asset
    from pixal3d.pipeline import Pixal3DPipeline


@dataclass
class BatchItem:
    """One finished image of a batch."""

    image: Any
    """The input as given (path, PIL image, array)."""
    output: Path
    """The file written (`.glb` or `.obj`, see `geometry.writers`)."""
    asset: Asset
    """The generated asset (its `mesh`, `voxels`, `camera`...)."""
    timings: dict[str, float]
    """Seconds per pipeline step, then "export" (bake + write, on the worker thread)."""


def generate_batch(
    pipe: Pixal3DPipeline,
    images: Sequence[Any],
    outputs: Sequence[str | os.PathLike],
    export: ExportOptions | None = None,
    **call_kwargs: Any,
) -> Iterator[BatchItem]:
    """Generate one asset per image and write it to the matching output, overlapping export and sampling.

    Args:
        pipe: the pipeline.
        images: the inputs, one object each (anything `pipe(image)` takes).
        outputs: one output path per image; the suffix picks the writer.
        export: face budget, texture size, image format and export device (default `ExportOptions()`); the
            pipeline call gets its `faces` and `texture_size` too.
        **call_kwargs: passed to every `pipe(image, ...)` call (seed, fov, steps, ...).

    Yields:
        A `BatchItem` per image, in input order, once its file is written. When the pipeline raises on an image,
        the previous image's export still finishes and is yielded first, then the error propagates.
    """
    from pixal3d.geometry.writers import writer_for

    export = export or ExportOptions()
    if len(images) != len(outputs):
        raise InputError(f"{len(images)} images but {len(outputs)} outputs; give one output per image")
    for output in outputs:
        writer_for(output)  # unknown suffix or missing folder: fail before any work
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixal3d-export") as pool:
        pending: tuple[Any, Path, Asset, Future] | None = None
        for image, output in zip(images, outputs, strict=True):
            try:
                asset = pipe(image, faces=export.faces, texture_size=export.texture_size, **call_kwargs)
            except BaseException:
                if pending is not None:
                    yield _finish(*pending)
                raise
            if pending is not None:
                yield _finish(*pending)
            pending = (image, Path(output), asset, pool.submit(_export, asset, Path(output), export, _ready_event(pipe)))
        if pending is not None:
            yield _finish(*pending)


def _ready_event(pipe: Pixal3DPipeline) -> tuple[Any, Any] | None:
    """(CUDA event after the asset's kernels on the pipeline device's current stream, that device); None off CUDA."""
    import torch

    device = getattr(pipe, "device", None)
    if not isinstance(device, torch.device) or device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event, device


def _export(asset: Asset, output: Path, export: ExportOptions, ready: tuple[Any, Any] | None) -> float:
    import torch

    start = time.perf_counter()
    stream = None
    if ready is not None:
        event, device = ready
        stream = torch.cuda.Stream(device)
        stream.wait_event(event)
    with torch.cuda.stream(stream) if stream is not None else nullcontext():
        asset.export(output, export.faces, export.texture_size, export.image_format, export.include_pbr,
                     export.device)
    return time.perf_counter() - start


def _finish(image: Any, output: Path, asset: Asset, future: Future) -> BatchItem:
    seconds = future.result()
    return BatchItem(image=image, output=output, asset=asset, timings={**asset.timings, "export": seconds})
