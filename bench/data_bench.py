"""Data-engine throughput (issue 4): view-aligned samples per second, voxelisation included.

    python bench/data_bench.py [--device cuda] [--workers N] [--samples M] [--size 512] [--resolution 256]
                               [--threads T] [--views K] [--profile] [--count-ops]

Each sample is one view of a procedural object (seeds 0.., cycling through the families): generate -> render at S
-> preprocess -> align -> voxelise at R_hr -> coarse occupancy. With `--views K` (default 1) each job is one asset
with K views made as a shard unit (`make_unit`: the asset generated and converted once, the K views voxelised in
one batched pass); samples/s counts views. `--workers 1` runs in this process
after one warm-up sample; `--workers N > 1` runs N 'spawn' processes (each with `--threads` torch threads, all on
`--device`) over the seeds and times the whole pool, start-up included. The default worker count is one per core
up to 12 on a CUDA host (the CPU-side steps then run in parallel while the GPU is shared) and 1 on the CPU.
Prints one Markdown table row.

`--profile` also prints the mean seconds per sample of each step (`pixal3d.data.samples.STEPS`), with CUDA
synchronised around every step, so its samples/s row reads a little lower than a run without it. Self-contained
(no stored data); stop early with `--seconds` (default 150) so a run stays under three minutes.

`--count-ops` (one in-process worker) also prints the aten ops and host syncs per sample, counted by a torch
dispatch mode: on a GPU every op is about one kernel launch, so this counts launches on any machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time
import unittest.mock

import torch

from pixal3d.data import samples as samples_module
from pixal3d.data.samples import STEPS
from pixal3d.data.shards import SampleOptions, WorkUnit, make_unit
from pixal3d.geometry.dual_grid import mesh_to_voxels_batch


def one_job(job: tuple[int, int, int, int, str, bool]) -> tuple[int, int, dict[str, float] | None]:
    """Make the samples of asset seed `job[0]` with `job[3]` views; returns (samples, voxels, step timings)."""
    seed, size, resolution, views, device, profile = job
    timings: dict[str, float] | None = {} if profile else None
    unit = WorkUnit(f"procedural:{seed}", f"proc-{seed:08d}", (0, views))
    samples, _ = make_unit(unit, SampleOptions(size, resolution, 64), device, timings=timings)
    return len(samples), sum(len(s.voxels) for s in samples), timings


def _init(threads: int) -> None:
    torch.set_num_threads(threads)


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
    parser.add_argument("--profile", action="store_true", help="print the mean time of each step")
    parser.add_argument("--count-ops", action="store_true", help="count aten ops and host syncs per sample")
    parser.add_argument("--seconds", type=float, default=150.0, help="stop starting new samples after this")
    args = parser.parse_args()
    workers = args.workers if args.workers is not None else default_workers(args.device)
    threads = args.threads or (1 if workers > 1 else torch.get_num_threads())
    assets = -(-args.samples // args.views)
    jobs = [(seed, args.size, args.resolution, args.views, args.device, args.profile) for seed in range(assets)]
    done, voxels, total = 0, 0, {}
    if workers <= 1:
        torch.set_num_threads(threads)
        one_job((100, args.size, args.resolution, args.views, args.device, False))  # warm-up (allocator, CUDA)
        if args.count_ops:
            count_ops(jobs, args.device)
        start = time.perf_counter()
        results = map(one_job, jobs)
        pool = None
    else:
        start = time.perf_counter()
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(threads,))
        results = pool.imap_unordered(one_job, jobs)
    for n, v, timings in results:
        voxels += v
        done += n
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
    print("| device | workers | S | R_hr | views / asset | samples | mean voxels | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({os.cpu_count()} cores, torch {torch.__version__}) | {workers} x {threads} threads | "
          f"{args.size} | {args.resolution} | {args.views} | {done} | {voxels // max(done, 1):,} | {elapsed:.1f} | "
          f"{done / elapsed:.3f} |")
    if args.profile:
        print_profile(total, done, elapsed, workers)


def count_ops(jobs: list[tuple], device: str, assets: int = 2) -> None:
    """Print aten ops and host syncs (`.item()`, `.tolist()`, `nonzero`, copies to the CPU) per sample."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.unique_consecutive.default",
               "aten._unique2.default", "aten.repeat_interleave.Tensor", "aten.bincount.default"}

    counts = {"all": [0, 0], "voxelise": [0, 0]}
    inside = []

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for key in ("all", *inside):
                counts[key][0] += 1
                counts[key][1] += str(func) in syncing
            return func(*args, **(kwargs or {}))

    def voxelise(*args, **kwargs):
        inside.append("voxelise")
        try:
            return mesh_to_voxels_batch(*args, **kwargs)
        finally:
            inside.pop()

    samples = 0
    with unittest.mock.patch.object(samples_module, "mesh_to_voxels_batch", voxelise), Counter():
        for job in jobs[:assets]:
            samples += one_job(job)[0]
    for key, (ops, syncs) in counts.items():
        print(f"{key}: {ops / samples:,.0f} ops and about {syncs / samples:,.0f} host syncs per sample "
              f"({samples} samples)")


if __name__ == "__main__":
    main()
