"""`pixal3d eval`, `bench`, `serve` and `demo`: commands that run a whole pipeline."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from pixal3d.cli.common import add_model_options, device_from_arg, load_pipeline
from pixal3d.errors import InputError


# ------------------------------------------------------------------------------------------------------ eval
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score the pipeline on held-out assets: geometry, silhouettes, renders, FoV; JSON + Markdown report",
        description="For each held-out asset (mesh files in a folder, or a procedural seed range), render VIEWS "
        "condition views with known random cameras (FoV 20-60 degrees), run the pipeline with the true FoV and/or "
        "its own estimate, and compare with the ground truth in the view-aligned volume frame. Writes "
        "REPORT_DIR/metrics.json, REPORT_DIR/report.md and REPORT_DIR/images/. Metrics: docs/evaluation.md.",
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, default=None, help="folder of held-out .glb/.gltf/.obj files")
    data.add_argument("--procedural", default=None, metavar="START:END",
                      help="procedural objects of seeds START..END-1 (pixal3d data procedural)")
    data.add_argument("--merge", type=Path, nargs="+", default=None, metavar="REPORT_DIR",
                      help="instead of evaluating: merge these report folders (same model and options, e.g. seed "
                      "ranges run as separate jobs) into -o")
    p.add_argument("--views", type=int, default=4, help="condition views per asset (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder (created)")
    add_model_options(p, ["micro", "micro64", "tiny"])
    p.add_argument("--oracle", nargs="+", default=None, metavar="VARIANT",
                   help="score these variants instead of the full cascade alone: gt, vae-structure, vae-shape, "
                   "vae-texture, gt-structure, gt-shape, full, or 'all' (the ceilings; oracle variants use the true "
                   "FoV and need a model whose R_hr the voxeliser makes: not --random-weights micro, use micro64); "
                   "also writes REPORT_DIR/ceilings.md and ceilings.json")
    p.add_argument("--fov-mode", choices=["true", "estimated", "both"], default="both",
                   help="run the pipeline with the true FoV, its estimated FoV, or both (default both)")
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    p.add_argument("--image-size", type=int, default=256,
                   help="side of the condition image and of the metric renders, pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the views and of the sampling noise (default 0)")
    p.add_argument("--no-silhouette", action="store_true", help="run the pipeline without the silhouette rule")
    p.add_argument("--no-image-texels", action="store_true", help="run the pipeline without the image texels")
    p.set_defaults(func=_run_eval)


def _procedural_range(text: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--procedural must be START:END (integers), got {text!r}") from None
    return start, end


def _run_eval(args: argparse.Namespace) -> int:
    from pixal3d.eval.report import evaluate, merge_reports
    from pixal3d.eval.runner import EvalOptions, folder_assets, procedural_assets

    if args.merge is not None:
        data = merge_reports(args.merge, args.output)
        _print_aggregate(data)
        print(f"wrote {args.output / 'metrics.json'} and {args.output / 'report.md'}")
        if set(data["options"].get("variants", ["full"])) != {"full"}:
            _write_ceilings(args.output, f"merged {len(data['assets'])} assets", data)
        return 0

    if args.views < 1 or args.samples < 1 or args.image_size < 16:
        raise InputError(f"need --views >= 1, --samples >= 1, --image-size >= 16; got {args.views}, "
                         f"{args.samples}, {args.image_size}")
    modes = ("true", "estimated") if args.fov_mode == "both" else (args.fov_mode,)
    options = EvalOptions(views=args.views, samples=args.samples, image_size=args.image_size, fov_modes=modes,
                          seed=args.seed, silhouette=not args.no_silhouette,
                          image_texels=not args.no_image_texels, variants=oracle_variants(args.oracle))
    assets = folder_assets(args.data) if args.data is not None else procedural_assets(*_procedural_range(args.procedural))
    pipe = load_pipeline(args)
    model = f"random {args.random_weights}" if args.random_weights else (args.model or "default")
    data = evaluate(pipe, assets, args.output, options, {"model": model, "command": " ".join(sys.argv)})
    _print_aggregate(data)
    print(f"wrote {args.output / 'metrics.json'} and {args.output / 'report.md'}")
    if args.oracle is not None:
        _write_ceilings(args.output, _set_name(args), data)
    return 0


def _write_ceilings(output: Path, name: str, data: dict) -> None:
    from pixal3d.eval.ceilings import write_ceilings

    md, js = write_ceilings(output, {name: data})
    print(f"wrote {md} and {js}")


def oracle_variants(names: list[str] | None) -> tuple[str, ...]:
    """`--oracle` -> `EvalOptions.variants`: None = the full cascade only, "all" = every variant."""
    from pixal3d.eval.oracles import VARIANTS

    if names is None:
        return ("full",)
    if "all" in names:
        return VARIANTS
    return tuple(names)


def _set_name(args: argparse.Namespace) -> str:
    if args.data is not None:
        return f"folder {args.data}"
    return f"procedural seeds {args.procedural}"


def _print_aggregate(data: dict) -> None:
    """One line per run key (FoV mode), rounded as docs/results.md rounds (F-score 3 decimals, Chamfer-L1 4),
    then the other headline figures the run has: means, and medians for the mesh topology."""

    def rounded(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    extras = (("volume_iou_64", "mean", "volume IoU", 3), ("silhouette_iou", "mean", "silhouette IoU", 3),
              ("input_psnr", "mean", "input PSNR", 2), ("base_color_psnr", "mean", "base-colour PSNR", 2),
              ("depth_delta1", "mean", "depth delta<1.25", 3), ("components", "median", "median components", 1),
              ("boundary_edge_ratio", "median", "median boundary-edge ratio", 4))
    for mode, stats in data["aggregate"].items():
        f05, cd = stats.get("fscore@0.05", {}).get("mean"), stats.get("chamfer_l1", {}).get("mean")
        label = f"{mode} FoV" if mode in ("true", "estimated") else mode  # oracle runs: the variant's name
        line = (f"{label}: {stats['runs']} runs, {stats['failures']} failed; mean F-score@0.05 {rounded(f05, 3)}, "
                f"Chamfer-L1 {rounded(cd, 4)}")
        more = [f"{label} {rounded(stats[key].get(which), digits)}" for key, which, label, digits in extras
                if key in stats]
        print(line + ("; " + ", ".join(more) if more else ""))


# ----------------------------------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time and peak memory of each inference stage (warm-up, then the median of several runs)",
        description="Run the pipeline on a fixed procedural input: one warm-up, then RUNS timed runs; print a "
        "table of per-stage median times (preprocess, encode, fov, structure, shape, texture, decode, export) and "
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
                   help="input FoV in DEGREES (default: estimated, so the fov stage does its real work)")
    p.add_argument("-o", "--output", type=Path, default=Path("bench.json"), help="JSON file (default bench.json)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:

    from pixal3d.bench import bench_image, format_table, run_bench
    from pixal3d.config import write_json_atomic

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


# -------------------------------------------------------------------------------------------------- serve, demo
def _add_server_options(p: argparse.ArgumentParser, port: int) -> None:
    add_model_options(p, ["micro", "tiny"])
    p.add_argument("--low-vram", action="store_true", help="keep only the running step's weights on the GPU")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")


def _pipeline_factory(args: argparse.Namespace) -> Callable[[], object]:
    from functools import partial

    from pixal3d.serve import build_pipeline

    return partial(build_pipeline, model=args.model, random_weights=args.random_weights,
                   allow_download=args.allow_download, device=device_from_arg(args.device),
                   cuda_graphs=args.cuda_graphs)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="REST server: POST an image, poll the job, download the GLB (FastAPI + uvicorn)",
        description="Serve the pipeline over HTTP: POST /v1/generate (multipart image + JSON options, fov in "
        "degrees), GET /v1/jobs/ID, GET /v1/jobs/ID/result.glb, DELETE /v1/jobs/ID, GET /healthz; the OpenAPI "
        "document is at /openapi.json and /docs. One worker runs the jobs in order from a bounded queue. "
        "Needs: pip install 'pixal3d[serve]'.",
    )
    _add_server_options(p, port=8000)
    p.add_argument("--results-dir", type=Path, default=Path("pixal3d-results"),
                   help="folder of the result GLBs (created; default ./pixal3d-results)")
    p.add_argument("--queue-size", type=int, default=8, help="jobs that may wait; more get HTTP 429 (default 8)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB; more: 413 (default 20)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="largest image in pixels (default 16e6)")
    p.add_argument("--job-timeout", type=float, default=None,
                   help="per-job time limit in seconds (default: 600 on a GPU, 3600 on the CPU)")
    p.add_argument("--keep-results", type=int, default=100, help="keep this many most recent results (default 100)")
    p.add_argument("--max-age-hours", type=float, default=24.0, help="delete results older than this (default 24)")
    access = p.add_argument_group("access control", "API keys come from the PIXAL3D_API_KEYS environment variable "
                                  "(comma-separated) and/or --api-key-file; clients send 'Authorization: Bearer KEY' "
                                  "and see only their own jobs. Without a key the server is open, so a --host "
                                  "other than loopback then needs --insecure-no-auth.")
    access.add_argument("--api-key-file", type=Path, default=None, help="file of API keys, one per line")
    access.add_argument("--insecure-no-auth", action="store_true",
                        help="serve a non-loopback --host without any API key (something in front must guard it)")
    access.add_argument("--jobs-per-minute", type=float, default=30.0,
                        help="jobs each key may submit per minute (burst 10; only with keys; 0 = no limit; default 30)")
    access.add_argument("--requests-per-minute", type=float, default=600.0,
                        help="requests each key may make per minute, polls included (0 = no limit; default 600)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from pixal3d.serve.auth import RateLimit, load_api_keys
    from pixal3d.serve.jobs import Retention
    from pixal3d.serve.rest import serve

    serve(_pipeline_factory(args), args.results_dir, host=args.host, port=args.port, queue_size=args.queue_size,
          api_keys=load_api_keys(args.api_key_file), insecure_no_auth=args.insecure_no_auth,
          rate_limit=RateLimit(args.jobs_per_minute, args.requests_per_minute),
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
          job_timeout_s=args.job_timeout, low_vram=args.low_vram,
          retention=Retention(max_results=args.keep_results, max_age_s=args.max_age_hours * 3600))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="web demo (Gradio): upload an image, watch the stages, turn the 3D result, download the GLB",
        description="A browser UI over the pipeline: the preprocessed crop, FoV auto or manual, seed, steps, "
        "guidance, resolution, face budget, texture size, progress per stage, an interactive 3D view of the GLB "
        "and its download. Needs: pip install 'pixal3d[demo]'.",
    )
    _add_server_options(p, port=7860)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MiB (default 20)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pixal3d.serve.demo import run_demo

    run_demo(_pipeline_factory(args), host=args.host, port=args.port, low_vram=args.low_vram,
             max_upload_bytes=int(args.max_upload_mb * 2**20))
    return 0
