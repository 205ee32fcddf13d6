"""Samples on disk: safetensors shards + JSON index, written resumably by parallel worker processes.

Layout of a data folder `DIR`:
- `DIR/shards/<unit>.safetensors`: one shard per work unit (one asset, a range of views). Tensors are named
  `<view>.<field>` with fields `image [S, S, 4] uint8`, `coords [N, 3] int32`, `vertex [N, 3] float32`,
  `edges [N, 3] int8`, `attrs [N, 6] float32`, `coarse [M, 3] int32`, `to_volume [4, 4] float64`; the
  safetensors metadata holds `format = "pixal3d.samples"`, `version = "1"` and `samples`, a JSON list of each
  view's scalars (asset_id, view, fov (radians), distance, scale, resolution, coarse_resolution, redraws,
  center_offset).
- `DIR/index.json` (or `DIR/index.rank<r>.json` for rank `r` of several): the JSON index. `options` (image size,
  resolutions, seed) and `units`: unit id -> `{"shard": relative path, "samples": [scalars...]}` for written
  units, or `{"skipped": reason}` for bad inputs (so a resumed run does not retry them).
- `DIR/summary.json` (`summary.rank<r>.json`): the last run's counts and reasons.

Resume: a unit already in any index of `DIR` is not redone; a shard written but not yet indexed (an interrupted
run) is simply written again under the same name, so samples are never duplicated. Every file is written to a
temporary name and renamed. Ranks split the units by index modulo the world size; within a rank, units run in
`workers` processes ('spawn' start method) and only the parent writes the index. A worker job holds `batch`
consecutive units whose views are voxelised in one pass (`make_units`); the shards and the index do not depend
on the batch.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from pixal3d.atomic import atomic_path, write_json_atomic
from pixal3d.data.samples import (
    AssetViews,
    Sample,
    ViewDoesNotFitError,
    ViewRequest,
    align_views,
    check_sample_options,
    used_points,
    view_generator,
    voxelise_assets,
)
from pixal3d.errors import InputError
from pixal3d.geometry.dual_grid import BadItemError
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.render import mesh_from_trimesh
from pixal3d.timing import timed

logger = logging.getLogger(__name__)

SHARD_FORMAT = "pixal3d.samples"
INDEX_FORMAT = "pixal3d.samples.index"
FORMAT_VERSION = "1"
FIELDS = ("image", "coords", "vertex", "edges", "attrs", "coarse", "to_volume")


# ------------------------------------------------------------------------------------------- units, options
@dataclass(frozen=True)
class WorkUnit:
    """One asset and a half-open range of its views; the unit of resumption.

    Attributes:
        source: "procedural:<seed>" or a mesh file path.
        asset_id: the id samples carry ("proc-00000012", "mesh-chair").
        views: `(start, stop)` view indices.
    """

    source: str
    asset_id: str
    views: tuple[int, int]

    @property
    def unit_id(self) -> str:
        return f"{self.asset_id}@{self.views[0]}-{self.views[1]}"


@dataclass(frozen=True)
class SampleOptions:
    """How samples are made; stored in the index so a resumed run cannot mix settings.

    Attributes:
        image_size: `S`, pixels.
        resolution: `R_hr`.
        coarse: coarse occupancy resolution.
        seed: data seed mixed into every view's generator.
    """

    image_size: int = 512
    resolution: int = 256
    coarse: int = 64
    seed: int = 0


def procedural_units(count: int, views: int, seed_offset: int = 0) -> list[WorkUnit]:
    """`count` procedural assets (seeds `seed_offset ..`), one unit of `views` views each."""
    if count < 0 or views < 1 or seed_offset < 0:
        raise InputError(f"need count >= 0, views >= 1, seed_offset >= 0; got {count}, {views}, {seed_offset}")
    return [WorkUnit(f"procedural:{s}", f"proc-{s:08d}", (0, views)) for s in range(seed_offset, seed_offset + count)]


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


# ------------------------------------------------------------------------------------------- atomic files


def sample_scalars(sample: Sample) -> dict[str, object]:
    """The JSON-able scalars of a sample (index entries and shard metadata)."""
    return {
        "asset_id": sample.asset_id,
        "view": sample.view,
        "fov": sample.fov,
        "distance": sample.distance,
        "scale": sample.scale,
        "resolution": sample.voxels.resolution,
        "coarse_resolution": sample.coarse_resolution,
        "redraws": sample.redraws,
        "center_offset": list(sample.center_offset),
        "voxels": len(sample.voxels),
    }


def sample_tensors(sample: Sample, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a sample, named `<key>.<field>` (module docstring)."""
    v = sample.voxels
    attrs = v.attrs if v.attrs is not None else torch.zeros(len(v), 6)
    tensors = {
        "image": sample.image.to(torch.uint8),
        "coords": v.coords.to(torch.int32),
        "vertex": v.vertex.to(torch.float32),
        "edges": v.edges.to(torch.int8),
        "attrs": attrs.to(torch.float32),
        "coarse": sample.coarse.to(torch.int32),
        "to_volume": sample.to_volume.to(torch.float64),
    }
    return {f"{key}.{name}": t.contiguous().cpu() for name, t in tensors.items()}


def sample_from_tensors(tensors: dict[str, torch.Tensor], scalars: dict[str, object], key: str) -> Sample:
    """Inverse of `sample_tensors` + `sample_scalars`; raises `ValueError` naming what is wrong."""
    missing = [f for f in FIELDS if f"{key}.{f}" not in tensors]
    if missing:
        raise ValueError(f"missing tensors {missing}")
    t = {f: tensors[f"{key}.{f}"] for f in FIELDS}
    n = t["coords"].shape[0]
    expected = {
        "image": (torch.uint8, None), "coords": (torch.int32, (n, 3)), "vertex": (torch.float32, (n, 3)),
        "edges": (torch.int8, (n, 3)), "attrs": (torch.float32, (n, 6)), "coarse": (torch.int32, None),
        "to_volume": (torch.float64, (4, 4)),
    }
    for name, (dtype, shape) in expected.items():
        if t[name].dtype != dtype or (shape is not None and tuple(t[name].shape) != shape):
            raise ValueError(f"{name} is {t[name].dtype} {list(t[name].shape)}, expected {dtype} {shape}")
    image = t["image"]
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.shape[2] != 4:
        raise ValueError(f"image must be [S, S, 4], got {list(image.shape)}")
    if t["coarse"].ndim != 2 or t["coarse"].shape[1] != 3:
        raise ValueError(f"coarse must be [M, 3], got {list(t['coarse'].shape)}")
    fov = float(scalars["fov"])
    if not (0.0 < fov < math.pi):
        raise ValueError(f"fov {fov} is not in (0, pi) radians")
    voxels = SparseVoxels(t["coords"], t["vertex"], t["edges"], t["attrs"], int(scalars["resolution"]))
    return Sample(
        image=image, fov=fov, distance=float(scalars["distance"]), scale=float(scalars["scale"]),
        voxels=voxels, coarse=t["coarse"], coarse_resolution=int(scalars["coarse_resolution"]),
        to_volume=t["to_volume"], asset_id=str(scalars["asset_id"]), view=int(scalars["view"]),
        redraws=int(scalars["redraws"]), center_offset=tuple(scalars["center_offset"]),
    )


# ------------------------------------------------------------------------------------------- one unit
def _shard_name(unit_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", unit_id) + ".safetensors"


def load_source(source: str) -> object:
    """A unit's asset: "procedural:<seed>" -> the procedural scene; a path -> `ingest.load_asset`."""
    if source.startswith("procedural:"):
        from pixal3d.data.procedural import generate

        return generate(int(source.split(":", 1)[1])).scene
    from pixal3d.data.ingest import load_asset

    return load_asset(Path(source))


@dataclass(eq=False)
class UnitResult:
    """What `make_units` made of one work unit.

    Attributes:
        unit: the work unit.
        samples: its samples, in view order (empty when `error` is set).
        skipped: `{"id", "reason"}` of its views that never fitted the cube.
        error: why the whole unit is bad (no faces, unreadable, broken materials, no view fits), or None;
            `make_unit` raises it.
    """

    unit: WorkUnit
    samples: list[Sample] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    error: InputError | None = None


def align_units(
    units: list[WorkUnit], options: SampleOptions, device: str = "cpu", timings: dict[str, float] | None = None
) -> list[tuple[AssetViews, list[dict]] | InputError]:
    """Load the units' assets and draw, render and align all their views: everything before voxelisation.

    The views of all units are aligned together (`align_views`: on a GPU, `RENDER_BATCH_CUDA` views per render
    pass); each view's draws depend on its own generator only, so a unit's views do not depend on the others.

    Returns:
        Per unit, `(AssetViews, skipped)`: its aligned views (with a material cache for the asset) and
        `{"id", "reason"}` for the views that never fitted the cube; or the `InputError` that makes the unit bad
        (no faces, unreadable, broken materials, no view fits).
    """
    loaded: list[tuple[object, list[ViewRequest]] | InputError] = []
    for unit in units:
        try:
            with timed(timings, "generate", device):
                scene = load_source(unit.source)
            with timed(timings, "render_mesh", device):
                mesh = mesh_from_trimesh(scene)  # built on the host: its points need no copy back
                points = used_points(mesh)
                mesh = mesh.to(device)
        except InputError as err:
            loaded.append(err)
            continue
        loaded.append((scene, [ViewRequest(mesh, view_generator(unit.asset_id, view, options.seed), unit.asset_id,
                                           view, points) for view in range(*unit.views)]))
    requests = [request for item in loaded if not isinstance(item, InputError) for request in item[1]]
    aligned = iter(align_views(requests, options.image_size, options.resolution, timings=timings))
    results: list[tuple[AssetViews, list[dict]] | InputError] = []
    for unit, item in zip(units, loaded, strict=True):
        if isinstance(item, InputError):
            results.append(item)
            continue
        views, skipped = [], []
        for request in item[1]:
            result = next(aligned)
            if isinstance(result, ViewDoesNotFitError):
                logger.warning("skipping %s view %d: %s", unit.asset_id, request.view, result)
                skipped.append({"id": f"{unit.asset_id}/{request.view}", "reason": str(result)})
            else:
                views.append(result)
        if views:
            results.append((AssetViews(item[0], views, unit.asset_id, material_cache={}), skipped))
        else:
            results.append(InputError(f"no view of {unit.asset_id} fits the volume cube"))
    return results


def make_units(
    units: list[WorkUnit], options: SampleOptions, device: str = "cpu", timings: dict[str, float] | None = None
) -> list[UnitResult]:
    """The samples of several work units, rendered and voxelised together.

    Each unit's asset is loaded and converted once; the views of all units are drawn, rendered and aligned
    together (`align_units`: on a GPU several views per render pass), then voxelised in one pass with their
    coarse occupancy through one `unique` (`voxelise_assets`): on a GPU the batch costs about the kernel
    launches and host syncs of one unit. Per unit the samples are byte for byte those of `make_unit` alone, one
    `make_sample` per view (CPU). A bad unit gets its `error` (and no samples) while the others complete.
    `timings` as in `make_sample` (plus "generate": loading the assets), summed over the units.

    Returns:
        One `UnitResult` per unit, in order.
    """
    check_sample_options(options.resolution, options.coarse)
    results = [UnitResult(unit) for unit in units]
    ready: list[tuple[UnitResult, AssetViews]] = []
    for result, aligned in zip(results, align_units(units, options, device, timings), strict=True):
        if isinstance(aligned, InputError):
            result.error = aligned
        else:
            asset, result.skipped = aligned
            ready.append((result, asset))
    while ready:
        try:
            made = voxelise_assets([asset for _, asset in ready], options.resolution, options.coarse,
                                   device=device, timings=timings)
        except BadItemError as err:  # drop the asset the voxeliser refused and voxelise the others
            result, _ = ready.pop(err.item)
            result.error = err
            continue
        for (result, _), samples in zip(ready, made, strict=True):
            result.samples = samples
        break
    return results


def make_unit(
    unit: WorkUnit, options: SampleOptions, device: str = "cpu", timings: dict[str, float] | None = None
) -> tuple[list[Sample], list[dict]]:
    """All samples of a unit, and `{"id", "reason"}` for its views that never fitted the cube (`make_units`).

    The asset is loaded and converted once; each view is drawn, rendered and aligned in turn, and all views are
    voxelised together: the same bytes as one `make_sample` per view, fewer kernel launches.

    Raises:
        InputError: the asset is bad (no faces, unreadable, broken materials); the whole unit is skipped.
    """
    result = make_units([unit], options, device, timings)[0]
    if result.error is not None:
        raise result.error
    return result.samples, result.skipped


def write_shard(path: Path, samples: list[Sample]) -> list[dict[str, object]]:
    """Write samples to one safetensors shard atomically; returns their index entries (scalars + key)."""
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for sample in samples:
        key = str(sample.view)
        tensors.update(sample_tensors(sample, key))
        entries.append({"key": key, **sample_scalars(sample)})
    metadata = {"format": SHARD_FORMAT, "version": FORMAT_VERSION, "samples": json.dumps(entries)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return entries


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
        shard = Path("shards") / _shard_name(unit.unit_id)
        entries = write_shard(Path(out_dir) / shard, result.samples)
    except Exception as err:  # e.g. a full disk: counted and retried next time
        logger.exception("failed to write %s", unit.unit_id)
        return {"unit": unit.unit_id, "status": "failed", "reason": f"{type(err).__name__}: {err}"}
    return {"unit": unit.unit_id, "status": "written", "shard": str(shard), "samples": entries,
            "skipped": result.skipped}


ENGINE_BATCH_CUDA = 8
"""Work units per job on a GPU when no batch is given (`engine_batch`): measured on one H100 at S = 512 /
R_hr = 256 (docs/benchmarks.md), 8 units a job with 12 workers made the most samples per second at about 5.4 GiB
of GPU memory per worker."""


def engine_batch(batch: int | None, device: str | torch.device) -> int:
    """The units a worker job makes together: `batch`, or when None `ENGINE_BATCH_CUDA` on a GPU and 1 on the CPU
    (where batching only costs memory)."""
    if batch is None:
        return ENGINE_BATCH_CUDA if torch.device(device).type == "cuda" else 1
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch (work units per worker job) must be an integer >= 1, got {batch!r}")
    return batch


def gpu_worker_setup() -> None:
    """Before a data worker's first CUDA allocation: let the caching allocator grow segments in place
    (`expandable_segments`) unless the user configured it. A pass's temporaries vary in size from job to job, and
    without it each of several workers sharing a GPU holds about twice the memory (10.8 against 5.4 GiB at 8 units
    a job, measured on an H100)."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def _worker_init(threads: int) -> None:
    gpu_worker_setup()
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- index, writer
def index_path(out_dir: Path, rank: int, world_size: int) -> Path:
    return out_dir / ("index.json" if world_size == 1 else f"index.rank{rank:03d}.json")


def read_indexes(out_dir: Path) -> list[tuple[Path, dict]]:
    """Every index file of a data folder, parsed (sorted by name)."""
    found = []
    for path in sorted(Path(out_dir).glob("index*.json")):
        try:
            index = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"{path}: unreadable index ({err}); restore it or delete the folder") from err
        if index.get("format") != INDEX_FORMAT:
            raise InputError(f"{path}: not a pixal3d samples index (format={index.get('format')!r})")
        found.append((path, index))
    return found


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
