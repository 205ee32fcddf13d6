"""Mesh clean-up and simplification in PyTorch, on whatever device the tensors live (the GPU export path).

The same steps as `pixal3d.geometry.cleanup` (the CPU reference), as tensor programs:
- merge vertices at equal positions, drop degenerate and duplicate faces;
- remove floaters: connected components (faces joined through shared vertices) small in faces and area;
- fill small holes: simple boundary loops of at most `max_hole_edges` edges, with a fan around the centroid;
- simplify to the face budget by vertex clustering on a regular grid, each cluster's vertex placed at the minimiser
  of its faces' summed plane quadrics (Lindstrom's out-of-core simplification). The grid's cell count is the
  largest, found by bisection, whose result fits the budget. Unlike edge-collapse decimation it is one pass of
  sorts and scatters, so it runs in milliseconds on a GPU; it keeps dual-grid meshes' even triangle sizes.

Meshes are `vertices [V, 3] float32`, `faces [F, 3] int64` and per-vertex `attrs [V, C] float32`, volume frame.
"""

from __future__ import annotations

import logging

import torch

from pixal3d.geometry.cleanup import CleanupOptions

logger = logging.getLogger(__name__)

Mesh = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""`(vertices [V, 3] float32, faces [F, 3] int64, attrs [V, C] float32)`."""

_MERGE_SCALE = 2.0**20  # positions equal after rounding to 2^-20 volume units are one vertex


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """`[F, 3]` un-normalised normals (length = twice the area), counter-clockwise faces point outwards."""
    p = vertices[faces]  # (F, 3, 3)
    return torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)


def connected_components(num_nodes: int, edges: torch.Tensor) -> torch.Tensor:
    """`[num_nodes] int64` component labels (the smallest node id of each component) of an undirected graph.

    Hook-and-compress: every edge hooks the larger root under the smaller, then pointer jumping flattens the trees;
    O(log n) rounds of scatters, each round one host sync.
    """
    parent = torch.arange(num_nodes, device=edges.device)
    if edges.numel() == 0:
        return parent
    a, b = edges[:, 0], edges[:, 1]
    while True:
        ra, rb = parent[a], parent[b]
        lo, hi = torch.minimum(ra, rb), torch.maximum(ra, rb)
        before = parent.clone()
        parent.scatter_reduce_(0, hi, lo, reduce="amin")
        while True:  # compress to roots
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
        if torch.equal(parent, before):
            return parent


def merge_vertices(mesh: Mesh) -> Mesh:
    """One vertex per distinct position (rounded to `2^-20`); merged attributes are averaged."""
    vertices, faces, attrs = mesh
    keys = torch.round(vertices.double() * _MERGE_SCALE).long()
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    n = int(inverse.max()) + 1 if len(inverse) else 0
    return _pool(vertices, inverse, n), inverse[faces], _pool(attrs, inverse, n)


def drop_degenerate(mesh: Mesh) -> Mesh:
    """Drop faces with a repeated corner or zero area, and duplicate faces (same corners in any order: the first
    one stays), then unused vertices."""
    vertices, faces, attrs = mesh
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    keep = distinct & (face_normals(vertices, faces).norm(dim=1) > 0)
    faces = faces[keep]
    if len(faces):
        corners = torch.sort(faces, dim=1).values
        _, inverse = torch.unique(corners, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(faces), device=faces.device)
        first.scatter_reduce_(0, inverse, torch.arange(len(faces), device=faces.device), reduce="amin")
        faces = faces[torch.sort(first).values]
    return compact((vertices, faces, attrs))


def compact(mesh: Mesh) -> Mesh:
    """Drop the vertices no face uses (order kept) and renumber the faces."""
    vertices, faces, attrs = mesh
    used = torch.zeros(len(vertices), dtype=torch.bool, device=vertices.device)
    used[faces.reshape(-1)] = True
    remap = torch.cumsum(used, 0) - 1
    return vertices[used], remap[faces], attrs[used]


def remove_small_components(mesh: Mesh, min_face_fraction: float, min_area_fraction: float) -> Mesh:
    """Drop components (faces joined through shared vertices) below both fractions; the largest always stays."""
    vertices, faces, attrs = mesh
    if min_face_fraction <= 0 and min_area_fraction <= 0 or len(faces) == 0:
        return mesh
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]]])
    label = connected_components(len(vertices), edges)[faces[:, 0]]  # (F,) component of each face
    count = torch.bincount(label, minlength=len(vertices)).double()
    area = torch.zeros(len(vertices), dtype=torch.float64, device=vertices.device)
    area.index_add_(0, label, face_normals(vertices, faces).norm(dim=1).double())
    keep = (count >= min_face_fraction * len(faces)) | (area >= min_area_fraction * area.sum().clamp(min=1e-30))
    keep[torch.argmax(count)] = True
    return compact((vertices, faces[keep[label]], attrs))


def fill_small_holes(mesh: Mesh, max_hole_edges: int) -> Mesh:
    """Close simple boundary loops of 3..`max_hole_edges` edges with a fan around the loop's centroid."""
    vertices, faces, attrs = mesh
    n = len(vertices)
    if len(faces) == 0 or max_hole_edges < 3:
        return mesh
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # (3F, 2) a -> b as in the faces
    key = torch.minimum(directed[:, 0], directed[:, 1]) * n + torch.maximum(directed[:, 0], directed[:, 1])
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    boundary = directed[counts[inverse] == 1]
    if len(boundary) == 0:
        return mesh
    out_deg = torch.bincount(boundary[:, 0], minlength=n)
    in_deg = torch.bincount(boundary[:, 1], minlength=n)
    label = connected_components(n, boundary)
    edge_label = label[boundary[:, 0]]
    size = torch.bincount(edge_label, minlength=n)
    bad_vertex = ((out_deg != 1) | (in_deg != 1)) & ((out_deg + in_deg) > 0)
    bad = torch.zeros(n, dtype=torch.bool, device=vertices.device)
    bad[label[bad_vertex]] = True
    fill = (size >= 3) & (size <= max_hole_edges) & ~bad
    chosen = fill[edge_label]
    if not bool(chosen.any()):
        return mesh
    loops, hole = torch.unique(edge_label[chosen], return_inverse=True)
    loop_edges = boundary[chosen]
    centre = _pool(vertices[loop_edges[:, 0]], hole, len(loops))
    centre_attrs = _pool(attrs[loop_edges[:, 0]], hole, len(loops))
    new_faces = torch.stack([loop_edges[:, 1], loop_edges[:, 0], n + hole], dim=1)
    logger.debug("filled %d holes with %d faces", len(loops), len(new_faces))
    return torch.cat([vertices, centre]), torch.cat([faces, new_faces]), torch.cat([attrs, centre_attrs])


def cluster_simplify(mesh: Mesh, max_faces: int) -> Mesh:
    """Vertex clustering to at most `max_faces` faces (see the module docstring); a mesh within it is returned."""
    vertices, faces, attrs = mesh
    if len(faces) <= max_faces:
        return mesh
    # Bisection between a 2^3 grid (assumed to fit) and cells half an edge long (which merge almost nothing).
    edge = (vertices[faces[:, 1]] - vertices[faces[:, 0]]).norm(dim=1).median().clamp(min=1e-6)
    lo, hi = 2, max(int(2.0 / float(edge)) + 1, 3)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _clustered_face_count(vertices, faces, mid) <= max_faces:
            lo = mid
        else:
            hi = mid
    if _clustered_face_count(vertices, faces, lo) == 0:  # a tiny mesh inside one coarse cell: keep it whole
        logger.warning("cluster simplification to %d faces would leave none; keeping %d faces", max_faces, len(faces))
        return mesh
    return _cluster(mesh, lo)


def _cells(vertices: torch.Tensor, grid: int) -> torch.Tensor:
    """`[V] int64` cluster id (dense, 0..K-1) of each vertex on a `grid^3` lattice over the volume cube."""
    cell = ((vertices + 0.5) * grid).floor().long().clamp(0, grid - 1)
    key = (cell[:, 0] * grid + cell[:, 1]) * grid + cell[:, 2]
    return torch.unique(key, return_inverse=True)[1]


def _clustered_face_count(vertices: torch.Tensor, faces: torch.Tensor, grid: int) -> int:
    mapped = _cells(vertices, grid)[faces]
    keep = (mapped[:, 0] != mapped[:, 1]) & (mapped[:, 1] != mapped[:, 2]) & (mapped[:, 0] != mapped[:, 2])
    return len(torch.unique(torch.sort(mapped[keep], dim=1).values, dim=0))


def _cluster(mesh: Mesh, grid: int) -> Mesh:
    """Merge each cell's vertices into one, placed at the minimiser of the cell's summed face quadrics."""
    vertices, faces, attrs = mesh
    cluster = _cells(vertices, grid)
    k = int(cluster.max()) + 1
    normal = face_normals(vertices, faces).double()
    area = normal.norm(dim=1, keepdim=True)
    unit = normal / area.clamp(min=1e-30)
    plane = torch.cat([unit, -(unit * vertices[faces[:, 0]].double()).sum(1, keepdim=True)], dim=1)  # (F, 4)
    quadric = (area[:, :, None] * plane[:, :, None] * plane[:, None, :]).reshape(-1, 16)  # area-weighted
    sums = torch.zeros(k, 16, dtype=torch.float64, device=vertices.device)
    for corner in range(3):
        sums.index_add_(0, cluster[faces[:, corner]], quadric)
    sums = sums.reshape(k, 4, 4)
    mean = _pool(vertices, cluster, k).double()
    a, b = sums[:, :3, :3], sums[:, :3, 3]
    # Regularised towards the cell's mean vertex: flat cells (rank-1 quadrics) stay where their vertices are.
    reg = (a.diagonal(dim1=1, dim2=2).sum(1) * 1e-3 + 1e-12)[:, None, None] * torch.eye(3, device=a.device,
                                                                                      dtype=a.dtype)
    target = torch.linalg.solve(a + reg, -b + (reg @ mean[:, :, None])[:, :, 0])
    low = vertices.new_full((k, 3), float("inf")).double().scatter_reduce(
        0, cluster[:, None].expand(-1, 3), vertices.double(), reduce="amin")
    high = vertices.new_full((k, 3), -float("inf")).double().scatter_reduce(
        0, cluster[:, None].expand(-1, 3), vertices.double(), reduce="amax")
    margin = 0.5 / grid
    target = torch.minimum(torch.maximum(target, low - margin), high + margin).float()
    merged = (target, cluster[faces], _pool(attrs, cluster, k))
    return drop_degenerate(merged)


def repair(mesh: Mesh, options: CleanupOptions | None = None) -> Mesh:
    """Merge, drop degenerate/duplicate faces, remove floaters, fill small holes (then `cluster_simplify`).

    `options.drop_over_shared` is not applied (it is off by default on the CPU path too).
    """
    options = options or CleanupOptions()
    mesh = drop_degenerate(merge_vertices(mesh))
    if len(mesh[1]) == 0:
        from pixal3d.errors import InputError

        raise InputError("the mesh has no non-degenerate faces left to export; is the input empty?")
    mesh = remove_small_components(mesh, options.min_face_fraction, options.min_area_fraction)
    return fill_small_holes(mesh, options.max_hole_edges)


def _pool(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """`[n, D]` mean of `values [M, D]` per `index [M]` (0..n-1)."""
    total = torch.zeros(n, values.shape[1], dtype=values.dtype, device=values.device)
    total.index_add_(0, index, values)
    count = torch.bincount(index, minlength=n).clamp(min=1).to(values.dtype)
    return total / count[:, None]

