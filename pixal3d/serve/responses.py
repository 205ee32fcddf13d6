"""The REST server's response bodies as pydantic models: they type the OpenAPI document (`/openapi.json`).

Imported by `rest.create_app` only (pydantic comes with the `serve` extra's FastAPI). Field meanings and units are
the ones `jobs.JobRunner.snapshot` and `rest.create_app` produce; times are seconds, `created`/`started`/`finished`
Unix timestamps, FoV in degrees.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from pixal3d.serve.jobs import JobOptions

JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: what went wrong and how to fix it."""

    detail: str = Field(description="the problem, the value, the fix")


class ValidationErrorResponse(BaseModel):
    """422: options of the wrong shape (a message), or a malformed request (FastAPI's list of field errors)."""

    detail: str | list[dict[str, Any]] = Field(description="the problem and the fix, or one entry per bad field")


class JobAccepted(BaseModel):
    """`POST /v1/generate` (202): the queued job and where to follow it."""

    id: str = Field(description="job id, 32 lowercase hex characters")
    status: JobStatusName
    status_url: str = Field(description="GET it to poll the job")
    result_url: str = Field(description="GET it for the GLB once the job succeeded")


class JobStatus(BaseModel):
    """`GET /v1/jobs/{id}`. A job known only by its result file (after a restart) has `id` and `status` only."""

    id: str
    status: JobStatusName
    queue_position: int | None = Field(None, description="0 = next; null once running or finished")
    stage: str | None = Field(None, description="the running step: preprocess, encode, camera, structure, ...")
    progress: dict[str, Literal["pending", "running", "done"]] = Field(default_factory=dict)
    fraction: float | None = Field(None, description="share of the work done, 0..1")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per finished step")
    error: str | None = None
    error_kind: Literal["input", "model", "timeout"] | None = None
    fov_degrees: float | None = None
    fov_source: str | None = Field(None, description="given, estimated or default")
    options: JobOptions | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None


class JobDeleted(BaseModel):
    """`DELETE /v1/jobs/{id}`: 200 deleted, or 202 cancelling (a running job, forgotten when it stops)."""

    id: str
    status: Literal["deleted", "cancelling"]


class Health(BaseModel, extra="allow"):
    """`GET /healthz` (200 ok, 503 error), plus the model's device, resolution, image size and job time limit."""

    status: Literal["ok", "error"]
    error: str | None = None
    queued: int
    queue_size: int
    busy: bool = Field(description="whether a job is running (its id is its owner's business, not shown)")
    completed: int
