"""`pixal3d serve`: a FastAPI app over one `Pixal3DPipeline` (extra `serve`: fastapi, uvicorn, python-multipart).

Endpoints (the OpenAPI document is at `/openapi.json`, its viewer at `/docs`):

- `POST /v1/generate`: multipart form, `image` (a PNG, JPEG, WebP, BMP, TIFF or GIF file) and `options` (a JSON
  object: `fov` in DEGREES or null for the model's estimate, `seed`, `steps`, `guidance`, `resolution`, `faces`,
  `texture_size`) -> 202 `{"id", "status": "queued", ...}`.
- `GET /v1/jobs/{id}`: status ("queued", "running", "succeeded", "failed"), stage states, timings, error.
- `GET /v1/jobs/{id}/result.glb`: the GLB of a succeeded job.
- `DELETE /v1/jobs/{id}`: forget a job and delete its result (a running one is cancelled: 202).
- `GET /healthz`: worker state, queue length, device (no key needed; no job ids).

The response bodies are typed by the models of `responses.py`; docs/rest.md walks through submit -> poll -> download
with curl. A fully transparent image is refused at submit (400), like every other image fault that costs no model
time to find; the TCP port is bound before the pipeline loads, so a busy port is an immediate error.

`options` is parsed by a strict pydantic model (`uploads.options_model`) after a length and nesting check: unknown keys, JSON
types that would need coercion and values out of bounds are refused, `texture_size` is one of `TEXTURE_SIZES`.

Access (`serve/auth.py`): with API keys configured (`PIXAL3D_API_KEYS`, `--api-key-file`) every route but `/healthz`
needs `Authorization: Bearer <key>` (401 otherwise); a job is visible only to the key that made it (another key
gets 404 on read, download and delete); each key has rate limits on jobs and on requests (429 with Retry-After).
Without keys the server is open, and `serve` refuses a non-loopback `--host` unless `--insecure-no-auth`.

Errors answer with a JSON body `{"detail": ...}`: 400 a user mistake (`InputError`: malformed JSON or oversized
options, a value out of range, a corrupt image, a malformed job id), 401 no or unknown API key, 404 unknown job
(or another key's), 409 result not ready, 413 upload over the limit (checked on the declared length and again
while the body streams in) or image over the pixel limit, 415 not an image (sniffed by Pillow, whatever the
client's content type says), 422 options of the wrong shape (not an object, unknown key, wrong JSON type), 429
queue full or over the key's rate limit (with Retry-After).

This module does not use `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime,
and the framework's types are imported inside `create_app` (the extra stays optional).
"""

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixal3d import __version__
from pixal3d.errors import InputError
from pixal3d.pipeline import Pixal3DPipeline
from pixal3d.serve.auth import (
    ANONYMOUS,
    KEYS_ENV,
    ApiKeys,
    RateLimit,
    RateLimited,
    RateLimiter,
    check_exposure,
)
from pixal3d.serve.jobs import JOB_ID, JobRunner, QueueFull, Retention
from pixal3d.serve.uploads import (
    OPTION_HINTS,
    ImageTooLarge,
    OptionsShapeError,
    UnsupportedImage,
    check_has_object,
    parse_options,
    sniff_image,
)

logger = logging.getLogger(__name__)


def _import_serve() -> Any:
    import importlib.util

    try:
        import fastapi
    except ImportError as err:
        raise ImportError(f"the REST server needs its extra: pip install 'pixal3d[serve]' ({err})") from err
    if importlib.util.find_spec("python_multipart") is None:  # FastAPI parses form uploads with it
        raise ImportError("the REST server needs python-multipart >= 0.0.13: pip install 'pixal3d[serve]'")
    return fastapi


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
    api_keys: ApiKeys | None = None,
    rate_limit: RateLimit | None = None,
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
        api_keys: the accepted keys (`auth.load_api_keys`); None or none: an open server (loopback use).
        rate_limit: per-key request budgets (None: `RateLimit()`); only applied when keys are set.
    """
    fastapi = _import_serve()
    from contextlib import asynccontextmanager
    from typing import Annotated

    from fastapi.responses import FileResponse, JSONResponse

    from pixal3d.serve.responses import ErrorResponse, Health, JobAccepted, JobDeleted, JobStatus
    from pixal3d.serve.responses import ValidationErrorResponse as Invalid

    keys = api_keys or ApiKeys()
    # Limits are per key; an open server (loopback, no keys) has one shared owner, so it is not limited.
    limiter = RateLimiter((rate_limit or RateLimit()) if keys.enabled else RateLimit(0, 0))
    Owner = Annotated[str, fastapi.Depends(_owner_dependency(keys, limiter))]  # noqa: N806 (a type, for FastAPI)
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
    app.add_exception_handler(RateLimited, _rate_limited_handler(JSONResponse))
    app.add_exception_handler(Unauthorized, _error_handler(401, JSONResponse, {"WWW-Authenticate": "Bearer"}))

    def job_id_or_400(job_id: str) -> str:
        if not JOB_ID.fullmatch(job_id):
            raise InputError(f"malformed job id {job_id[:80]!r}: ids are 32 lowercase hex characters")
        return job_id

    @app.post("/v1/generate", status_code=202, response_model=JobAccepted,
              responses={**_error_docs(ErrorResponse, 400, 401, 413, 415, 429), **_error_docs(Invalid, 422)})
    def generate(
        who: Owner,
        image: Annotated[fastapi.UploadFile, fastapi.File(description="the input image")],
        options: Annotated[str, fastapi.Form(description="JSON object: " + ", ".join(OPTION_HINTS)
                                             + " (fov in degrees)")] = "{}",
    ) -> dict:
        """Queue one image -> GLB job; returns its id."""
        parsed = parse_options(options, runner.info.get("resolution"))
        data = image.file.read(max_upload_bytes + 1)
        sniff_image(data, max_pixels)
        check_has_object(data)
        limiter.jobs.take(who)  # only well-formed requests spend the job budget
        job = runner.submit(parsed, data, who)
        return {"id": job.id, "status": job.status, "status_url": f"/v1/jobs/{job.id}",
                "result_url": f"/v1/jobs/{job.id}/result.glb"}

    @app.get("/v1/jobs/{job_id}", response_model=JobStatus, response_model_exclude_unset=True,
             responses=_error_docs(ErrorResponse, 400, 401, 404, 429))
    def job_status(job_id: str, who: Owner) -> dict:
        """Status, stage states ("pending", "running", "done"), timings in seconds, error."""
        snapshot = runner.snapshot(job_id_or_400(job_id), who)
        if snapshot is None:
            raise fastapi.HTTPException(404, f"no job {job_id} (finished jobs are kept for a limited time)")
        return snapshot

    glb = {200: {"description": "the binary glTF (GLB) of the asset",
                 "content": {"model/gltf-binary": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.get("/v1/jobs/{job_id}/result.glb", response_class=FileResponse,
             responses={**glb, **_error_docs(ErrorResponse, 400, 401, 404, 409, 429)})
    def job_result(job_id: str, who: Owner) -> FileResponse:
        """The binary glTF of a succeeded job."""
        snapshot = runner.snapshot(job_id_or_400(job_id), who)
        if snapshot is None:
            raise fastapi.HTTPException(404, f"no job {job_id}")
        path = runner.result_path(job_id)
        if snapshot["status"] != "succeeded" or path is None:
            raise fastapi.HTTPException(409, f"job {job_id} has no result: it is {snapshot['status']}")
        return FileResponse(path, media_type="model/gltf-binary", filename=f"{job_id}.glb")

    @app.delete("/v1/jobs/{job_id}", response_model=JobDeleted,
                responses={202: {"model": JobDeleted, "description": "a running job: cancelling"},
                           **_error_docs(ErrorResponse, 400, 401, 404, 429)})
    def job_delete(job_id: str, who: Owner) -> JSONResponse:
        """Forget a job and delete its result; a running job is cancelled (202) and then forgotten."""
        outcome = runner.delete(job_id_or_400(job_id), who)
        if outcome is None:
            raise fastapi.HTTPException(404, f"no job {job_id}")
        return JSONResponse({"id": job_id, "status": outcome}, status_code=202 if outcome == "cancelling" else 200)

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health, "description": "not serving"}})
    def healthz() -> JSONResponse:
        """Worker state ("ok" or "error"), queue, device; no key needed, and no job ids shown."""
        health = runner.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return app


def _error_handler(status: int, response_class: type, headers: dict[str, str] | None = None) -> Callable:
    async def handler(request: Any, exc: Exception) -> Any:
        return response_class({"detail": str(exc)}, status_code=status, headers=headers)

    return handler


_ERROR_MEANINGS = {400: "a user mistake (the message says which and how to fix it)",
                   401: "no or unknown API key (send 'Authorization: Bearer <key>')",
                   404: "no such job (or another key's)", 409: "the job has no result (yet)",
                   413: "upload or image too large", 415: "not an image", 422: "options of the wrong shape",
                   429: "queue full or over the key's rate limit; retry after Retry-After seconds"}


def _error_docs(model: type, *codes: int) -> dict[int, dict]:
    return {code: {"model": model, "description": _ERROR_MEANINGS[code]} for code in codes}


def _owner_dependency(keys: ApiKeys, limiter: RateLimiter) -> Callable[..., str]:
    """The FastAPI dependency naming the caller's owner: 401 without a valid key on a keyed server, 429 over the
    key's request budget (without a valid key: over the client address's failure budget). Its `HTTPBearer`
    parameter puts the bearer scheme into the OpenAPI document."""
    from typing import Annotated

    import fastapi
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                        description="Authorization: Bearer <API key>; required when the server has keys "
                        f"({KEYS_ENV} or --api-key-file). Jobs are visible only to the key that made them.")

    def owner(request: fastapi.Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, fastapi.Security(bearer)]) -> str:
        if not keys.enabled:
            name = ANONYMOUS
        else:
            name = keys.owner(credentials.credentials if credentials is not None else None)
            if name is None:
                limiter.auth_failures.take(request.client.host if request.client else "unknown")
                raise Unauthorized("missing or unknown API key: send 'Authorization: Bearer <key>'"
                                   if credentials is None else "unknown API key")
        limiter.requests.take(name)
        return name

    return owner


def _rate_limited_handler(response_class: type) -> Callable:
    async def handler(request: Any, exc: RateLimited) -> Any:
        return response_class({"detail": str(exc)}, status_code=429,
                              headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})

    return handler


class Unauthorized(Exception):
    """No API key, or an unknown one, on a server that has keys (HTTP 401)."""


def serve(
    pipeline_factory: Callable[[], Pixal3DPipeline],
    results_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    insecure_no_auth: bool = False,
    **app_options: Any,
) -> None:
    """Run the app with uvicorn until interrupted (`app_options` go to `create_app`).

    Raises:
        InputError: `host` is not a loopback address, no API key is set and `insecure_no_auth` is False.
    """
    check_exposure(host, app_options.get("api_keys") or ApiKeys(), insecure_no_auth)
    try:
        import uvicorn
    except ImportError as err:
        raise ImportError("the REST server needs its extra: pip install 'pixal3d[serve]'") from err
    from pixal3d.serve import bind_socket

    sock = bind_socket(host, port)  # a busy port fails here, before the pipeline loads (the app's lifespan)
    app = create_app(pipeline_factory, Path(results_dir), **app_options)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
