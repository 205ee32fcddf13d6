"""Data-engine throughput (issue 4): view-aligned samples per second, voxelisation included.

    python bench/data_bench.py [--device cuda] [--workers N] [--samples M] [--size 512] [--resolution 256]
                               [--threads T] [--views K] [--batch B] [--render-batch V] [--batch-triangles T]
                               [--profile] [--count-ops]

Each sample is one view of a procedural object (seeds 0.., cycling through the families): generate -> render at S
-> preprocess -> align -> voxelise at R_hr -> coarse occupancy. With `--views K` (default 1) each job is one asset
with K views made as a shard unit (`make_unit`: the asset generated and converted once, the K views voxelised in
one batched pass); samples/s counts views. With `--batch B` (default `engine_batch`: 8 on a GPU, 1 on the CPU)
each job is B such assets made by one `make_units` call: on a GPU their views are rendered `--render-batch` at a
time (default `RENDER_BATCH_CUDA`), and the views of all B assets are voxelised in one pass (`--batch-triangles`
sub-triangles per kernel batch, default `BATCH_TRIANGLES_CUDA`) with their coarse occupancy in one `unique`, so
kernel launches and host syncs are shared by B x K samples. `--workers 1` runs in this process after one warm-up
sample; `--workers N > 1` runs N 'spawn' processes (each with `--threads` torch threads, all on `--device`, set
up like the data writer's workers: `gpu_worker_setup`) over the seeds and times the whole pool, start-up
included. The default worker count is one per core up to 12 on a CUDA host (the CPU-side steps then run in
parallel while the GPU is shared) and 1 on the CPU.
Prints one Markdown table row.

`--profile` also prints the mean seconds per sample of each step (`pixal3d.data.samples.STEPS`), with CUDA
synchronised around every step, so its samples/s row reads a little lower than a run without it. Self-contained
(no stored data); stop early with `--seconds` (default 150) so a run stays under three minutes.

`--count-ops` (one in-process worker) also prints the aten ops and host syncs per sample, counted by a torch
dispatch mode over the first job (the first two with one sample per job): on a GPU every op is about one kernel
launch, so this counts launches on any machine. Ops of a batched pass are attributed to its samples evenly (total
/ samples); "render" counts `render_mesh`, "voxelise" everything inside `meshes_to_voxels`, "coarse" the coarse
occupancy (`coarse_occupancy`); "all" includes host-side steps (procedural generation, aiming), whose ops run on
the CPU even with `--device cuda`.

The table's last column is the peak memory of one worker: `torch.cuda.max_memory_reserved` on CUDA (what the
caching allocator held), the process's peak RSS on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing
import os
import platform
import resource
import time
import unittest.mock

import torch

from pixal3d.data import align as align_module
from pixal3d.data import samples as samples_module
from pixal3d.data import units as units_module
from pixal3d.data.samples import STEPS
from pixal3d.data.shards import gpu_worker_setup
from pixal3d.data.units import SampleOptions, WorkUnit, engine_batch, make_units
from pixal3d.geometry import dual_grid


def one_job(job: tuple[tuple[int, ...], int, int, int, str, bool]) -> tuple[int, int, dict[str, float] | None, int]:
    """Make the samples of asset seeds `job[0]` with `job[3]` views each in one `make_units` call.

    Returns:
        (samples, voxels, step timings, peak bytes of this worker so far: CUDA reserved or CPU RSS).
    """
    seeds, size, resolution, views, device, profile = job
    timings: dict[str, float] | None = {} if profile else None
    units = [WorkUnit(f"procedural:{seed}", f"proc-{seed:08d}", (0, views)) for seed in seeds]
    samples = [s for r in make_units(units, SampleOptions(size, resolution, 64), device, timings=timings)
               for s in r.samples]
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_reserved(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return len(samples), sum(len(s.voxels) for s in samples), timings, peak


def _init(threads: int, render_batch: int | None = None, batch_triangles: int | None = None) -> None:
    """Worker set-up (as the data writer's workers, `gpu_worker_setup`): torch threads, and the GPU's render and
    voxeliser batch sizes when given."""
    gpu_worker_setup()
    torch.set_num_threads(threads)
    if render_batch:
        align_module.RENDER_BATCH_CUDA = render_batch
    if batch_triangles:
        dual_grid.BATCH_TRIANGLES_CUDA = batch_triangles


def default_workers(device: str) -> int:
    """One worker per core up to 12 on a CUDA host (keeps a few cores for the driver and the parent), else 1."""
    return min(os.cpu_count() or 1, 12) if device.startswith("cuda") else 1


def print_profile(total: dict[str, float], done: int, elapsed: float, workers: int) -> None:
    """Mean seconds per sample per step, their share, and the summed step time against the wall clock."""
    summed = sum(total.values())
    print()
    print("| step | ms / sample | share |")
    print("|---|---|---|")
    for step in STEPS:
        seconds = total.get(step, 0.0)
        print(f"| {step} | {1000 * seconds / max(done, 1):.1f} | {100 * seconds / max(summed, 1e-12):.1f} % |")
    print(f"| all steps | {1000 * summed / max(done, 1):.1f} | wall {1000 * elapsed * workers / max(done, 1):.1f} "
          f"ms x worker / sample |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="default: min(cores, 12) on cuda, 1 on cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker; default 1 with several workers, all cores with one")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--views", type=int, default=1, help="views per asset, voxelised in one batch")
    parser.add_argument("--batch", type=int, default=None,
                        help="assets per job, all their views rendered and voxelised together (default: "
                        "pixal3d.data.units.engine_batch: 8 on a GPU, 1 on the CPU)")
    parser.add_argument("--profile", action="store_true", help="print the mean time of each step")
    parser.add_argument("--render-batch", type=int, default=None,
                        help="views per render pass on a GPU (default: pixal3d.data.samples.RENDER_BATCH_CUDA)")
    parser.add_argument("--batch-triangles", type=int, default=None,
                        help="voxeliser sub-triangles per batch of kernels on a GPU, a multiple of CHUNK_TRIANGLES "
                        "(default: pixal3d.geometry.dual_grid.BATCH_TRIANGLES_CUDA)")
    parser.add_argument("--count-ops", action="store_true", help="count aten ops and host syncs per sample")
    parser.add_argument("--gpu-path", action="store_true",
                        help="on the CPU, render and voxelise as on a GPU: RENDER_BATCH_CUDA views per render pass, "
                        "all material lookups fused into one call and "
                        "BATCH_TRIANGLES_CUDA sub-triangles per batch of kernels (for --count-ops: the GPU's launch "
                        "counts; attributes then differ from the CPU path's in the last bits)")
    parser.add_argument("--seconds", type=float, default=150.0, help="stop starting new samples after this")
    parser.add_argument("--stream", type=int, default=0, metavar="BATCH",
                        help="instead: time what training sees on the fly, collated batches of BATCH samples from "
                        "the DataLoader of `pixal3d.training.data.ProceduralSource` (--workers loader workers on "
                        "--device, --batch positions per worker job), start-up included")
    parser.add_argument("--main-threads", type=int, default=None,
                        help="with --stream: torch threads of this (the training) process, which collates the "
                        "batches (default: ProceduralSource's, the cores the loader workers leave free)")
    args = parser.parse_args()
    workers = args.workers if args.workers is not None else default_workers(args.device)
    threads = args.threads or (1 if workers > 1 else torch.get_num_threads())
    if (args.batch is not None and args.batch < 1) or args.views < 1:
        parser.error(f"--batch and --views must be >= 1, got {args.batch} and {args.views}")
    args.batch = engine_batch(args.batch, args.device)
    if args.stream:
        stream_rate(args, workers)
        return
    assets = -(-args.samples // args.views)
    jobs = [(tuple(range(first, min(first + args.batch, assets))), args.size, args.resolution, args.views,
             args.device, args.profile) for first in range(0, assets, args.batch)]
    done, voxels, total, peak = 0, 0, {}, 0
    if workers <= 1:
        _init(threads, args.render_batch, args.batch_triangles)
        one_job(((100,), args.size, args.resolution, args.views, args.device, False))  # warm-up (allocator, CUDA)
        if args.count_ops:
            if args.gpu_path:
                materials = dual_grid.part_materials
                dual_grid.part_materials = lambda *a, **k: dataclasses.replace(materials(*a, **k), fused=True)
                samples_module.meshes_to_voxels = functools.partial(
                    samples_module.meshes_to_voxels, batch_triangles=dual_grid.BATCH_TRIANGLES_CUDA)
                units_module.align_views = functools.partial(
                    units_module.align_views, render_batch=align_module.RENDER_BATCH_CUDA)
            count_ops(jobs)
        start = time.perf_counter()
        results = map(one_job, jobs)
        pool = None
    else:
        start = time.perf_counter()
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init,
                                                        initargs=(threads, args.render_batch, args.batch_triangles))
        results = pool.imap_unordered(one_job, jobs)
    for n, v, timings, worker_peak in results:
        voxels += v
        done += n
        peak = max(peak, worker_peak)
        for step, seconds in (timings or {}).items():
            total[step] = total.get(step, 0.0) + seconds
        if time.perf_counter() - start > args.seconds:
            break
    if pool is not None:
        pool.terminate()
    elif args.device.startswith("cuda"):
        torch.cuda.synchronize()  # only this process ran kernels (workers finished theirs before returning)
    elapsed = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    memory = "GPU reserved" if args.device.startswith("cuda") else "RSS"
    render_batch = args.render_batch or align_module.RENDER_BATCH_CUDA
    batch_triangles = args.batch_triangles or dual_grid.BATCH_TRIANGLES_CUDA
    gpu = f"{render_batch} / {batch_triangles // dual_grid.CHUNK_TRIANGLES}" if args.device != "cpu" else "- / -"
    print(f"| device | workers | S | R_hr | views / asset | assets / job | GPU render batch / voxeliser chunks "
          f"| samples | mean voxels | seconds | samples/s | peak {memory} / worker |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({os.cpu_count()} cores, torch {torch.__version__}) | {workers} x {threads} threads | "
          f"{args.size} | {args.resolution} | {args.views} | {args.batch} | {gpu} | {done} | "
          f"{voxels // max(done, 1):,} | {elapsed:.1f} | {done / elapsed:.3f} | {peak / 2**30:.2f} GiB |")
    if args.profile:
        print_profile(total, done, elapsed, workers)


def stream_rate(args: argparse.Namespace, workers: int) -> None:
    """Print samples/s of the training data path on the fly: `ProceduralSource` batches (DataLoader workers
    making samples, shared-memory transfer to this process, `collate_samples`), start-up included."""
    from pixal3d.training.config import DataConfig
    from pixal3d.training.data import ProceduralSource

    cuda = args.device.startswith("cuda")
    config = DataConfig(kind="procedural", image_size=args.size, resolution=args.resolution, views=args.views,
                        workers=workers if workers > 1 else 0, engine_device="cuda" if cuda else "cpu",
                        engine_batch=args.batch)
    start = time.perf_counter()
    done = batches = 0
    for batch in ProceduralSource(config, args.stream, device=args.device):
        if args.main_threads:
            torch.set_num_threads(args.main_threads)
        done += len(batch["fov"])
        batches += 1
        if done >= args.samples or time.perf_counter() - start > args.seconds:
            break
    elapsed = time.perf_counter() - start
    device = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print("| device | loader workers | main threads | S | R_hr | views / asset | positions / job | batch | batches "
          "| samples | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({os.cpu_count()} cores, torch {torch.__version__}) | {config.workers} | "
          f"{torch.get_num_threads()} | {args.size} | "
          f"{args.resolution} | {args.views} | {args.batch} | {args.stream} | {batches} | {done} | {elapsed:.1f} | "
          f"{done / elapsed:.3f} |")


def count_ops(jobs: list[tuple]) -> None:
    """Print aten ops and host syncs (`.item()`, `.tolist()`, `nonzero`, ...) per sample: all, render, voxelise.

    Counts the first job, or the first two when a job makes one sample; a batched job's ops are shared by its
    samples, so per sample = total / samples.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.unique_consecutive.default",
               "aten._unique2.default", "aten.repeat_interleave.Tensor", "aten.bincount.default"}

    counts = {"all": [0, 0], "render": [0, 0], "voxelise": [0, 0], "coarse": [0, 0]}
    inside = []

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for key in ("all", *inside):
                counts[key][0] += 1
                counts[key][1] += str(func) in syncing
            return func(*args, **(kwargs or {}))

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            inside.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                inside.pop()
        return wrapper

    samples = counted_jobs = 0
    with (unittest.mock.patch.object(samples_module, "meshes_to_voxels",
                                     counted("voxelise", samples_module.meshes_to_voxels)),
          unittest.mock.patch.object(align_module, "render_meshes",
                                     counted("render", align_module.render_meshes)),
          unittest.mock.patch.object(samples_module, "coarse_occupancy",
                                     counted("coarse", samples_module.coarse_occupancy)),
          Counter()):
        for job in jobs:
            samples += one_job(job)[0]
            counted_jobs += 1
            if samples >= 2:
                break
    for key, (ops, syncs) in counts.items():
        print(f"{key}: {ops / samples:,.0f} ops and about {syncs / samples:,.1f} host syncs per sample "
              f"({samples} samples in {counted_jobs} jobs)")


if __name__ == "__main__":
    main()
