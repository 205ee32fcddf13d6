"""Mesh topology scores (DESIGN section 4: every eval reports the exported mesh's connected components and
boundary-edge ratio, because F-score is nearly blind to holes).

Vertices at the same position (within `MERGE_TOLERANCE`) are merged first, so UV seams and per-face vertex copies
in an exported mesh do not count as cuts, and faces made degenerate by the merge are dropped.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pixal3d.asset import Asset
from pixal3d.errors import InputError
from pixal3d.geometry.cleanup import clean_mesh, face_pieces, position_ids

logger = logging.getLogger(__name__)


MERGE_TOLERANCE = 1e-6
"""Vertices closer than this per axis (volume units) are one vertex for the topology metrics."""


# ------------------------------------------------------------------------------------------------ mesh topology
def merge_by_position(
    vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, tolerance: float = MERGE_TOLERANCE
) -> np.ndarray:
    """Faces re-indexed onto unique vertex positions, degenerate faces dropped.

    Positions are snapped to a grid of step `tolerance` and equal cells are one vertex (two vertices closer than
    `tolerance` can still fall into neighbouring cells; seam copies are bit-identical, so this never matters for
    them).

    Args:
        vertices: `[V, 3]` float.
        faces: `[F, 3]` int.

    Returns:
        `[F', 3] int64` faces over merged vertex ids, `F' <= F` (faces with a repeated vertex removed).
    """
    v = np.asarray(vertices.detach().cpu() if isinstance(vertices, torch.Tensor) else vertices, dtype=np.float64)
    f = np.asarray(faces.detach().cpu() if isinstance(faces, torch.Tensor) else faces, dtype=np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"need vertices [V, 3] and faces [F, 3], got {v.shape} and {f.shape}")
    if len(f) == 0:
        return f.reshape(0, 3)
    merged = position_ids(v, tolerance)[f]
    distinct = (merged[:, 0] != merged[:, 1]) & (merged[:, 1] != merged[:, 2]) & (merged[:, 0] != merged[:, 2])
    return merged[distinct]


def _unique_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(edges [E, 2] int64 (low id, high id), faces per edge [E] int64)` of merged faces `[F, 3]`."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)  # (3F, 2)
    return np.unique(edges, axis=0, return_counts=True)


def connected_components(
    vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, tolerance: float = MERGE_TOLERANCE
) -> int:
    """Number of connected pieces of a triangle mesh.

    Two faces are connected when they share a vertex (after `merge_by_position`), not only an edge: parts that
    touch at a single point are one piece, as they are one piece to a printer or a physics engine, and the
    pinch vertices a dual-grid mesh makes do not inflate the count. Isolated vertices are not counted.

    Args:
        vertices: `[V, 3]` float.
        faces: `[F, 3]` int.

    Returns:
        The number of components; 0 for a mesh without (non-degenerate) faces.
    """
    return len(np.unique(face_pieces(merge_by_position(vertices, faces, tolerance))))


def boundary_edge_ratio(
    vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, tolerance: float = MERGE_TOLERANCE
) -> float:
    """Open edges over all edges: the fraction of unique (undirected) edges used by exactly one face.

    After `merge_by_position`. 0 for a closed (watertight) surface; a hole's rim contributes its edges; edges of
    three or more faces (non-manifold) are not open.

    Args:
        vertices: `[V, 3]` float.
        faces: `[F, 3]` int.

    Returns:
        The ratio in [0, 1]; NaN for a mesh without (non-degenerate) faces.
    """
    merged = merge_by_position(vertices, faces, tolerance)
    if len(merged) == 0:
        return float("nan")
    _, uses = _unique_edges(merged)
    return float((uses == 1).sum() / len(uses))


def open_edges(
    vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, tolerance: float = MERGE_TOLERANCE
) -> int:
    """Number of unique edges used by exactly one face (after `merge_by_position`); see `boundary_edge_ratio`."""
    merged = merge_by_position(vertices, faces, tolerance)
    if len(merged) == 0:
        return 0
    _, uses = _unique_edges(merged)
    return int((uses == 1).sum())


def topology_metrics(asset: Asset) -> dict[str, float | None]:
    """Connected components and boundary-edge ratio of the exported mesh and of the raw dual-grid mesh (`_raw`).

    The exported mesh is the geometry `Asset.export` writes into the GLB: `clean_mesh` of the asset's mesh at its
    face budget with its clean-up options (`Asset.cleanup`: floaters removed unless the silhouette rule kept every
    fragment; holes of up to 32 edges filled; simplified); the UV bake after it only
    splits vertices along seams, which the metrics merge back (`merge_by_position`).
    """
    raw = asset.mesh
    values: dict[str, float | None] = {
        "components_raw": connected_components(raw.vertices, raw.faces),
        "boundary_edge_ratio_raw": boundary_edge_ratio(raw.vertices, raw.faces),
    }
    try:
        exported = clean_mesh(raw, asset.faces, asset.cleanup)
    except InputError as err:  # nothing left to export: the scores are undefined, the run is still scored
        logger.warning("no exported mesh to measure: %s", err)
        return {**values, "components": None, "boundary_edge_ratio": None}
    values["components"] = connected_components(exported.vertices, exported.faces)
    values["boundary_edge_ratio"] = boundary_edge_ratio(exported.vertices, exported.faces)
    return values
