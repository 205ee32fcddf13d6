"""`pixal3d bench`: wall time and peak memory of each inference stage, warm-up then the median of several runs.

Stages (DESIGN section 1): the pipeline's steps (`pixal3d.stages.STEPS`: preprocess, encode, camera, structure,
shape, texture, decode; "camera" is the FoV head's estimate, the depth map and the flows' condition), timed by the
pipeline itself (`Asset.timings`, synchronising CUDA at every step boundary), then "export": `Asset.export`
(clean-up, simplification, UV bake, GLB) when asked.

The floor: the pipeline's FLOPs (counted by `torch.utils.flop_counter` in one eager call) divided by a measured
matmul rate (bf16 on CUDA, float32 on the CPU), and the bytes the export writes.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` over one run (reset before each run); on the CPU, the
process's resident-set high-water mark (`resource.getrusage`, never reset, so it covers loading too).
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pixal3d.errors import InputError
from pixal3d.stages import STEPS

if TYPE_CHECKING:
    from pixal3d.pipeline import Pixal3DPipeline

logger = logging.getLogger(__name__)

STAGES = (*STEPS, "export")
"""Benchmark stage names, in pipeline order: the pipeline's steps, then the export."""


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory window on a CUDA device (the CPU's RSS high-water mark cannot be reset)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak memory in MiB: CUDA `max_memory_allocated` since the last reset, else the process's peak RSS."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def machine_info(device: torch.device | str) -> dict[str, object]:
    """Where the figures come from: CPU / GPU name, core and thread counts, torch version."""
    device = torch.device(device)
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_image(size: int = 512) -> np.ndarray:
    """A fixed input: procedural object 0 rendered by a seeded random camera, preprocessed; `[S, S, 4] uint8`."""
    from pixal3d.data.procedural import generate
    from pixal3d.data.samples import make_sample, view_generator

    sample = make_sample(generate(0).scene, view_generator("bench", 0), image_size=size, resolution=64)
    return sample.image.numpy()


def run_bench(
    pipe: Pixal3DPipeline,
    image: np.ndarray,
    runs: int = 5,
    warmup: int = 1,
    export: bool = False,
    fov: float | None = None,
    seed: int = 0,
    resolution: int | None = None,
    faces: int = 100_000,
    texture_size: int = 2048,
    export_device: str = "auto",
) -> dict[str, object]:
    """Time the pipeline on one image: `warmup` untimed calls, then `runs` timed ones.

    Args:
        pipe: the pipeline, already on its device.
        image: the input, any form the pipeline takes (e.g. `[S, S, 4] uint8`).
        runs: timed runs (>= 1); stage times are their medians.
        warmup: untimed runs first (kernel selection, allocator, caches).
        export: also time `Asset.export` (written to a temporary folder, then deleted).
        fov: the input FoV in radians; None runs the FoV head (the "camera" stage's real work).
        seed: sampling seed (the same in every run).
        resolution: fine voxel resolution passed to the pipeline (None = the model's own).
        faces, texture_size: export settings.
        export_device: the export path (`ExportOptions.device`): "auto" takes the PyTorch path on a GPU.

    Returns:
        JSON-ready dict: `stages {name: {"median_s", "min_s", "runs_s"}}` (export `None` unless `export`),
        `export_steps {name: median_s}` (the export's sub-steps, empty unless `export`), `floor` (`floor`: the
        model's FLOPs at the measured matmul rate, and the GLB's bytes),
        `total_median_s`, `peak_memory_mb`, `faces`, `fine_voxels`, `machine`, and the settings.
    """
    if runs < 1 or warmup < 0:
        raise InputError(f"runs must be >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    from pixal3d.geometry.export import ExportOptions
    from pixal3d.geometry.writers import writer_for

    times: dict[str, list[float]] = {s: [] for s in STAGES}
    sub_times: dict[str, list[float]] = {}
    export_bytes = None
    peaks, totals = [], []
    asset = None
    with tempfile.TemporaryDirectory(prefix="pixal3d-bench-") as tmp:
        for i in range(warmup + runs):
            reset_peak_memory(pipe.device)
            asset = pipe(image, fov=fov, seed=seed, resolution=resolution, faces=faces, texture_size=texture_size)
            timings = dict(asset.timings)
            if export:
                start = time.perf_counter()
                steps: dict[str, float] = {}
                baked = asset.bake(ExportOptions(faces=faces, texture_size=texture_size, device=export_device), steps)
                write_start = time.perf_counter()
                written = writer_for(Path(tmp) / "bench.glb")(Path(tmp) / "bench.glb", baked, "png", True, None)
                export_bytes = written.stat().st_size
                timings["export"] = time.perf_counter() - start
                export_steps = {**steps, "write (encode + file)": time.perf_counter() - write_start}
                if i >= warmup:
                    for name, seconds in export_steps.items():
                        sub_times.setdefault(name, []).append(seconds)
            peak = peak_memory_mb(pipe.device)
            logger.info("%s %d: %s", "warm-up" if i < warmup else "run", i, ", ".join(
                f"{k} {v:.3f} s" for k, v in timings.items()))
            if i < warmup:
                continue
            for name in STAGES:
                if name in timings:
                    times[name].append(timings[name])
            totals.append(sum(timings.values()))
            peaks.append(peak)
    stages = {name: (None if not t else {"median_s": statistics.median(t), "min_s": min(t), "runs_s": t})
              for name, t in times.items()}
    return {
        "stages": stages,
        "export_steps": {name: statistics.median(t) for name, t in sub_times.items()},
        "floor": floor(pipe, image, export_bytes, fov=fov, seed=seed, resolution=resolution, faces=faces,
                       texture_size=texture_size),
        "total_median_s": statistics.median(totals),
        "peak_memory_mb": max(peaks),
        "faces": len(asset.mesh.faces),
        "fine_voxels": len(asset.voxels),
        "image_size": pipe.settings.image_size,
        "fine_resolution": asset.voxels.resolution,
        "fov_deg": None if fov is None else float(np.degrees(fov)),
        "runs": runs,
        "warmup": warmup,
        "export": {"faces": faces, "texture_size": texture_size, "device": export_device} if export else None,
        "machine": machine_info(pipe.device),
    }


def model_flops(pipe: Pixal3DPipeline, image: np.ndarray, **call_kwargs: object) -> int:
    """FLOPs of one pipeline call (matmuls, convolutions, attention: `torch.utils.flop_counter`), counted eagerly
    (CUDA graphs off for the count: a replayed graph is invisible to the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    graphs, pipe.cuda_graphs = pipe.cuda_graphs, False
    try:
        with FlopCounterMode(display=False) as counter:
            pipe(image, **call_kwargs)
    finally:
        pipe.cuda_graphs = graphs
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device | str, size: int = 4096, repeats: int = 10) -> float:
    """Measured dense matmul rate, FLOP/s: bf16 on CUDA, float32 on the CPU (the dtype the pipeline runs in)."""
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = size if device.type == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def floor(pipe: Pixal3DPipeline, image: np.ndarray, export_bytes: int | None, **call_kwargs: object) -> dict | None:
    """What no implementation can beat on this device: the model's FLOPs at the measured matmul rate, and the
    bytes the export must write (the GLB's size). None (logged) when the FLOP count fails: the timings still count."""
    try:
        flops, rate = model_flops(pipe, image, **call_kwargs), matmul_rate(pipe.device)
    except Exception as err:  # an op the counter cannot trace must not lose the whole benchmark
        logger.warning("could not count the model's FLOPs (%s: %s); no floor reported", type(err).__name__, err)
        return None
    return {"model_flops": flops, "matmul_flops_per_s": rate, "compute_floor_s": flops / rate,
            "export_bytes": export_bytes}


def format_table(result: dict[str, object]) -> str:
    """A Markdown table of a `run_bench` result: stage, median, min, share of the total."""
    total = result["total_median_s"]
    lines = ["| stage | median (s) | min (s) | share |", "|---|---|---|---|"]
    for name, t in result["stages"].items():
        if t is None:
            lines.append(f"| {name} | - | - | - |")
        else:
            lines.append(f"| {name} | {t['median_s']:.3f} | {t['min_s']:.3f} | {100 * t['median_s'] / total:.1f} % |")
    lines.append(f"| **total** | **{total:.3f}** | | |")
    for name, seconds in result.get("export_steps", {}).items():
        lines.append(f"| export: {name} | {seconds:.3f} | | {100 * seconds / total:.1f} % |")
    lines.append("")
    f = result.get("floor")
    if f:
        lines.append(f"floor: {f['model_flops'] / 1e9:.1f} GFLOP at a measured {f['matmul_flops_per_s'] / 1e12:.1f} "
                     f"TFLOP/s = {f['compute_floor_s'] * 1e3:.1f} ms of compute"
                     + (f"; the export writes {f['export_bytes'] / 2**20:.1f} MiB" if f["export_bytes"] else ""))
    lines.append(f"peak memory: {result['peak_memory_mb']:.0f} MiB "
                 f"({'CUDA max allocated' if str(result['machine']['device']).startswith('cuda') else 'process peak RSS'})"
                 f"; {result['fine_voxels']} fine voxels at R={result['fine_resolution']}, {result['faces']} faces; "
                 f"median of {result['runs']} runs after {result['warmup']} warm-up")
    return "\n".join(lines)
