"""Work units: one asset and a range of its views, the unit a data run makes, resumes and skips.

`make_units` turns units into samples (load or generate each asset, draw, render and align its views, voxelise
them together); `pixal3d.data.shards` runs it over processes and stores the results.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pixal3d.data.align import ViewDoesNotFitError, ViewRequest, align_views, used_points
from pixal3d.data.ingest import asset_id_of, find_meshes, load_asset
from pixal3d.data.procedural import check_family_set, procedural_asset_id
from pixal3d.data.samples import AssetViews, Sample, check_sample_options, view_generator, voxelise_assets
from pixal3d.errors import InputError
from pixal3d.geometry.dual_grid import BadItemError
from pixal3d.render import mesh_from_trimesh
from pixal3d.timing import timed

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- units, options
@dataclass(frozen=True)
class WorkUnit:
    """One asset and a half-open range of its views; the unit of resumption.

    Attributes:
        source: "procedural:<seed>" (classic families), "procedural:<family set>:<seed>" (e.g. "procedural:all:12",
            `pixal3d.data.procedural.FAMILY_SETS`) or a mesh file path.
        asset_id: the id samples carry ("proc-00000012", "proc-all-00000012", "mesh-chair"); the family set is
            part of it, so a data folder never mistakes one set's asset for another's on resume.
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


def procedural_unit(seed: int, views: tuple[int, int], family_set: str = "classic") -> WorkUnit:
    """The unit of procedural asset `seed` of `family_set` (a `FAMILY_SETS` name) and views `[start, stop)`."""
    source = f"procedural:{seed}" if family_set == "classic" else f"procedural:{family_set}:{seed}"
    return WorkUnit(source, procedural_asset_id(seed, family_set), views)


def procedural_units(count: int, views: int, seed_offset: int = 0, family_set: str = "classic") -> list[WorkUnit]:
    """`count` procedural assets (seeds `seed_offset ..` of `family_set`), one unit of `views` views each."""
    if count < 0 or views < 1 or seed_offset < 0:
        raise InputError(f"need count >= 0, views >= 1, seed_offset >= 0; got {count}, {views}, {seed_offset}")
    check_family_set(family_set)
    return [procedural_unit(s, (0, views), family_set) for s in range(seed_offset, seed_offset + count)]


def load_source(source: str) -> object:
    """A unit's asset: "procedural:[<family set>:]<seed>" -> the procedural scene; a path -> `ingest.load_asset`."""
    if source.startswith("procedural:"):
        from pixal3d.data.procedural import generate

        *family_set, seed = source.split(":")[1:]
        return generate(int(seed), family_set=family_set[0] if family_set else "classic").scene
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


def ingest_units(mesh_dir: str | os.PathLike, views: int) -> list[WorkUnit]:
    """One unit per mesh file under `mesh_dir`, `views` views each."""
    if views < 1:
        raise InputError(f"views must be >= 1, got {views}")
    root = Path(mesh_dir)
    files = find_meshes(root)
    if not files:
        raise InputError(f"{root}: no .glb, .gltf or .obj files found")
    return [WorkUnit(str(p), asset_id_of(p, root), (0, views)) for p in files]
