"""Both export paths side by side (issue 18): timings with sub-steps, texel efficiency, colour and normal differences.

    python bench/gpu_export_bench.py --device cuda --faces 100000 --texture-size 2048 4096 --pipeline \
        --batch 64 -o out.json

Cases:
1. synthetic: a bumpy textured sphere voxelised at R (default 256), its dual-grid mesh (~200k faces) exported.
2. --pipeline: the default model on examples/ball.png (on --device), its `Asset.mesh` exported as `Asset.export`
   does (silhouette patches, image texels), plus the pipeline's own step times: image -> GLB on disk.
3. --batch N: `batch.generate_batch` over N seeds of the example image at 1024^2 textures: assets per second.

For each case and texture size: the CPU reference (`textured_mesh`, device "cpu": trimesh, fast-simplification,
xatlas, numpy; timed once) and the PyTorch path on --device (one warm-up, then the median of --runs), each with
its sub-steps; the GLB encode + write time of each (to a temporary folder, deleted); the share of atlas texels the
charts cover; and the two bakes compared at 20k surface points (colour in 1/255 steps, normal-map angle in
degrees). Prints Markdown and writes JSON (no GLBs are kept).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_bench import bumpy_sphere, machine  # noqa: E402

from pixal3d.geometry.dual_grid import mesh_to_voxels, normalize_to_unit_cube  # noqa: E402
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh  # noqa: E402
from pixal3d.geometry.export import ExportOptions, textured_mesh  # noqa: E402
from pixal3d.geometry.torch_export import export_textured  # noqa: E402
from pixal3d.geometry.torch_export.compare import (  # noqa: E402
    bake_error,
    compare_bakes,
    surface_truth,
    texel_efficiency,
)
from pixal3d.geometry.writers import WRITERS  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ball.png"


def timed_write(baked, folder: Path) -> float:
    start = time.perf_counter()
    path = WRITERS[".glb"](folder / "bench.glb", baked, "png", True, None)
    seconds = time.perf_counter() - start
    path.unlink()
    return seconds


def run_case(name: str, fine: trimesh.Trimesh, sampler, resolution: int, recolor, cleanup, args,
             folder: Path) -> list[dict]:
    rows = []
    points, _ = trimesh.sample.sample_surface(fine, 20_000, seed=0)
    truth = surface_truth(fine, 20_000, seed=1)
    for size in args.texture_size:
        options = ExportOptions(faces=args.faces, texture_size=size)
        steps: dict[str, float] = {}
        start = time.perf_counter()
        reference = textured_mesh(fine, sampler, options, cleanup, True, recolor, resolution, steps)
        cpu_s = time.perf_counter() - start
        cpu = {"bake_s": cpu_s, "steps": steps, "write_s": timed_write(reference, folder),
               "faces": len(reference.faces), "texel_efficiency": texel_efficiency(reference)}
        runs, sub = [], []
        for i in range(args.runs + 1):
            timings: dict[str, float] = {}
            start = time.perf_counter()
            baked = export_textured(fine, args.faces, size, args.device, cleanup, recolor, resolution,
                                    timings=timings)
            if i > 0:  # the first call is the warm-up
                runs.append(time.perf_counter() - start)
                sub.append(timings)
        gpu = {"bake_s": statistics.median(runs), "runs_s": runs,
               "steps": {k: statistics.median(t[k] for t in sub) for k in sub[0]},
               "write_s": timed_write(baked, folder), "faces": len(baked.faces),
               "texel_efficiency": texel_efficiency(baked)}
        row = {"case": name, "texture_size": size, "fine_faces": len(fine.faces), "cpu": cpu, "torch": gpu,
               "difference": compare_bakes(reference, baked, points)}
        cpu["error_vs_fine"], gpu["error_vs_fine"] = bake_error(reference, *truth), bake_error(baked, *truth)
        print_row(row)
        rows.append(row)
    return rows


def print_row(row: dict) -> None:
    cpu, gpu, diff = row["cpu"], row["torch"], row["difference"]
    print(f"\n### {row['case']}, {row['texture_size']}^2, {row['fine_faces']:,} fine faces\n")
    print("| path | faces | bake (s) | write (s) | texel efficiency |\n|---|---|---|---|---|")
    for label, r in (("CPU (xatlas, numpy)", cpu), (f"PyTorch ({ARGS.device})", gpu)):
        print(f"| {label} | {r['faces']:,} | {r['bake_s']:.3f} | {r['write_s']:.3f} | {r['texel_efficiency']:.3f} |")
    for label, r in (("CPU", cpu), ("PyTorch", gpu)):
        print(f"\n{label} steps: " + ", ".join(f"{k} {v:.3f} s" for k, v in r["steps"].items()))
    print(f"\ncolour |diff| (1/255): mean {diff['colour_mean']:.2f}, p95 {diff['colour_p95']:.2f}; "
          f"normal angle (deg): mean {diff['normal_mean_deg']:.2f}, p95 {diff['normal_p95_deg']:.2f}")
    for label, r in (("CPU", cpu), ("PyTorch", gpu)):
        e = r["error_vs_fine"]
        print(f"{label} vs the fine surface: colour mean {e['colour_mean']:.2f}, p95 {e['colour_p95']:.2f}; "
              f"normal angle mean {e['normal_mean_deg']:.1f}, median {e['normal_median_deg']:.1f} deg")


def synthetic(args, folder: Path) -> list[dict]:
    radius = float(np.clip(np.sqrt(100_000 / (1.5 * args.resolution**2 * 4 * np.pi)), 0.26, 0.4))  # ~100k voxels
    sphere = normalize_to_unit_cube(bumpy_sphere(200_000, radius), margin=0.5 - radius)
    voxels = mesh_to_voxels(sphere, args.resolution)
    fine = voxels_to_mesh(voxels)
    return run_case(f"synthetic sphere R={args.resolution}", fine, partial(sample_attributes, voxels),
                    args.resolution, None, None, args, folder)


def pipeline_case(args, folder: Path) -> tuple[list[dict], dict]:
    from pixal3d.asset import texel_recolor
    from pixal3d.geometry.export import vertex_attribute_sampler
    pipe = load(args)
    asset = None
    for _ in range(2):  # warm-up (CUDA graphs), then the timed call
        start = time.perf_counter()
        asset = pipe(str(EXAMPLE), seed=0, faces=args.faces, texture_size=args.texture_size[0])
        generate_s = time.perf_counter() - start
    start = time.perf_counter()
    asset.export(folder / "ball.glb", device="auto")
    export_s = time.perf_counter() - start
    whole = {"pipeline_s": generate_s, "steps": asset.timings, "export_s": export_s,
             "image_to_glb_s": generate_s + export_s, "texture_size": args.texture_size[0]}
    print(f"\n### image -> GLB on disk ({args.device}, export device auto, {args.texture_size[0]}^2): "
          f"{whole['image_to_glb_s']:.3f} s (pipeline {generate_s:.3f} s, export {export_s:.3f} s)")
    recolor = texel_recolor(asset.mesh, asset.image, asset.camera, asset.image_texels) if asset.image_texels else None
    rows = run_case("pipeline examples/ball.png", asset.mesh, vertex_attribute_sampler(asset.mesh),
                    asset.voxels.resolution, recolor, asset.cleanup, args, folder)
    return rows, whole


def batch_case(args, folder: Path) -> dict:
    from pixal3d.batch import generate_batch
    pipe = load(args)
    options = ExportOptions(faces=args.faces, texture_size=1024, device="auto")
    list(generate_batch(pipe, [str(EXAMPLE)], [folder / "warm.glb"], options, seed=0))
    images = [str(EXAMPLE)] * args.batch
    outputs = [folder / f"b{i}.glb" for i in range(args.batch)]
    start = time.perf_counter()
    for item in generate_batch(pipe, images, outputs, options, seed=0):
        item.output.unlink()
    seconds = time.perf_counter() - start
    result = {"images": args.batch, "texture_size": 1024, "seconds": seconds, "assets_per_s": args.batch / seconds}
    print(f"\n### batch of {args.batch} at 1024^2: {seconds:.2f} s, {result['assets_per_s']:.2f} assets/s")
    return result


def load(args):
    """The default model (or `--random-weights micro|tiny`, to try this script quickly) on --device."""
    from pixal3d.pipeline import Pixal3DPipeline

    if args.random_weights:
        pipe = Pixal3DPipeline.from_config(args.random_weights)
    else:
        pipe = Pixal3DPipeline.from_pretrained("default")
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--texture-size", type=int, nargs="+", default=[2048])
    parser.add_argument("--resolution", type=int, default=256, help="voxel resolution of the synthetic case")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of the PyTorch path (after one warm-up)")
    parser.add_argument("--pipeline", action="store_true", help="also run the default model on examples/ball.png")
    parser.add_argument("--batch", type=int, default=0, help="also time a batch of this many images at 1024^2")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--random-weights", choices=["micro", "tiny"], default=None,
                        help="random weights instead of the default model (a quick check of this script)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="JSON file")
    ARGS = args = parser.parse_args()
    print(f"Machine: {machine()}; device {args.device}"
          + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else ""))
    result: dict = {"machine": machine(), "device": args.device, "faces": args.faces, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_synthetic:
            result["cases"] += synthetic(args, Path(tmp))
        if args.pipeline:
            rows, result["image_to_glb"] = pipeline_case(args, Path(tmp))
            result["cases"] += rows
        if args.batch:
            result["batch"] = batch_case(args, Path(tmp))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.output}")


ARGS: argparse.Namespace


if __name__ == "__main__":
    main()
