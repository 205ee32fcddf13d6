"""`pixal3d serve`: a FastAPI app over one `Pixal3DPipeline` (extra `serve`: fastapi, uvicorn, python-multipart).

Endpoints (the OpenAPI document is at `/openapi.json`, its viewer at `/docs`):

- `POST /v1/generate`: multipart form, `image` (a PNG, JPEG, WebP, BMP, TIFF or GIF file) and `options` (a JSON
  object: `fov` in DEGREES or null for the model's estimate, `seed`, `steps`, `guidance`, `resolution`, `faces`,
  `texture_size`) -> 202 `{"id", "status": "queued", ...}`.
- `GET /v1/jobs/{id}`: status ("queued", "running", "succeeded", "failed"), stage states, timings, error.
- `GET /v1/jobs/{id}/result.glb`: the GLB of a succeeded job.
- `DELETE /v1/jobs/{id}`: forget a job and delete its result (a running one is cancelled: 202).
- `GET /healthz`: worker state, queue length, device.

The response bodies are typed by the models of `responses.py`; docs/rest.md walks through submit -> poll -> download
with curl. A fully transparent image is refused at submit (400), like every other image fault that costs no model
time to find; the TCP port is bound before the pipeline loads, so a busy port is an immediate error.

Errors answer with a JSON body `{"detail": ...}`: 400 a user mistake (`InputError`: malformed JSON, a value out of
range, a corrupt image, a malformed job id), 404 unknown job, 409 result not ready, 413 upload over the limit
(checked on the declared length and again while the body streams in) or image over the pixel limit, 415 not an
image (sniffed by Pillow, whatever the client's content type says), 422 options of the wrong shape (unknown key,
wrong JSON type), 429 queue full (with Retry-After).

This module does not use `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime,
and the framework's types are imported inside `create_app` (the extra stays optional).
"""

import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixal3d import __version__
from pixal3d.errors import InputError
from pixal3d.pipeline import Pixal3DPipeline
from pixal3d.serve.jobs import JOB_ID, JobOptions, JobRunner, QueueFull, Retention

logger = logging.getLogger(__name__)

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
"""Pillow formats the server decodes; anything else is 415 (no EPS/PDF-style formats that run external tools)."""

MAX_STEPS = 200
"""Upper bound on sampler steps per stage a client may ask for (bounds a job's time)."""

OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "fov": (float, int, type(None)),
    "seed": (int,),
    "steps": (int, type(None)),
    "guidance": (float, int, type(None)),
    "resolution": (int, type(None)),
    "faces": (int,),
    "texture_size": (int,),
}
"""The keys of the `options` JSON object and the JSON types each accepts (null = the model's default)."""


class OptionsShapeError(ValueError):
    """`options` is valid JSON of the wrong shape: not an object, an unknown key, a wrong type (HTTP 422)."""


def _import_serve() -> Any:
    import importlib.util

    try:
        import fastapi
    except ImportError as err:
        raise ImportError(f"the REST server needs its extra: pip install 'pixal3d[serve]' ({err})") from err
    if importlib.util.find_spec("python_multipart") is None:  # FastAPI parses form uploads with it
        raise ImportError("the REST server needs python-multipart >= 0.0.13: pip install 'pixal3d[serve]'")
    return fastapi


def parse_options(text: str, resolution: int | None = None) -> JobOptions:
    """The `options` form field -> `JobOptions` (fov converted from degrees to radians, here, once).

    Raises:
        InputError: malformed JSON, or a value out of range (HTTP 400).
        OptionsShapeError: not an object, an unknown key, a wrong JSON type (HTTP 422).
    """
    from pixal3d.geometry.bake import check_texture_size
    from pixal3d.geometry.cleanup import check_face_budget

    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise InputError(f"options is not valid JSON ({err}); send e.g. {{\"seed\": 1, \"fov\": 40}}") from err
    if not isinstance(data, dict):
        raise OptionsShapeError(f"options must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(OPTION_TYPES))
    if unknown:
        raise OptionsShapeError(f"unknown option(s) {unknown}; valid options: {sorted(OPTION_TYPES)}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, OPTION_TYPES[key]):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in OPTION_TYPES[key])
            raise OptionsShapeError(f"option {key!r} must be {names}, got {value!r}")
    fov, seed, steps, guidance = (data.get(k) for k in ("fov", "seed", "steps", "guidance"))
    if fov is not None and not (math.isfinite(fov) and 0 < fov < 180):
        raise InputError(f"fov is in DEGREES and must be in (0, 180), got {fov}; or null to estimate it")
    if seed is not None and not 0 <= seed < 2**63:
        raise InputError(f"seed must be an integer in [0, 2^63), got {seed}")
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must be in [1, {MAX_STEPS}], got {steps}")
    if guidance is not None and not (math.isfinite(guidance) and 0 <= guidance < 100):
        raise InputError(f"guidance must be in [0, 100) (1 = no guidance), got {guidance}")
    if data.get("resolution") is not None and resolution is not None and data["resolution"] != resolution:
        raise InputError(f"this server's model decodes at resolution {resolution} only, got {data['resolution']}; "
                         "omit resolution")
    options = JobOptions(fov=None if fov is None else math.radians(fov), seed=seed or 0, steps=steps,
                         guidance=None if guidance is None else float(guidance),
                         resolution=data.get("resolution"), faces=data.get("faces", JobOptions.faces),
                         texture_size=data.get("texture_size", JobOptions.texture_size))
    check_face_budget(options.faces)
    check_texture_size(options.texture_size)
    return options


def sniff_image(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Check that `data` is an image Pillow reads (header and, for PNG, the chunk checksums) without decoding it.

    Returns:
        (Pillow format name, (width, height)).

    Raises:
        UnsupportedImage: not an image of `IMAGE_FORMATS` (HTTP 415).
        ImageTooLarge: more than `max_pixels` pixels (HTTP 413).
        InputError: empty, truncated or corrupt (HTTP 400).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("the image upload is empty; send the file's bytes in the 'image' field")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except UnidentifiedImageError as err:
        raise UnsupportedImage(
            f"the upload is not an image this server reads ({len(data)} bytes starting {data[:8]!r}); "
            f"send one of {', '.join(IMAGE_FORMATS)}") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"the image has too many pixels to decode safely ({err}); downscale it") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the image header is truncated or corrupt ({err}); re-export it") from err
    fmt, (width, height) = image.format, image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} = {width * height} pixels, more than this "
                            f"server's limit of {max_pixels}; downscale it")
    try:
        image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the {fmt} image is truncated or corrupt ({err}); re-export it") from err
    return fmt, (width, height)


def check_has_object(data: bytes) -> None:
    """Refuse (HTTP 400) an image whose alpha channel is fully transparent: it holds no object to reconstruct.

    Decodes the image only when it carries an alpha channel; call after `sniff_image` (format and size checked).
    """
    from PIL import Image

    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    if not (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        return
    try:
        alpha = image.convert("RGBA").getchannel("A")
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the {image.format} image is truncated or corrupt ({err}); re-export it") from err
    if alpha.getextrema()[1] == 0:
        raise InputError("the image's alpha channel is fully transparent: there is no object; fix the alpha, or "
                         "send the image without one so that the background is removed automatically")


class UnsupportedImage(ValueError):
    """Not an image of `IMAGE_FORMATS` (HTTP 415)."""


class ImageTooLarge(ValueError):
    """More pixels than the server's limit (HTTP 413)."""


class UploadLimit:
    """ASGI middleware: answer 413 to a request body over `max_bytes`, judged by its Content-Length when given and
    counted while it streams in, so an oversized upload is refused after at most `max_bytes` were read."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        state = {"read": 0, "over": False, "started": False}

        async def counted_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_bytes:
                    state["over"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            if state["over"]:
                return  # the app's own answer to the aborted body (FastAPI's 400) is replaced by the 413
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if state["over"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps({"detail": f"the upload is larger than this server's limit of {self.max_bytes} bytes "
                                     f"({self.max_bytes / 2**20:.1f} MiB); send a smaller image"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


def create_app(
    pipeline_factory: Callable[[], Pixal3DPipeline],
    results_dir: str | os.PathLike,
    queue_size: int = 8,
    max_upload_bytes: int = 20 * 2**20,
    job_timeout_s: float | None = None,
    retention: Retention | None = None,
    max_pixels: int = 16_000_000,
    low_vram: bool = False,
) -> Any:
    """Build the FastAPI app. The pipeline is built by the worker thread when the app starts (its lifespan).

    Args:
        pipeline_factory: zero-argument callable returning the pipeline (see `pixal3d.serve.build_pipeline`).
        results_dir: folder of the result GLBs (created).
        queue_size: jobs that may wait besides the running one; more get 429.
        max_upload_bytes: largest request body, bytes (413 beyond).
        job_timeout_s: a job running longer fails with a timeout error (checked at every model call); None: by
            device (`jobs.DEFAULT_JOB_TIMEOUT_S`: 600 s on a GPU, 3600 s on the CPU).
        retention: how many results to keep and for how long.
        max_pixels: largest image, pixels (413 beyond).
        low_vram: run the pipeline with `low_vram=True`.
    """
    fastapi = _import_serve()
    from contextlib import asynccontextmanager
    from typing import Annotated

    from fastapi.responses import FileResponse, JSONResponse

    from pixal3d.serve.responses import ErrorResponse, Health, JobAccepted, JobDeleted, JobStatus
    from pixal3d.serve.responses import ValidationErrorResponse as Invalid

    runner = JobRunner(pipeline_factory, results_dir, queue_size, job_timeout_s, retention, low_vram)

    @asynccontextmanager
    async def lifespan(app: fastapi.FastAPI):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(runner.start)
        yield
        await run_in_threadpool(runner.stop)

    app = fastapi.FastAPI(title="pixal3d", version=__version__, lifespan=lifespan,
                          description="Pixel-aligned image-to-3D: upload an image, poll the job, fetch a GLB.")
    app.state.runner = runner
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    errors = {400: InputError, 413: ImageTooLarge, 415: UnsupportedImage, 422: OptionsShapeError}
    for code, kind in errors.items():
        app.add_exception_handler(kind, _error_handler(code, JSONResponse))
    app.add_exception_handler(QueueFull, _error_handler(429, JSONResponse, {"Retry-After": "5"}))

    def job_id_or_400(job_id: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise InputError(f"malformed job id {job_id[:80]!r}: ids are 32 lowercase hex characters")
        return job_id

    @app.post("/v1/generate", status_code=202, response_model=JobAccepted,
              responses={**_error_docs(ErrorResponse, 400, 413, 415, 429), **_error_docs(Invalid, 422)})
    def generate(
        image: Annotated[fastapi.UploadFile, fastapi.File(description="the input image")],
        options: Annotated[str, fastapi.Form(description="JSON object: " + ", ".join(OPTION_TYPES)
                                             + " (fov in degrees)")] = "{}",
    ) -> dict:
        """Queue one image -> GLB job; returns its id."""
        parsed = parse_options(options, runner.info.get("resolution"))
        data = image.file.read(max_upload_bytes + 1)
        sniff_image(data, max_pixels)
        check_has_object(data)
        job = runner.submit(parsed, data)
        return {"id": job.id, "status": job.status, "status_url": f"/v1/jobs/{job.id}",
                "result_url": f"/v1/jobs/{job.id}/result.glb"}

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, response_model_exclude_unset=True,
             responses=_error_docs(ErrorResponse, 400, 404))
    def job_status(job_id: str) -> dict:
        """Status, stage states ("pending", "running", "done"), timings in seconds, error."""
        snapshot = runner.snapshot(job_id_or_400(job_id))
        if snapshot is None:
            raise fastapi.HTTPException(404, f"no job {job_id} (finished jobs are kept for a limited time)")
        return snapshot

    glb = {200: {"description": "the binary glTF (GLB) of the asset",
                 "content": {"model/gltf-binary": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.get("/v1/jobs/{job_id}/result.glb", response_class=FileResponse,
             responses={**glb, **_error_docs(ErrorResponse, 400, 404, 409)})
    def job_result(job_id: str) -> FileResponse:
        """The binary glTF of a succeeded job."""
        snapshot = runner.snapshot(job_id_or_400(job_id))
        if snapshot is None:
            raise fastapi.HTTPException(404, f"no job {job_id}")
        path = runner.result_path(job_id)
        if snapshot["status"] != "succeeded" or path is None:
            raise fastapi.HTTPException(409, f"job {job_id} has no result: it is {snapshot['status']}")
        return FileResponse(path, media_type="model/gltf-binary", filename=f"{job_id}.glb")

    @app.delete("/v1/jobs/{job_id}", response_model=JobDeleted,
                responses={202: {"model": JobDeleted, "description": "a running job: cancelling"},
                           **_error_docs(ErrorResponse, 400, 404)})
    def job_delete(job_id: str) -> JSONResponse:
        """Forget a job and delete its result; a running job is cancelled (202) and then forgotten."""
        outcome = runner.delete(job_id_or_400(job_id))
        if outcome is None:
            raise fastapi.HTTPException(404, f"no job {job_id}")
        return JSONResponse({"id": job_id, "status": outcome}, status_code=202 if outcome == "cancelling" else 200)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "not serving"}})
    def healthz() -> JSONResponse:
        """Worker state ("ok" or "error"), queue, device."""
        health = runner.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return app


def _error_handler(status: int, response_class: type, headers: dict[str, str] | None = None) -> Callable:
    async def handler(request: Any, exc: Exception) -> Any:
        return response_class({"detail": str(exc)}, status_code=status, headers=headers)

    return handler


_ERROR_MEANINGS = {400: "a user mistake (the message says which and how to fix it)", 404: "no such job",
                   409: "the job has no result (yet)", 413: "upload or image too large", 415: "not an image",
                   422: "options of the wrong shape", 429: "queue full; retry after Retry-After seconds"}


def _error_docs(model: type, *codes: int) -> dict[int, dict]:
    return {code: {"model": model, "description": _ERROR_MEANINGS[code]} for code in codes}


def serve(
    pipeline_factory: Callable[[], Pixal3DPipeline],
    results_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    **app_options: Any,
) -> None:
    """Run the app with uvicorn until interrupted (`app_options` go to `create_app`)."""
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError("the REST server needs its extra: pip install 'pixal3d[serve]'") from err
    from pixal3d.serve import bind_socket

    sock = bind_socket(host, port)  # a busy port fails here, before the pipeline loads (the app's lifespan)
    app = create_app(pipeline_factory, Path(results_dir), **app_options)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
