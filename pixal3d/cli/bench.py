"""`pixal3d bench`: time and peak memory of each inference stage."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from pixal3d.cli.common import add_model_options, load_pipeline
from pixal3d.errors import InputError


# ----------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time and peak memory of each inference stage (warm-up, then the median of several runs)",
        description="Run the pipeline on a fixed procedural input: one warm-up, then RUNS timed runs; print a "
        "table of per-stage median times (preprocess, encode, camera, structure, shape, texture, decode, export) and "
        "peak memory, and write them as JSON.",
    )
    add_model_options(p, ["micro", "tiny"])
    p.add_argument("--resolution", type=int, default=None,
                   help="fine voxel resolution; each checkpoint decodes at one (default: the model's)")
    p.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--export", action="store_true", help="also time the GLB export (bake)")
    p.add_argument("--faces", type=int, default=100_000, help="export face budget (default 100000)")
    p.add_argument("--texture-size", type=int, default=2048, help="export texture side (default 2048)")
    p.add_argument("--export-device", choices=["cpu", "cuda", "auto", "torch-cpu"], default="auto",
                   help="export path: auto (default: the PyTorch path on a GPU, else the CPU path), cpu (xatlas + "
                        "numpy, the reference), cuda, torch-cpu (the PyTorch path on the CPU)")
    p.add_argument("--fov", type=float, default=None,
                   help="input FoV in DEGREES (default: estimated, so the camera stage does its real work)")
    p.add_argument("-o", "--output", type=Path, default=Path("bench.json"), help="JSON file (default bench.json)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from pixal3d.atomic import write_json_atomic
    from pixal3d.bench import bench_image, format_table, run_bench

    if args.fov is not None and not 0 < args.fov < 180:
        raise InputError(f"--fov is in degrees and must be in (0, 180), got {args.fov}")
    pipe = load_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    result = run_bench(pipe, bench_image(pipe.settings.image_size), runs=args.runs, warmup=args.warmup,
                       export=args.export, fov=None if args.fov is None else math.radians(args.fov),
                       resolution=args.resolution, faces=args.faces, texture_size=args.texture_size,
                       export_device=args.export_device)
    result["model"] = f"random {args.random_weights}" if args.random_weights else (args.model or "default")
    write_json_atomic(args.output, result)
    print(format_table(result))
    print(f"wrote {args.output}")
    return 0
