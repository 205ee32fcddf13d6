"""Data-engine throughput (issue 4): view-aligned samples per second, voxelisation included.

    python bench/data_bench.py [--device cuda] [--workers N] [--samples M] [--size 512] [--resolution 256]
                               [--threads T] [--profile]

Each sample is one view of a procedural object (seeds 0.., cycling through the families): generate -> render at S
-> preprocess -> align -> voxelise at R_hr -> coarse occupancy (`make_sample`). `--workers 1` runs in this process
after one warm-up sample; `--workers N > 1` runs N 'spawn' processes (each with `--threads` torch threads, all on
`--device`) over the seeds and times the whole pool, start-up included. The default worker count is one per core
up to 12 on a CUDA host (the CPU-side steps then run in parallel while the GPU is shared) and 1 on the CPU.
Prints one Markdown table row.

`--profile` also prints the mean seconds per sample of each step (`pixal3d.data.samples.STEPS`), with CUDA
synchronised around every step, so its samples/s row reads a little lower than a run without it. Self-contained
(no stored data); stop early with `--seconds` (default 150) so a run stays under three minutes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time

import torch

from pixal3d.data.procedural import generate
from pixal3d.data.samples import STEPS, make_sample, timed, view_generator


def one_sample(job: tuple[int, int, int, str, bool]) -> tuple[int, dict[str, float] | None]:
    """Make the sample of seed `job[0]`; returns its voxel count and, when profiling, its step timings."""
    seed, size, resolution, device, profile = job
    timings: dict[str, float] | None = {} if profile else None
    asset_id = f"proc-{seed:08d}"
    with timed(timings, "generate", device):
        scene = generate(seed).scene
    sample = make_sample(scene, view_generator(asset_id, 0), size, resolution, 64,
                         asset_id=asset_id, device=device, timings=timings)
    return len(sample.voxels), timings


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
    parser.add_argument("--profile", action="store_true", help="print the mean time of each step")
    parser.add_argument("--seconds", type=float, default=150.0, help="stop starting new samples after this")
    args = parser.parse_args()
    workers = args.workers if args.workers is not None else default_workers(args.device)
    threads = args.threads or (1 if workers > 1 else torch.get_num_threads())
    jobs = [(seed, args.size, args.resolution, args.device, args.profile) for seed in range(args.samples)]
    done, voxels, total = 0, 0, {}
    if workers <= 1:
        torch.set_num_threads(threads)
        one_sample((100, args.size, args.resolution, args.device, False))  # warm-up (allocator, CUDA context)
        start = time.perf_counter()
        results = map(one_sample, jobs)
        pool = None
    else:
        start = time.perf_counter()
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(threads,))
        results = pool.imap_unordered(one_sample, jobs)
    for n, timings in results:
        voxels += n
        done += 1
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
    print("| device | workers | S | R_hr | samples | mean voxels | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({os.cpu_count()} cores, torch {torch.__version__}) | {workers} x {threads} threads | "
          f"{args.size} | {args.resolution} | {done} | {voxels // max(done, 1):,} | {elapsed:.1f} | "
          f"{done / elapsed:.3f} |")
    if args.profile:
        print_profile(total, done, elapsed, workers)


if __name__ == "__main__":
    main()
