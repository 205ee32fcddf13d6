"""Mesh <-> sparse PBR voxels (flexible dual grid, DESIGN section 4).

Frame and units: the volume cube `[-0.5, 0.5]^3` (DESIGN section 2); voxel `(i, j, k)` at resolution `R` covers
`[-0.5 + i/R, -0.5 + (i+1)/R)` per axis. Internally the code works in *grid units* `g = (p + 0.5) * R`, where voxel
`(i, j, k)` is the unit box `[i, i+1) x [j, j+1) x [k, k+1)` and grid corners are integer points.

- `mesh_to_voxels`: triangles -> voxels they touch (triangle/box SAT overlap), dual vertex = QEF minimiser of the
  touching triangles' planes (sharp edges survive), signed crossings of primal grid edges, and PBR attributes
  sampled from the mesh's material at each triangle's point nearest the voxel centre.
- `meshes_to_voxels`: the same for several `(asset, transform)` items (views of one or of different assets) in
  one pass: the items share every kernel launch, each result is byte for byte its own `mesh_to_voxels` (CPU).
  `mesh_to_voxels` and `mesh_to_voxels_batch` (one asset, several transforms) are its thin cases.

The other direction (voxels -> mesh, attribute lookup) is `pixal3d.geometry.dual_mesh`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import trimesh

from pixal3d.errors import InputError
from pixal3d.geometry.intersect import edge_crossings, merge_crossings, subdivide_triangles
from pixal3d.geometry.materials import MaterialTables
from pixal3d.geometry.part_materials import part_materials
from pixal3d.geometry.voxel_solve import TriangleBatch, assemble, reduce_by_key, voxel_statistics
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.timing import timed
from pixal3d.transfer import to_device

logger = logging.getLogger(__name__)

RESOLUTIONS = (64, 128, 256, 512)
# Triangles are bisected until no edge exceeds this many voxels, keeping the candidate columns of slivers short.
MAX_SUB_EDGE = 6.0
# Sub-triangles per chunk: bounds the candidate (triangle, voxel) pairs held at once (~25 per sub-triangle).
CHUNK_TRIANGLES = 32768
# Sub-triangles per batch of kernels on a GPU, in whole chunks: the voxeliser is launch-bound there (thousands of
# small kernels per call), so several chunks (and views) share each launch; ~3 kB of temporaries per sub-triangle.
BATCH_TRIANGLES_CUDA = 16 * CHUNK_TRIANGLES


def check_resolution(resolution: int) -> None:
    """Raise `InputError` unless `resolution` is one of `RESOLUTIONS`."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in RESOLUTIONS:
        raise InputError(
            f"voxel resolution must be one of {RESOLUTIONS}, got {resolution!r}; pick the nearest allowed value"
        )


def mesh_parts(mesh_or_scene: trimesh.Trimesh | trimesh.Scene) -> list[trimesh.Trimesh]:
    """The triangle meshes of a mesh or scene, scene node transforms applied (copies for scenes)."""
    if isinstance(mesh_or_scene, trimesh.Trimesh):
        parts = [mesh_or_scene]
    elif isinstance(mesh_or_scene, trimesh.Scene):
        parts = [g for g in mesh_or_scene.dump() if isinstance(g, trimesh.Trimesh)]
    else:
        raise InputError(
            f"expected a trimesh.Trimesh or trimesh.Scene, got {type(mesh_or_scene).__name__}; "
            "load meshes with trimesh.load(path)"
        )
    parts = [p for p in parts if len(p.faces) > 0]
    if not parts:
        raise InputError("the mesh has no faces (empty, or only points/lines); give a mesh with triangles")
    return parts


def _check_vertices(vertices: np.ndarray, inside_cube: bool) -> None:
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise InputError(
            f"the mesh has {bad} vertices with NaN or Inf coordinates; repair or drop them before converting"
        )
    if inside_cube and np.abs(vertices).max() > 0.5 + 1e-6:
        raise InputError(
            f"the mesh reaches {np.abs(vertices).max():.4f} from the origin, outside the volume cube "
            "[-0.5, 0.5]^3; call normalize_to_unit_cube(mesh) first"
        )


def unit_cube_transform(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene, margin: float = 0.02
) -> tuple[float, np.ndarray]:
    """The uniform scale and translation that `normalize_to_unit_cube` applies: `p_cube = scale * p + offset`.

    Args:
        mesh_or_scene: the asset, any units.
        margin: empty border left on each side, in volume units, in `[0, 0.25)`.

    Returns:
        `(scale, offset [3] float64)`. The inverse (`gltf.Placement.from_normalization`) puts a cube-frame mesh
        back where the source was.
    """
    if not 0.0 <= margin < 0.25:
        raise InputError(f"margin must be in [0, 0.25) volume units, got {margin}")
    parts = mesh_parts(mesh_or_scene)
    vertices = np.concatenate([np.asarray(p.vertices, dtype=np.float64) for p in parts])
    _check_vertices(vertices, inside_cube=False)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0.0:
        raise InputError("the mesh has zero extent (all vertices coincide); give a mesh with area")
    scale = (1.0 - 2.0 * margin) / extent
    return scale, -0.5 * (lo + hi) * scale


def normalize_to_unit_cube(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene, margin: float = 0.02
) -> trimesh.Trimesh | trimesh.Scene:
    """A copy of a mesh or scene centred on its bounding box and scaled into the volume cube.

    The longest side of the (transformed) bounding box becomes `1 - 2 * margin`, so the asset spans
    `[-0.5 + margin, 0.5 - margin]` along that axis. Scenes keep their graph; the root gets the transform
    (`unit_cube_transform` gives it).

    Args:
        mesh_or_scene: the asset, any units.
        margin: empty border left on each side, in volume units, in `[0, 0.25)`.

    Returns:
        A transformed copy of the same type.
    """
    scale, offset = unit_cube_transform(mesh_or_scene, margin)
    transform = np.eye(4)
    transform[:3, :3] *= scale
    transform[:3, 3] = offset
    result = mesh_or_scene.copy()
    result.apply_transform(transform)
    return result


def _placed(geometry: trimesh.Trimesh, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """`(vertices, faces, flipped)` of `geometry.copy().apply_transform(matrix)`, bit for bit, without the copy.

    trimesh skips (near-)identity matrices, transforms points in float64 and reverses the faces of a matrix that
    flips the winding; this does the same on the arrays only (no visual, cache or texture copies).
    """
    matrix = np.asanyarray(matrix, order="C", dtype=np.float64)
    vertices, faces = np.asarray(geometry.vertices), np.asarray(geometry.faces)
    if trimesh.util.allclose(matrix, np.eye(4), 1e-8):
        return vertices, faces, False
    vertices = trimesh.transformations.transform_points(vertices, matrix=matrix)
    rotates = not trimesh.util.allclose(matrix[:3, :3], np.eye(3), atol=1e-6)
    flipped = bool(rotates and trimesh.transformations.flips_winding(matrix))
    if flipped:
        faces = np.ascontiguousarray(np.fliplr(faces))
    return vertices, faces, flipped


def _flatten(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene, transform: np.ndarray | None
) -> list[tuple[str, trimesh.Trimesh, np.ndarray, np.ndarray, bool]]:
    """`(geometry name, geometry, vertices, faces, flipped)` per part with faces, as `mesh_parts` of the asset
    moved by `transform` (`[4, 4]`, applied like `Scene.apply_transform`) would give, without copying geometry."""
    if isinstance(mesh_or_scene, trimesh.Trimesh):
        placed = [("", mesh_or_scene, *_placed(mesh_or_scene, np.eye(4) if transform is None else transform))]
    elif isinstance(mesh_or_scene, trimesh.Scene):
        graph = mesh_or_scene.graph
        if transform is not None:  # Scene.apply_transform on a copy of the graph only
            graph = graph.copy()
            base = graph.base_frame
            for child in graph.transforms.children[base]:
                graph.update(frame_from=base, frame_to=child, matrix=np.dot(transform, graph[child][0]))
        placed = []
        for node in graph.nodes_geometry:
            matrix, name = graph[node]
            geometry = mesh_or_scene.geometry[name]
            if isinstance(geometry, trimesh.Trimesh):
                placed.append((name, geometry, *_placed(geometry, matrix)))
    else:
        raise InputError(
            f"expected a trimesh.Trimesh or trimesh.Scene, got {type(mesh_or_scene).__name__}; "
            "load meshes with trimesh.load(path)"
        )
    placed = [p for p in placed if len(p[3]) > 0]
    if not placed:
        raise InputError("the mesh has no faces (empty, or only points/lines); give a mesh with triangles")
    return placed


def _concatenate(placed: list[tuple[str, trimesh.Trimesh, np.ndarray, np.ndarray, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """`(triangles [F, 3, 3] float64, face_offsets [P + 1] int64)` of all parts."""
    triangles = np.concatenate([np.asarray(v, dtype=np.float64)[np.asarray(f)] for _, _, v, f, _ in placed])
    offsets = np.cumsum([0] + [len(f) for _, _, _, f, _ in placed])
    return triangles, offsets


def _batch(grid: torch.Tensor, faces: list[int]) -> TriangleBatch:
    """Subdivide `[sum(faces), 3, 3]` grid-unit triangles (item-major, `faces[v]` per item) and cut the rows into
    groups (`TriangleBatch`)."""
    views, device = len(faces), grid.device
    face_offsets = to_device(np.cumsum([0] + faces), device)
    sub, source, bary = subdivide_triangles(grid, MAX_SUB_EDGE)
    view = torch.searchsorted(face_offsets, source, right=True) - 1
    if views > 1:  # subdivision emits rows round by round; a stable sort by item restores each item's order
        order = torch.argsort(view, stable=True)
        sub, source, bary, view = sub[order], source[order], bary[order], view[order]
    counts = torch.bincount(view, minlength=views).tolist()  # the one host sync of the batching
    chunks = [max(1, -(-c // CHUNK_TRIANGLES)) if c else 0 for c in counts]
    first_group = np.cumsum([0] + chunks)
    first_row = np.cumsum([0] + counts)
    row = torch.arange(sub.shape[0], device=device)
    starts = to_device(first_row[:-1], device)
    offsets = to_device(first_group[:-1], device)
    group = offsets[view] + torch.div(row - starts[view], CHUNK_TRIANGLES, rounding_mode="floor")
    sizes = [min(CHUNK_TRIANGLES, c - k * CHUNK_TRIANGLES) for c, n in zip(counts, chunks, strict=True) for k in range(n)]
    group_view = np.repeat(np.arange(views), chunks)
    return TriangleBatch(sub, source, bary, group, to_device(group_view, device), group_view.tolist(), sizes,
                  face_offsets, views)


def _spans(sizes: list[int], budget: int) -> Iterator[tuple[int, int]]:
    """Row ranges `[start, stop)` of consecutive whole groups, each at most `budget` rows (or one group)."""
    start = stop = 0
    for size in sizes:
        if stop > start and stop - start + size > budget:
            yield start, stop
            start = stop
        stop += size
    if stop > start:
        yield start, stop


def mesh_to_voxels(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene,
    resolution: int,
    device: torch.device | str = "cpu",
    with_attributes: bool = True,
    *,
    transform: np.ndarray | torch.Tensor | None = None,
    material_cache: dict[tuple[str, bool], MaterialTables] | None = None,
    timings: dict[str, float] | None = None,
) -> SparseVoxels:
    """Voxelise a mesh or scene (already in the volume frame) into sparse PBR voxels.

    Steps: bisect triangles to at most `MAX_SUB_EDGE` voxels; per chunk, test each sub-triangle against the voxels
    it may touch (SAT) and, for those it overlaps, accumulate a weight, the point nearest the voxel centre, plane
    quadric and material; find where it pierces grid lines (the primal edges). The voxel set is every touched
    voxel plus the four around each crossed edge; the dual vertex minimises the weighted plane distances
    (QEF) with a small pull to the mean nearest point, clamped to the voxel.

    Args:
        mesh_or_scene: triangles in the volume cube; need not be watertight or manifold. Scene node transforms are
            applied. Materials: PBR (glTF) or simple (OBJ/MTL) with textures, vertex/face colours, or none
            (see `pixal3d.geometry.materials`).
        resolution: R, one of `RESOLUTIONS`.
        device: where the computation runs and the result lives.
        with_attributes: sample the material into `attrs [N, 6]`; when False, `attrs` is None.
        transform: `[4, 4]` applied to the asset first, as `scene.copy().apply_transform(transform)` would (same
            bits), but without copying any geometry or texture; None = the asset as it is.
        material_cache: an empty dict to reuse across calls on one asset and device (e.g. its views): the
            material tables (textures as float tensors) are then read once, not per call.
        timings: when given, the seconds spent on material tables and sampling are added to
            `timings["attributes"]` (CUDA synchronised around them; for profiling only).

    Returns:
        `SparseVoxels` with coords sorted by key `(i * R + j) * R + k`.
    """
    return meshes_to_voxels([(mesh_or_scene, transform)], resolution, device, with_attributes,
                            material_caches=[material_cache], timings=timings)[0]


def mesh_to_voxels_batch(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene,
    resolution: int,
    transforms: Sequence[np.ndarray | torch.Tensor | None],
    device: torch.device | str = "cpu",
    with_attributes: bool = True,
    *,
    material_cache: dict[tuple[str, bool], MaterialTables] | None = None,
    timings: dict[str, float] | None = None,
    batch_triangles: int | None = None,
) -> list[SparseVoxels]:
    """`mesh_to_voxels` of one asset under several transforms (e.g. the K views of a sample), in one pass.

    The one-asset case of `meshes_to_voxels` (see there); `material_cache` is shared by all transforms.

    Returns:
        One `SparseVoxels` per transform, coords sorted by key `(i * R + j) * R + k`.
    """
    if len(transforms) == 0:
        raise InputError("transforms is empty; pass at least one [4, 4] matrix (or None)")
    cache = {} if material_cache is None else material_cache  # the views share their material tables
    return meshes_to_voxels([(mesh_or_scene, t) for t in transforms], resolution, device, with_attributes,
                            material_caches=[cache] * len(transforms), timings=timings,
                            batch_triangles=batch_triangles)


class BadItemError(InputError):
    """One item of a `meshes_to_voxels` call is bad (no faces, NaN vertices, outside the cube).

    Attributes:
        item: the index of the bad item in the call's `items`.
    """

    def __init__(self, message: str, item: int) -> None:
        super().__init__(message)
        self.item = item


def _place_items(
    items: Sequence[tuple[trimesh.Trimesh | trimesh.Scene, np.ndarray | torch.Tensor | None]], resolution: int
) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """`(placed parts, part face offsets, grid-unit triangles [F, 3, 3] float64)` per item; a bad item raises
    `BadItemError` naming its index."""
    placed, offsets, triangles = [], [], []
    for item, (mesh_or_scene, transform) in enumerate(items):
        try:
            parts = _flatten(mesh_or_scene, None if transform is None else np.asarray(transform, dtype=np.float64))
            tris, part_offsets = _concatenate(parts)
            _check_vertices(tris.reshape(-1, 3), inside_cube=True)
        except BadItemError:
            raise
        except InputError as err:
            raise BadItemError(str(err), item) from err
        placed.append(parts)
        offsets.append(part_offsets)
        triangles.append((tris + 0.5) * resolution)
    return placed, offsets, triangles


def meshes_to_voxels(
    items: Sequence[tuple[trimesh.Trimesh | trimesh.Scene, np.ndarray | torch.Tensor | None]],
    resolution: int,
    device: torch.device | str = "cpu",
    with_attributes: bool = True,
    *,
    material_caches: Sequence[dict[tuple[str, bool], MaterialTables] | None] | None = None,
    timings: dict[str, float] | None = None,
    batch_triangles: int | None = None,
) -> list[SparseVoxels]:
    """`mesh_to_voxels` of several items `(asset, transform)`, e.g. views of different assets, in one pass.

    All items' sub-triangles go through the same kernels (item and chunk ride in the keys, faces are numbered
    over all items, the material tables of all items form one list), so a batch of B items launches about as
    many kernels as one item; per item the result equals `mesh_to_voxels(asset, ..., transform=t)` byte for
    byte on the CPU (sums are taken in the same order; `TriangleBatch`, `PartMaterials`).

    Peak memory: the per-kernel temporaries are bounded by `batch_triangles` whatever the number of items; what
    grows with the items is their sub-triangles (~90 bytes each), per-voxel sums and results.

    Args:
        items: `(mesh_or_scene, transform)` pairs, as `mesh_to_voxels`'s first argument and `transform`; items may
            share an asset (its views) or not.
        resolution, device, with_attributes, timings: as `mesh_to_voxels`.
        material_caches: one dict (or None) per item, as `mesh_to_voxels`'s `material_cache`; items of one asset
            may share one. A cache must only ever see one asset (it is keyed by geometry name). None: items that
            share an asset object share a cache made for this call.
        batch_triangles: sub-triangles per batch of kernels, in whole chunks of `CHUNK_TRIANGLES` (peak memory
            is about 3 kB per sub-triangle); None: `BATCH_TRIANGLES_CUDA` on a GPU, one chunk on the CPU (where
            larger batches only cost cache misses).

    Returns:
        One `SparseVoxels` per item, coords sorted by key `(i * R + j) * R + k`.

    Raises:
        BadItemError: an item has no faces, NaN/Inf vertices or leaves the cube (`.item` is its index).
    """
    check_resolution(resolution)
    if len(items) == 0:
        raise InputError("items is empty; pass at least one (mesh_or_scene, transform) pair")
    if material_caches is not None and len(material_caches) != len(items):
        raise InputError(f"material_caches has {len(material_caches)} entries for {len(items)} items; give one "
                         "per item (or None)")
    device = torch.device(device)
    placed, part_offsets, triangles = _place_items(items, resolution)
    faces = [len(t) for t in triangles]
    r3 = resolution**3
    # merge_crossings keys (edge, face) pairs as edge * faces + face in int64, edge keys carrying the item.
    if len(items) * 3 * r3 * sum(faces) >= 2**62:
        raise InputError(f"{len(items)} items with {sum(faces)} faces at R={resolution} overflow the edge keys; "
                         "voxelise fewer items per call")
    grid = to_device(np.concatenate(triangles).astype(np.float32, copy=False), device)
    batch = _batch(grid, faces)
    materials = None
    if with_attributes:
        with timed(timings, "attributes", device):
            shared: dict[int, dict] = {}  # per-call caches, one per asset object
            caches = [c if c is not None else shared.setdefault(id(item[0]), {})
                      for c, item in zip(material_caches or [None] * len(items), items, strict=True)]
            materials = part_materials(placed, part_offsets, batch.group_view_list, device, caches)
    if batch_triangles is None:
        batch_triangles = BATCH_TRIANGLES_CUDA if device.type == "cuda" else CHUNK_TRIANGLES
    keys, stats, crossings = [], [], []
    for start, stop in _spans(batch.group_sizes, batch_triangles):
        rows = slice(start, stop)
        k, s = voxel_statistics(batch, rows, resolution, materials, timings)
        keys.append(k)
        stats.append(s)
        crossings.append(edge_crossings(batch.sub[rows], batch.source[rows], resolution))
    keys = torch.cat(keys)
    group = torch.div(keys, r3, rounding_mode="floor")
    touched, stats = reduce_by_key(batch.group_view[group] * r3 + (keys - group * r3), torch.cat(stats))
    crossings = torch.cat(crossings)
    if batch.views > 1:  # edge key += item * 3 R^3 (float64 holds these integers exactly)
        crossings[:, 0] += (batch.view_of(crossings[:, 1].long()) * (3 * r3)).double()
    edge_keys, edge_sign = merge_crossings(crossings, sum(faces))
    voxels = assemble(touched, stats, edge_keys, edge_sign, resolution, with_attributes, batch.views)
    logger.debug(
        "voxelised %d items, %d faces (%d sub-triangles) at R=%d: %s voxels",
        batch.views,
        sum(faces),
        batch.sub.shape[0],
        resolution,
        [len(v) for v in voxels],
    )
    return voxels


