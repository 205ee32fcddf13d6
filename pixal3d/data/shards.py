"""The data runner: work units -> samples -> shards + JSON index, resumably, over parallel worker processes.

The format of what is written is `pixal3d.data.shard_format`; the units and how a unit becomes samples are
`pixal3d.data.units`.

Resume: a unit already in any index of `DIR` is not redone; a shard written but not yet indexed (an interrupted
run) is simply written again under the same name, so samples are never duplicated. Every file is written to a
temporary name and renamed. Ranks split the units by index modulo the world size; within a rank, units run in
`workers` processes ('spawn' start method) and only the parent writes the index. A worker job holds `batch`
consecutive units whose views are voxelised in one pass (`make_units`); the shards and the index do not depend
on the batch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pixal3d.atomic import write_json_atomic
from pixal3d.data.samples import check_sample_options
from pixal3d.data.shard_format import (
    FORMAT_VERSION,
    INDEX_FORMAT,
    index_path,
    read_indexes,
    shard_name,
    write_shard,
)
from pixal3d.data.units import SampleOptions, UnitResult, WorkUnit, engine_batch, ingest_units, make_units
from pixal3d.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Counts of one writer run (`summary.json`).

    Attributes:
        units_total: units assigned to this rank.
        units_written: units whose shard was written this run.
        units_already_done: units found in an index (resumed runs).
        samples_written: samples written this run.
        skipped: `{"id", "reason"}` for bad inputs (no faces, broken materials, views that never fit).
        failed: `{"id", "reason"}` for unexpected errors (retried by the next run).
        seconds: wall time.
    """

    units_total: int = 0
    units_written: int = 0
    units_already_done: int = 0
    samples_written: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        """One human line: the counts."""
        return (f"{self.samples_written} samples in {self.units_written} units written, "
                f"{self.units_already_done} units already done, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed ({self.seconds:.1f} s)")


def _run_units(job: tuple[list[WorkUnit], SampleOptions, str, str]) -> list[dict[str, object]]:
    """Worker entry: make a batch of units (`make_units`) and write a shard per unit; never raises (each result
    carries its unit's status and reason). A batch that fails unexpectedly is made again unit by unit, so only
    the broken unit fails."""
    units, options, out_dir, device = job
    try:
        made = make_units(units, options, device)
    except Exception as err:  # one bad asset never stops a large run; counted and retried next time
        if len(units) > 1:
            logger.warning("a batch of %d units failed (%s: %s); making them one by one", len(units),
                           type(err).__name__, err)
            return [result for unit in units for result in _run_units(([unit], options, out_dir, device))]
        logger.exception("failed %s (%s)", units[0].unit_id, units[0].source)
        return [{"unit": units[0].unit_id, "status": "failed", "reason": f"{type(err).__name__}: {err}"}]
    return [_write_unit(result, out_dir) for result in made]


def _write_unit(result: UnitResult, out_dir: str) -> dict[str, object]:
    unit = result.unit
    if result.error is not None:
        logger.warning("skipping %s (%s): %s", unit.unit_id, unit.source, result.error)
        return {"unit": unit.unit_id, "status": "skipped", "reason": str(result.error)}
    try:
        shard = Path("shards") / shard_name(unit.unit_id)
        entries = write_shard(Path(out_dir) / shard, result.samples)
    except Exception as err:  # e.g. a full disk: counted and retried next time
        logger.exception("failed to write %s", unit.unit_id)
        return {"unit": unit.unit_id, "status": "failed", "reason": f"{type(err).__name__}: {err}"}
    return {"unit": unit.unit_id, "status": "written", "shard": str(shard), "samples": entries,
            "skipped": result.skipped}


def gpu_worker_setup() -> None:
    """Before a data worker's first CUDA allocation: let the caching allocator grow segments in place
    (`expandable_segments`) unless the user configured it. A pass's temporaries vary in size from job to job, and
    without it each of several workers sharing a GPU holds about twice the memory (10.8 against 5.4 GiB at 8 units
    a job, measured on an H100)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def _worker_init(threads: int) -> None:
    gpu_worker_setup()
    torch.set_num_threads(threads)


def write_shards(
    units: Iterable[WorkUnit],
    out_dir: str | os.PathLike,
    options: SampleOptions | None = None,
    *,
    workers: int = 1,
    rank: int = 0,
    world_size: int = 1,
    device: str = "cpu",
    batch: int | None = None,
    progress: bool = True,
) -> RunSummary:
    """Make and store the samples of `units` (this rank's share), resumably; see the module docstring.

    Args:
        units: all work units of the run (every rank passes the same list).
        out_dir: the data folder (created).
        options: sample settings (None: `SampleOptions()`); must equal those of an existing index in `out_dir`.
        workers: worker processes (<= 1: in this process).
        rank, world_size: this process's share is `units[i]` with `i % world_size == rank`.
        device: where rendering and voxelisation run ("cuda:<rank>" on GPU machines).
        batch: units per worker job, their views rendered and voxelised together (`make_units`): fewer kernel
            launches and host syncs per sample on a GPU, more memory per worker; None: `engine_batch` (8 on a
            GPU, 1 on the CPU). The shards and index are the same whatever the batch (one shard per unit, same ids;
            on the CPU the same bytes).
        progress: show a tqdm bar on stderr, counted in views (samples/s, ETA), with the written / skipped /
            failed counts.

    Returns:
        The `RunSummary` (also written to `summary.json`).
    """
    options = options if options is not None else SampleOptions()
    check_sample_options(options.resolution, options.coarse)
    if not (0 <= rank < world_size):
        raise InputError(f"rank must be in [0, world_size), got rank {rank}, world size {world_size}")
    batch = engine_batch(batch, device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done: set[str] = set()
    for path, other in read_indexes(out):
        if other.get("options") != asdict(options):
            raise InputError(f"{path} was written with options {other.get('options')}, this run uses "
                             f"{asdict(options)}; use the same options or another output folder")
        done.update(other["units"])
    own_path = index_path(out, rank, world_size)
    index = {"format": INDEX_FORMAT, "version": FORMAT_VERSION, "options": asdict(options), "units": {}}
    if own_path.exists():
        index = dict(read_indexes(out))[own_path]
    mine = [u for i, u in enumerate(units) if i % world_size == rank]
    summary = RunSummary(units_total=len(mine))
    todo = [u for u in mine if u.unit_id not in done]
    summary.units_already_done = len(mine) - len(todo)
    jobs = [(todo[i:i + batch], options, str(out), device) for i in range(0, len(todo), batch)]
    views = {u.unit_id: u.views[1] - u.views[0] for u in todo}
    desc = "samples" if world_size == 1 else f"samples (rank {rank})"
    # Always samples/s (tqdm would switch to s/sample below one per second), plus the ETA.
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
    with tqdm(total=sum(views.values()), desc=desc, unit="sample", disable=not progress, dynamic_ncols=True,
              mininterval=1.0, bar_format=bar_format) as bar:
        for results in _results(jobs, workers):
            for result in results:
                _record(result, index, summary)
                bar.update(views.get(str(result["unit"]), 0))
            write_json_atomic(own_path, index, indent=1, sort_keys=True)
            bar.set_postfix_str(f"{summary.samples_written} written, {len(summary.skipped)} skipped, "
                                f"{len(summary.failed)} failed", refresh=False)
    summary.seconds = time.perf_counter() - start
    summary_name = "summary.json" if world_size == 1 else f"summary.rank{rank:03d}.json"
    write_json_atomic(out / summary_name, asdict(summary), indent=1, sort_keys=True)
    logger.info("%s: %s", out, summary.line())
    return summary


def _results(jobs: list[tuple], workers: int) -> Iterator[list[dict[str, object]]]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_run_units, jobs)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_worker_init, initargs=(threads,)) as pool:
        yield from pool.imap_unordered(_run_units, jobs, chunksize=1)


def _record(result: dict[str, object], index: dict, summary: RunSummary) -> None:
    unit = str(result["unit"])
    if result["status"] == "written":
        index["units"][unit] = {"shard": result["shard"], "samples": result["samples"]}
        summary.units_written += 1
        summary.samples_written += len(result["samples"])
        summary.skipped.extend(result["skipped"])
    elif result["status"] == "skipped":
        index["units"][unit] = {"skipped": result["reason"]}
        summary.skipped.append({"id": unit, "reason": str(result["reason"])})
    else:
        summary.failed.append({"id": unit, "reason": str(result["reason"])})


def ingest_folder(mesh_dir: str | os.PathLike, out_dir: str | os.PathLike, views: int = 4,
                  options: SampleOptions | None = None, **run: object) -> RunSummary:
    """Samples of every mesh file under `mesh_dir` (`ingest_units`), written as shards to `out_dir` by
    `write_shards`, which takes the keyword arguments `run` (workers, rank, world_size, device, batch).

    Returns:
        The run summary; bad files are in `summary.skipped` with their reasons.
    """
    units = ingest_units(mesh_dir, views)
    logger.info("ingesting %d mesh files from %s", len(units), mesh_dir)
    return write_shards(units, out_dir, options, **run)
