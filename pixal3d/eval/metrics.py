"""Geometry metrics as pure functions on point sets (volume frame, volume units).

Conventions, shared by the round-trip report and `pixal3d eval`:
- distances are Euclidean (L2) per point; "Chamfer-L1" is the *mean* (not squared) of those distances,
  averaged over both directions;
- nearest neighbours come from a KD-tree (scipy, on the CPU; inputs on any device, results on the input's device);
- normal consistency ignores orientation (|cos|), as in the Occupancy Networks benchmark; pass `oriented=True`
  for the signed version.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree


def sample_surface(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    count: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random points on a triangle mesh (area-weighted faces, uniform barycentrics).

    Args:
        vertices: `[V, 3]` float.
        faces: `[F, 3]` int64.
        count: number of points.
        generator: CPU `torch.Generator` for reproducible samples.

    Returns:
        `(points [count, 3] float32, normals [count, 3] float32 unit face normals)` on `vertices.device`.
    """
    tri = vertices.float()[faces.long()]  # (F, 3, 3)
    cross = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    area = cross.norm(dim=-1)
    if faces.shape[0] == 0 or float(area.sum()) <= 0.0:
        raise ValueError("cannot sample a surface with zero area")
    face = torch.multinomial(area.cpu().double(), count, replacement=True, generator=generator)
    u, v = torch.rand(2, count, generator=generator, dtype=torch.float64)
    root = u.sqrt()
    bary = torch.stack([1 - root, root * (1 - v), root * v], dim=1).float().to(vertices.device)
    face = face.to(vertices.device)
    points = (bary[:, :, None] * tri[face]).sum(1)
    normals = cross[face] / area[face, None]
    return points, normals


def nearest_neighbors(query: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query point, the distance to and index of its nearest reference point.

    Args:
        query: `[M, 3]` float.
        reference: `[N, 3]` float, N >= 1.

    Returns:
        `(distance [M] float32, index [M] int64)` on `query.device`.
    """
    tree = cKDTree(reference.detach().double().cpu().numpy())
    distance, index = tree.query(query.detach().double().cpu().numpy(), k=1, workers=-1)
    return (
        torch.from_numpy(distance.astype(np.float32)).to(query.device),
        torch.from_numpy(index.astype(np.int64)).to(query.device),
    )


def chamfer_l1(points_a: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Symmetric Chamfer distance: `0.5 * (mean_a min_b |a - b| + mean_b min_a |a - b|)`, `|.|` the L2 norm.

    Args:
        points_a: `[M, 3]` float.
        points_b: `[N, 3]` float.

    Returns:
        Scalar float32 tensor, in the points' units.
    """
    d_ab, _ = nearest_neighbors(points_a, points_b)
    d_ba, _ = nearest_neighbors(points_b, points_a)
    return 0.5 * (d_ab.mean() + d_ba.mean())


def normal_consistency(
    points_a: torch.Tensor,
    normals_a: torch.Tensor,
    points_b: torch.Tensor,
    normals_b: torch.Tensor,
    oriented: bool = False,
) -> torch.Tensor:
    """Mean cosine between each point's normal and its nearest neighbour's normal in the other set, both ways.

    Args:
        points_a, normals_a: `[M, 3]` float, unit normals.
        points_b, normals_b: `[N, 3]` float, unit normals.
        oriented: use the signed cosine (consistent orientation required) instead of its absolute value.

    Returns:
        Scalar float32 tensor in [0, 1] (or [-1, 1] when oriented); 1 is perfect.
    """
    _, ab = nearest_neighbors(points_a, points_b)
    _, ba = nearest_neighbors(points_b, points_a)
    cos_ab = (normals_a * normals_b[ab]).sum(-1)
    cos_ba = (normals_b * normals_a[ba]).sum(-1)
    if not oriented:
        cos_ab, cos_ba = cos_ab.abs(), cos_ba.abs()
    return 0.5 * (cos_ab.mean() + cos_ba.mean())


def fscore(points_a: torch.Tensor, points_b: torch.Tensor, threshold: float) -> torch.Tensor:
    """F-score at a distance threshold: harmonic mean of precision (a near b) and recall (b near a).

    Args:
        points_a: `[M, 3]` float (e.g. the prediction).
        points_b: `[N, 3]` float (e.g. the ground truth).
        threshold: distance, in the points' units, under which a point counts as matched (`<=`).

    Returns:
        Scalar float32 tensor in [0, 1].
    """
    d_ab, _ = nearest_neighbors(points_a, points_b)
    d_ba, _ = nearest_neighbors(points_b, points_a)
    precision = (d_ab <= threshold).float().mean()
    recall = (d_ba <= threshold).float().mean()
    return 2 * precision * recall / (precision + recall).clamp(min=1e-12)


def feature_dihedral_error(
    mesh: trimesh.Trimesh,
    segments: torch.Tensor,
    angles: torch.Tensor,
    spacing: float,
    radius: float,
) -> torch.Tensor:
    """How well a mesh keeps known sharp edges: per sample along each edge, |sharpest local fold - true fold|.

    Sample points lie every `spacing` along each segment, at least `radius` from its ends (away from corners).
    Around a sample, the mesh edges passing within `radius` are looked up (the 64 nearest edge points); the largest angle between
    the normals of the two faces sharing such an edge is the reconstructed fold there (0 when none is found), and
    the error is its difference to the true angle. A rounded or bevelled edge folds gradually and scores badly;
    a kept sharp edge has one mesh edge folding by the full angle.

    Args:
        mesh: the reconstruction.
        segments: `[S, 2, 3]` float, end points of the sharp edges, same frame as the mesh.
        angles: `[S]` float, true angle between the adjacent faces' normals (pi/2 for a box), radians.
        spacing: distance between samples along an edge.
        radius: search radius around each sample (about one voxel).

    Returns:
        `[K]` float32 absolute errors in radians, one per sample.
    """
    # Points every radius / 2 along each interior mesh edge, so that long edges are found as well as short ones.
    ends = mesh.vertices[mesh.face_adjacency_edges]  # (A, 2, 3)
    count = np.ceil(np.linalg.norm(ends[:, 1] - ends[:, 0], axis=1) / (0.5 * radius)).astype(np.int64) + 1
    owner = np.repeat(np.arange(len(ends)), count)
    t = (np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)) / np.repeat(count - 1, count)
    along = ends[owner, 0] + t[:, None] * (ends[owner, 1] - ends[owner, 0])
    fold = np.concatenate([mesh.face_adjacency_angles[owner], [0.0]])  # last entry: "no neighbour"
    tree = cKDTree(along)
    samples, truth = [], []
    for (start, end), angle in zip(segments.double().numpy(), angles.double().numpy(), strict=True):
        length = float(np.linalg.norm(end - start))
        t = np.arange(radius, length - radius + 1e-12, spacing) / length
        samples.append(start + t[:, None] * (end - start))
        truth.append(np.full(len(t), angle))
    samples_np, truth_np = np.concatenate(samples), np.concatenate(truth)
    _, index = tree.query(samples_np, k=64, distance_upper_bound=radius)
    index = np.where(index >= len(along), len(fold) - 1, index)
    sharpest = fold[index].max(axis=1)
    return torch.from_numpy(np.abs(sharpest - truth_np).astype(np.float32))
