"""Data-engine throughput (issue 4): view-aligned samples per second, voxelisation included.

    python bench/data_bench.py [--device cuda] [--workers N] [--samples M] [--size 512] [--resolution 256]

Each sample is one view of a procedural object (seeds 0.., cycling through the families): generate -> render at S
-> preprocess -> align -> voxelise at R_hr -> coarse occupancy (`make_sample`). `--workers 1` runs in this process
after one warm-up sample; `--workers N > 1` runs N 'spawn' processes (each with cores / N torch threads, all on
`--device`) over the seeds and times the whole pool, start-up included. Prints one Markdown table row.
Self-contained (no stored data); stop early with `--seconds` (default 150) so a run stays under three minutes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import time

import torch

from pixal3d.data.procedural import generate
from pixal3d.data.samples import make_sample, view_generator


def one_sample(job: tuple[int, int, int, str]) -> int:
    """Make the sample of seed `job[0]`; returns its voxel count."""
    seed, size, resolution, device = job
    asset_id = f"proc-{seed:08d}"
    sample = make_sample(generate(seed).scene, view_generator(asset_id, 0), size, resolution, 64,
                         asset_id=asset_id, device=device)
    return len(sample.voxels)


def _init(threads: int) -> None:
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=150.0, help="stop starting new samples after this")
    args = parser.parse_args()
    jobs = [(seed, args.size, args.resolution, args.device) for seed in range(args.samples)]
    done, voxels = 0, 0
    if args.workers <= 1:
        one_sample((100, args.size, args.resolution, args.device))  # warm-up (allocator, CUDA context)
        start = time.perf_counter()
        for job in jobs:
            voxels += one_sample(job)
            done += 1
            if time.perf_counter() - start > args.seconds:
                break
    else:
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        start = time.perf_counter()
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.workers, initializer=_init, initargs=(threads,)) as pool:
            for n in pool.imap_unordered(one_sample, jobs):
                voxels += n
                done += 1
                if time.perf_counter() - start > args.seconds:
                    pool.terminate()
                    break
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print("| device | workers | S | R_hr | samples | mean voxels | seconds | samples/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {device} ({os.cpu_count()} cores, torch {torch.__version__}) | {args.workers} | {args.size} | "
          f"{args.resolution} | {done} | {voxels // max(done, 1):,} | {elapsed:.1f} | {done / elapsed:.3f} |")


if __name__ == "__main__":
    main()
