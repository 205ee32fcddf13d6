"""The REST server's jobs: a bounded queue, one worker thread that owns the pipeline, and the results folder.

No web framework here (`rest.py` is the HTTP layer). A job holds the uploaded image bytes and its options until
the worker takes it; the worker runs `pipe(image, ..., callback=stage_callback(...))` (progress per stage,
cancellation, the per-job time limit) and writes `RESULTS_DIR/<id>.glb` atomically through `Asset.export`. Ids are uuid4 hex,
checked against `JOB_ID` before they name a file. A failed, cancelled or timed-out job leaves no result file.

Ownership: each job records its owner (`auth.owner_name` of the API key, or `auth.ANONYMOUS` on an open server);
`snapshot` and `delete` answer None ("no such job") to anyone else. A result file whose record is gone (a restart,
retention) has no known owner, so only an open server still serves it.

Retention: after every job and at least once a minute the worker keeps the `max_results` most recent results
younger than `max_age_s` and forgets older finished jobs; it only ever deletes files named `<32 hex>.glb`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import io
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pixal3d.errors import InputError
from pixal3d.pipeline import Pixal3DPipeline
from pixal3d.serve.auth import ANONYMOUS
from pixal3d.serve.progress import StageAborted, StageProgress, stage_callback

logger = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")
"""A job id: uuid4 hex. Anything else is refused before it reaches the file system."""

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

DEFAULT_JOB_TIMEOUT_S = {"cuda": 600.0, "cpu": 3600.0}
"""Per-job time limit when none is given, by device type: a GPU job takes seconds, a CPU job about a minute on an
idle 2-core machine and many more on a busy one (a 600 s CPU limit killed normal jobs). Other devices: the CPU's."""


def default_job_timeout(device: str | object) -> float:
    """`DEFAULT_JOB_TIMEOUT_S` for a torch device (or its name): seconds."""
    kind = str(device).split(":")[0]
    return DEFAULT_JOB_TIMEOUT_S.get(kind, DEFAULT_JOB_TIMEOUT_S["cpu"])


@dataclass(frozen=True)
class Retention:
    """How many results the server keeps, and for how long."""

    max_results: int = 100
    """Keep at most this many finished jobs (and their GLBs), the most recent ones."""
    max_age_s: float = 24 * 3600.0
    """Forget finished jobs and delete results older than this, seconds."""

    def __post_init__(self) -> None:
        if self.max_results < 1 or not self.max_age_s > 0:
            raise InputError(f"retention needs max_results >= 1 and max_age_s > 0, got {self}")


@dataclass(frozen=True)
class JobOptions:
    """The pipeline arguments of one job, in the library's units (`fov` in radians)."""

    fov: float | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    resolution: int | None = None
    faces: int = 100_000
    texture_size: int = 2048


class QueueFull(Exception):
    """The queue holds `queue_size` jobs already (HTTP 429)."""


@dataclass(eq=False)
class Job:
    id: str
    options: JobOptions
    image: bytes | None
    owner: str = ANONYMOUS
    """Who may see the job: `auth.owner_name` of the API key that submitted it."""
    status: JobStatus = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: StageProgress = field(default_factory=StageProgress)
    error: str | None = None
    error_kind: Literal["input", "model", "timeout"] | None = None
    fov_source: str | None = None
    fov_degrees: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    forget: bool = False
    """Set by DELETE on a running job: whatever its outcome, drop its record and result when it ends."""


class JobRunner:
    """Queue + worker thread + results folder. `start()` builds the pipeline in the worker and waits for it."""

    def __init__(
        self,
        pipeline_factory: Callable[[], Pixal3DPipeline],
        results_dir: str | Path,
        queue_size: int = 8,
        job_timeout_s: float | None = None,
        retention: Retention | None = None,
        low_vram: bool = False,
    ) -> None:
        """`job_timeout_s` None: `default_job_timeout` of the pipeline's device, set when the worker built it."""
        if queue_size < 1 or not (job_timeout_s is None or job_timeout_s > 0):
            raise InputError(f"queue_size must be >= 1 and job_timeout_s > 0, got {queue_size}, {job_timeout_s}")
        self.results_dir = Path(results_dir)
        self.queue_size, self.job_timeout_s = queue_size, job_timeout_s
        self.retention, self.low_vram = retention or Retention(), low_vram
        self._factory = pipeline_factory
        self._lock = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.load_error: str | None = None
        self.info: dict[str, Any] = {}
        self.completed = 0

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create the results folder, start the worker, wait until it built the pipeline (raise if it failed)."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._work, name="pixal3d-worker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self.load_error is not None:
            raise RuntimeError(f"the pipeline could not be built: {self.load_error}")

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the worker to finish (the running job is cancelled) and wait for it."""
        with self._lock:
            self._stop = True
            if self._running is not None:
                self._running.cancel.set()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------------------------------ requests
    def submit(self, options: JobOptions, image: bytes, owner: str = ANONYMOUS) -> Job:
        """Queue a job of `owner`; raises `QueueFull` when `queue_size` jobs wait already."""
        job = Job(id=uuid.uuid4().hex, options=options, image=image, owner=owner)
        with self._lock:
            if len(self._pending) >= self.queue_size:
                raise QueueFull(f"the queue is full ({self.queue_size} jobs waiting); retry later")
            self._pending.append(job)
            self._jobs[job.id] = job
            self._lock.notify_all()
        logger.info("job %s of %s queued (%d waiting)", job.id, owner, len(self._pending))
        return job

    def snapshot(self, job_id: str, owner: str = ANONYMOUS) -> dict[str, Any] | None:
        """The job's state as JSON-ready data, or None for an id unknown to `owner` (see the module docstring)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                path = self.result_path(job_id) if owner == ANONYMOUS else None
                return {"id": job_id, "status": "succeeded"} if path is not None else None
            if job.owner != owner:
                return None
            position = next((i for i, j in enumerate(self._pending) if j is job), None)
            return {
                "id": job.id,
                "status": job.status,
                "queue_position": position,
                "stage": job.progress.current,
                "progress": dict(job.progress.states),
                "fraction": round(job.progress.fraction, 3),
                "timings": {k: round(v, 4) for k, v in job.progress.timings.items()},
                "error": job.error,
                "error_kind": job.error_kind,
                "fov_degrees": job.fov_degrees,
                "fov_source": job.fov_source,
                "options": dataclasses.asdict(job.options),
                "created": job.created,
                "started": job.started,
                "finished": job.finished,
            }

    def result_path(self, job_id: str) -> Path | None:
        """The job's GLB if it exists (`job_id` must match `JOB_ID`)."""
        if not JOB_ID.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.results_dir / f"{job_id}.glb"
        return path if path.is_file() else None

    def delete(self, job_id: str, owner: str = ANONYMOUS) -> Literal["deleted", "cancelling"] | None:
        """Forget `owner`'s job and delete its result; a running job is cancelled at its next model call."""
        with self._lock:
            job = self._jobs.get(job_id)
            if (job is None and owner != ANONYMOUS) or (job is not None and job.owner != owner):
                return None
            if job is not None and job.status == "running":
                job.forget = True
                job.cancel.set()
                return "cancelling"
            if job is not None:
                if job in self._pending:
                    self._pending.remove(job)
                del self._jobs[job_id]
            path = self.result_path(job_id)
            if path is not None:
                path.unlink(missing_ok=True)
            return "deleted" if job is not None or path is not None else None

    def health(self) -> dict[str, Any]:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            error = self.load_error or (None if alive or self._stop else "the worker thread stopped")
            return {
                "status": "ok" if error is None else "error",
                "error": error,
                "queued": len(self._pending),
                "queue_size": self.queue_size,
                "busy": self._running is not None,  # whether a job runs; its id is its owner's business
                "completed": self.completed,
                **self.info,
            }

    # ------------------------------------------------------------------------------------------ the worker
    def _work(self) -> None:
        try:
            pipe = self._factory()
            if self.job_timeout_s is None:
                self.job_timeout_s = default_job_timeout(pipe.device)
            self.info = {"device": str(pipe.device), "resolution": pipe.shape_vae.config.resolution,
                         "image_size": pipe.settings.image_size, "job_timeout_s": self.job_timeout_s}
        except Exception as err:
            logger.exception("building the pipeline failed")
            self.load_error = f"{type(err).__name__}: {err}"
            self._ready.set()
            return
        self._ready.set()
        self._prune_safely()
        while True:
            with self._lock:
                if not self._pending and not self._stop:
                    self._lock.wait(timeout=min(60.0, self.retention.max_age_s))
                if self._stop:
                    break
                job = self._pending.popleft() if self._pending else None
                if job is not None:
                    job.status, job.started, self._running = "running", time.time(), job
            if job is not None:
                self._execute(pipe, job)
            self._prune_safely()

    def _execute(self, pipe: Pixal3DPipeline, job: Job) -> None:
        """Run one job to success, failure or cancellation; no result file remains unless it succeeded."""
        deadline = time.monotonic() + self.job_timeout_s
        path = self.results_dir / f"{job.id}.glb"

        def should_stop() -> str | None:
            if job.cancel.is_set():
                return "cancelled"
            if time.monotonic() > deadline:
                return (f"timed out: the job ran longer than the limit of {self.job_timeout_s:g} s; the server's "
                        "operator can raise it with `pixal3d serve --job-timeout SECONDS`")
            return None

        status: JobStatus = "failed"
        try:
            self._generate(pipe, job, path, should_stop)
            status = "succeeded"
        except StageAborted as err:
            status = "cancelled" if err.reason == "cancelled" else "failed"
            job.error, job.error_kind = err.reason, (None if status == "cancelled" else "timeout")
        except InputError as err:
            job.error, job.error_kind = str(err), "input"
        except Exception as err:  # a model failure must not take the server down: the job fails, the worker goes on
            logger.exception("job %s failed", job.id)
            job.error, job.error_kind = f"{type(err).__name__}: {err}", "model"
        finally:
            with self._lock:
                if status != "succeeded" or job.forget:
                    path.unlink(missing_ok=True)
                job.status, job.finished, job.image, self._running = status, time.time(), None, None
                self.completed += 1
                if job.forget:
                    self._jobs.pop(job.id, None)
            gc.collect()
        logger.info("job %s %s%s", job.id, status, f": {job.error}" if job.error else "")

    def _generate(
        self, pipe: Pixal3DPipeline, job: Job, path: Path, should_stop: Callable[[], str | None],
    ) -> None:
        import math

        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(job.image or b""))
        except UnidentifiedImageError as err:
            raise InputError("the upload is not an image Pillow can read") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise InputError(f"the image is truncated or corrupt ({err}); re-export it") from err
        o = job.options
        asset = pipe(image, fov=o.fov, seed=o.seed, steps=o.steps, guidance=o.guidance, resolution=o.resolution,
                     faces=o.faces, texture_size=o.texture_size, low_vram=self.low_vram,
                     callback=stage_callback(job.progress, should_stop))
        job.progress.advance("export")
        job.fov_degrees, job.fov_source = round(math.degrees(asset.camera.fov), 3), asset.fov_source
        _check(should_stop)
        asset.export(path)  # atomic: a temporary file, then a rename
        _check(should_stop)  # a job past its limit never succeeds (`_execute` removes the file)
        job.progress.finish(asset.timings)

    def _prune_safely(self) -> None:
        try:
            self.prune()
        except OSError:  # a results-folder hiccup must not stop the worker
            logger.exception("retention pass failed")

    def prune(self) -> None:
        """Apply the retention limits to finished jobs and to the result files (ours only: `<id>.glb`)."""
        now, keep = time.time(), self.retention
        with self._lock:
            done = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: -j.finished)
            for i, job in enumerate(done):
                if i >= keep.max_results or now - job.finished > keep.max_age_s:
                    del self._jobs[job.id]
            files = [p for p in self.results_dir.glob("*.glb") if JOB_ID.fullmatch(p.stem)]
            active = {j.id for j in self._jobs.values() if j.finished is None}
            mtimes = {}
            for p in files:
                with contextlib.suppress(FileNotFoundError):  # DELETE may have removed it meanwhile
                    mtimes[p] = p.stat().st_mtime
            ranked = sorted(mtimes, key=lambda p: -mtimes[p])
            for i, p in enumerate(ranked):
                if p.stem not in active and (i >= keep.max_results or now - mtimes[p] > keep.max_age_s):
                    logger.info("retention: deleting %s", p.name)
                    p.unlink(missing_ok=True)
                    self._jobs.pop(p.stem, None)


def _check(should_stop: Callable[[], str | None]) -> None:
    reason = should_stop()
    if reason is not None:
        raise StageAborted(reason)
