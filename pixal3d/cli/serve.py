"""`pixal3d serve` (REST) and `pixal3d demo` (Gradio): a pipeline behind a server."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pixal3d.cli.common import add_model_options, device_from_arg


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
