"""Throughput of the sparse lift (issue 2): N active voxels, 4 feature maps, 256 channels in total.

Usage: python bench/lift_bench.py [--voxels 100000] [--batch 1] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
Prints one Markdown table row per configuration; warm-up, then the median of several runs. With `--batch B` the
voxels are spread over B batch elements, each with its own camera (FoVs from 30 to 60 degrees), as in a training
batch; `--no-dense` skips the dense path.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from pixal3d.camera import Camera
from pixal3d.lift import lift_dense, lift_sparse

# (channels, side): the raw RGBA image at S, then /4, /8, /16 feature maps: 4 + 128 + 64 + 60 = 256 channels.
MAPS = [(4, 512), (128, 128), (64, 64), (60, 32)]


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--voxels", type=int, default=100_000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="batch elements, one camera each")
    parser.add_argument("--no-dense", action="store_true", help="time only the sparse path")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    batch, r = args.batch, args.resolution
    maps = [torch.randn(batch, c, s, s, generator=gen).to(device, dtype) for c, s in MAPS]
    # (batch, voxel) pairs drawn without replacement from the B * R^3 grid, sorted by batch element like a batch
    flat = torch.randperm(batch * r**3, generator=gen)[: args.voxels].sort().values
    b, v = flat // r**3, flat % r**3
    coords = torch.stack([b, v // (r * r), (v // r) % r, v % r], dim=1).to(device)
    cams = [Camera.from_degrees(30.0 + 30.0 * i / max(batch - 1, 1), size=512) for i in range(batch)]
    sparse_s = _time(lambda: lift_sparse(maps, cams, coords, r), args.repeats, device)
    dense_s = None if args.no_dense else _time(lambda: lift_dense(maps, cams, r), args.repeats, device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print("| path | batch | voxels | channels | dtype | device | median time | voxels/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| sparse | {batch} | {coords.shape[0]:,} | 256 (+1 mask) | {args.dtype} | {machine} | {sparse_s * 1e3:.1f} ms | {coords.shape[0] / sparse_s / 1e6:.2f} M |")
    if dense_s is not None:
        n = batch * r**3
        print(f"| dense {r}^3 | {batch} | {n:,} | 256 (+1 mask) | {args.dtype} | {machine} | {dense_s * 1e3:.1f} ms | {n / dense_s / 1e6:.2f} M |")


if __name__ == "__main__":
    main()
