"""Mesh clean-up before the texture bake (DESIGN section 6): floaters, small holes, quadric simplification.

Every function takes a `trimesh.Trimesh` and returns a new one (inputs are never modified); units and frame are
whatever the input uses (normally the volume cube `[-0.5, 0.5]^3`). Quadric-error decimation is done by the
`fast-simplification` package (Garland-Heckbert quadrics, the library trimesh itself uses for
`simplify_quadric_decimation`); it is imported when first needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import trimesh

from pixal3d.errors import InputError

logger = logging.getLogger(__name__)

MIN_FACES = 12
"""Smallest face budget `simplify` accepts (a tetrahedron-like closed mesh needs a handful of faces)."""
MAX_FACES = 10_000_000
"""Largest face budget `simplify` accepts."""


@dataclass(frozen=True)
class CleanupOptions:
    """What `clean_mesh` removes and fills; the defaults suit dual-grid meshes at R = 64..512."""

    min_face_fraction: float = 0.001
    """A component is a floater when it holds fewer than this fraction of all faces ..."""
    min_area_fraction: float = 0.001
    """... and less than this fraction of the total surface area (the largest component is always kept)."""
    max_hole_edges: int = 32
    """Boundary loops with at most this many edges are closed (a fan around the loop's centroid)."""
    drop_over_shared: bool = False
    """Also drop the faces beyond the second on edges shared by more than two faces. Off by default: on dual-grid
    meshes such edges are where two sheets touch, and dropping faces there opened holes (boundary-edge ratio
    0 -> 0.14 on procedural seeds 3 and 5 at R = 64); duplicate triangles always go."""


def check_face_budget(faces: int) -> None:
    """Raise `InputError` unless `faces` is an int in `[MIN_FACES, MAX_FACES]`."""
    if isinstance(faces, bool) or not isinstance(faces, int) or not MIN_FACES <= faces <= MAX_FACES:
        raise InputError(
            f"face budget must be an integer in [{MIN_FACES}, {MAX_FACES}], got {faces!r}; "
            "typical values are 20000..200000"
        )


def position_ids(vertices: np.ndarray, tolerance: float) -> np.ndarray:
    """`[V] int64`: one id per vertex position, positions snapped to a grid of step `tolerance` (equal cells, one id;
    two vertices closer than `tolerance` can still fall into neighbouring cells, which never matters for the
    bit-identical copies that seams and per-face vertices make)."""
    _, ids = np.unique(np.round(np.asarray(vertices, dtype=np.float64) / tolerance).astype(np.int64), axis=0,
                       return_inverse=True)
    return ids.reshape(-1)


def face_pieces(faces: np.ndarray) -> np.ndarray:
    """`[F] int64` piece label of each face of `faces [F, 3]` (vertex ids, e.g. `position_ids`-merged): faces that
    share a vertex are one piece, not only faces that share an edge, as a printer or a physics engine sees them.
    Labels are consecutive from 0 over the vertices the faces use."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int64)
    used, local = np.unique(faces, return_inverse=True)
    local = local.reshape(-1, 3)
    rows, cols = np.concatenate([local[:, 0], local[:, 1]]), np.concatenate([local[:, 1], local[:, 2]])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(used),) * 2)
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    return labels[local[:, 0]].astype(np.int64)


def remove_small_components(
    mesh: trimesh.Trimesh, min_face_fraction: float = 0.001, min_area_fraction: float = 0.001
) -> trimesh.Trimesh:
    """Drop connected components (faces joined by shared edges) that are small in both face count and area.

    Args:
        mesh: `[V, 3]` vertices, `[F, 3]` faces; vertices should be merged so that shared edges are shared indices.
        min_face_fraction: components with fewer than this fraction of `F` faces ...
        min_area_fraction: ... and less than this fraction of the total area are removed.

    Returns:
        A new mesh with the kept faces and only the vertices they use. The largest component always stays.
    """
    n_faces = len(mesh.faces)
    if n_faces == 0:
        return mesh.copy()
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=n_faces)
    n_comp = int(labels.max()) + 1
    if n_comp == 1:
        return mesh.copy()
    face_count = np.bincount(labels, minlength=n_comp)
    area = np.bincount(labels, weights=mesh.area_faces, minlength=n_comp)
    keep_comp = (face_count >= min_face_fraction * n_faces) | (
        area >= min_area_fraction * max(area.sum(), 1e-30)
    )
    keep_comp[np.argmax(face_count)] = True
    logger.debug("components: %d, removing %d floaters", n_comp, int((~keep_comp).sum()))
    return _submesh(mesh, keep_comp[labels])


def fill_small_holes(mesh: trimesh.Trimesh, max_hole_edges: int = 32) -> trimesh.Trimesh:
    """Close boundary loops of at most `max_hole_edges` edges with a fan around each loop's centroid.

    Only simple loops are filled (every vertex on the loop has exactly one outgoing and one incoming boundary
    edge); the new triangles follow the orientation of the faces around the hole.

    Args:
        mesh: `[V, 3]` vertices, `[F, 3]` faces, vertices merged.
        max_hole_edges: the largest loop (in edges) that counts as a hole rather than an intended open border.

    Returns:
        A new mesh: the input faces followed by the filling faces; one new vertex per filled hole.
    """
    edges = np.asarray(mesh.edges, dtype=np.int64)  # (3F, 2) directed, as in the faces
    if len(edges) == 0:
        return mesh.copy()
    n_vert = len(mesh.vertices)
    # One int64 key per undirected edge: a 1-D unique is ~10x faster than np.unique(axis=0) on rows.
    key = np.minimum(edges[:, 0], edges[:, 1]) * n_vert + np.maximum(edges[:, 0], edges[:, 1])
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse] == 1]  # (E_b, 2) directed a -> b as in its face
    if len(boundary) == 0:
        return mesh.copy()
    out_deg = np.bincount(boundary[:, 0], minlength=n_vert)
    in_deg = np.bincount(boundary[:, 1], minlength=n_vert)
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n_vert,) * 2
    )
    _, vert_label = scipy.sparse.csgraph.connected_components(graph, directed=False)
    edge_label = vert_label[boundary[:, 0]]
    n_labels = int(vert_label.max()) + 1
    loop_size = np.bincount(edge_label, minlength=n_labels)
    # A loop is simple when all its vertices have in = out = 1 boundary edge.
    bad_vertex = ((out_deg != 1) | (in_deg != 1)) & ((out_deg + in_deg) > 0)
    bad_label = np.zeros(n_labels, dtype=bool)
    bad_label[vert_label[bad_vertex]] = True
    fill = (loop_size >= 3) & (loop_size <= max_hole_edges) & ~bad_label
    if not fill.any():
        return mesh.copy()
    holes = np.flatnonzero(fill)
    hole_index = np.full(n_labels, -1)
    hole_index[holes] = np.arange(len(holes))
    sel = fill[edge_label]
    loop_edges, loop_of_edge = boundary[sel], hole_index[edge_label[sel]]
    sums = np.zeros((len(holes), 3))
    np.add.at(sums, loop_of_edge, mesh.vertices[loop_edges[:, 0]])
    centroids = sums / loop_size[holes][:, None]
    centre_ids = n_vert + loop_of_edge
    # The face next to the hole has a -> b, so the filling triangle runs b -> a -> centre.
    new_faces = np.stack([loop_edges[:, 1], loop_edges[:, 0], centre_ids], axis=1)
    logger.debug("filled %d holes with %d faces", len(holes), len(new_faces))
    return trimesh.Trimesh(
        vertices=np.concatenate([mesh.vertices, centroids]),
        faces=np.concatenate([mesh.faces, new_faces]),
        process=False,
    )


def make_edge_manifold(mesh: trimesh.Trimesh, drop_over_shared: bool = True) -> trimesh.Trimesh:
    """Drop duplicate triangles, then (with `drop_over_shared`) faces beyond the second on any edge shared by more
    than two faces.

    A duplicate is a face with the same three vertices as an earlier one, in any order or orientation (the first
    is kept). On an over-shared edge the two largest faces stay; the others go (each removal only lowers edge
    counts, so one pass leaves every edge with at most two faces). The holes this opens are small and
    `fill_small_holes` may close them.

    Args:
        mesh: `[V, 3]` vertices, `[F, 3]` faces, vertices merged.

    Returns:
        A new mesh (unused vertices dropped); a copy when nothing was wrong.
    """
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0:
        return mesh.copy()
    corners = np.sort(faces, axis=1)  # (F, 3): the same triangle in any order or orientation
    order = np.lexsort(corners.T[::-1])  # rows sorted (a 1-D sort: np.unique(axis=0) is several times slower)
    ranked = corners[order]
    repeat = np.zeros(len(faces), dtype=bool)
    repeat[1:] = (ranked[1:] == ranked[:-1]).all(axis=1)
    keep = np.ones(len(faces), dtype=bool)
    keep[order[repeat]] = False  # lexsort is stable: the first of equal rows is the earliest face
    n_vert = len(mesh.vertices)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)  # (3F, 2) undirected
    edge_face = np.repeat(np.arange(len(faces)), 3)
    live = keep[edge_face]
    key = edges[live, 0] * n_vert + edges[live, 1]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    over = counts[inverse] > 2
    if not drop_over_shared:
        over[:] = False
    if over.any():
        area = np.asarray(mesh.area_faces)
        e_key, e_face = inverse[over], edge_face[live][over]
        order = np.lexsort((-area[e_face], e_key))  # per edge, largest face first
        e_key, e_face = e_key[order], e_face[order]
        rank = np.arange(len(e_key)) - np.searchsorted(e_key, e_key)  # position within its edge's group
        keep[e_face[rank >= 2]] = False
    dropped = int(len(faces) - keep.sum())
    if dropped == 0:
        return mesh.copy()
    logger.debug("dropped %d duplicate or non-manifold faces (%d over-shared edges)", dropped,
                 len(np.unique(inverse[over])) if over.any() else 0)
    return _submesh(mesh, keep)


def simplify(mesh: trimesh.Trimesh, max_faces: int, aggressiveness: float = 7.0) -> trimesh.Trimesh:
    """Quadric-error edge-collapse decimation down to at most about `max_faces` faces.

    Args:
        mesh: `[V, 3]` vertices, `[F, 3]` faces, vertices merged.
        max_faces: the face budget; a mesh already within it is returned as a copy.
        aggressiveness: `fast_simplification`'s `agg` (higher is faster and coarser).

    Returns:
        A new mesh without degenerate faces or unused vertices.
    """
    check_face_budget(max_faces)
    return _simplify(mesh, max_faces, aggressiveness)


def _simplify(mesh: trimesh.Trimesh, max_faces: int, aggressiveness: float = 7.0) -> trimesh.Trimesh:
    """`simplify` without the budget check (its callers checked it at their boundary)."""
    if len(mesh.faces) <= max_faces:
        return mesh.copy()
    try:
        import fast_simplification
    except ImportError as err:
        raise ImportError(
            "mesh simplification needs the fast-simplification package: pip install fast-simplification"
        ) from err
    vertices, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, dtype=np.float64),
        np.asarray(mesh.faces, dtype=np.int64),
        target_count=max_faces,
        agg=aggressiveness,
    )
    out = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    return _drop_degenerate(out)


def clean_mesh(
    mesh: trimesh.Trimesh, max_faces: int, options: CleanupOptions | None = None
) -> trimesh.Trimesh:
    """Merge vertices, drop duplicate (and optionally non-manifold) faces, remove floaters, fill small holes, simplify.

    Simplification can fold new non-manifold edges, so the result goes through `make_edge_manifold` again.

    Args:
        mesh: a triangle mesh, e.g. from `voxels_to_mesh` (vertices need not be merged).
        max_faces: the face budget for `simplify`, already checked (`export.ExportOptions` checks it).
        options: thresholds; `CleanupOptions()` when None.

    Returns:
        The cleaned, simplified mesh.
    """
    options = options or CleanupOptions()
    merged = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False)
    merged.merge_vertices()
    merged = _drop_degenerate(merged)
    if len(merged.faces) == 0:
        raise InputError("the mesh has no non-degenerate faces left to export; is the input empty?")
    merged = make_edge_manifold(merged, options.drop_over_shared)
    merged = remove_small_components(merged, options.min_face_fraction, options.min_area_fraction)
    merged = fill_small_holes(merged, options.max_hole_edges)
    return make_edge_manifold(_simplify(merged, max_faces), options.drop_over_shared)


def _drop_degenerate(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    faces = np.asarray(mesh.faces)
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    keep = distinct & (mesh.area_faces > 0)
    return _submesh(mesh, keep)


def _submesh(mesh: trimesh.Trimesh, face_mask: np.ndarray) -> trimesh.Trimesh:
    """The faces where `face_mask` [F] bool is set, with unused vertices dropped and indices remapped."""
    faces = np.asarray(mesh.faces)[face_mask]
    used = np.flatnonzero(np.bincount(faces.ravel(), minlength=len(mesh.vertices)))  # np.unique, no sort
    remap = np.full(len(mesh.vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return trimesh.Trimesh(vertices=np.asarray(mesh.vertices)[used], faces=remap[faces], process=False)
