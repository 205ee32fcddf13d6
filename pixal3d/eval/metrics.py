"""Evaluation metrics as pure functions on tensors: point sets, voxel grids, masks and images.

Geometry works in the volume frame (DESIGN section 2), in volume units; images are `[H, W]` or `[H, W, C]` float
in [0, 1] (channels last, as `pixal3d.render.RenderOutput`); angles come in radians and FoV errors go out in
degrees (a report's unit). docs/evaluation.md says how `pixal3d eval` uses each one.

Conventions, shared by the round-trip report and `pixal3d eval`:
- distances are Euclidean (L2) per point; "Chamfer-L1" is the *mean* (not squared) of those distances,
  averaged over both directions;
- nearest neighbours come from a KD-tree (scipy, on the CPU; inputs on any device, results on the input's device);
- normal consistency ignores orientation (|cos|), as in the Occupancy Networks benchmark; pass `oriented=True`
  for the signed version;
- mesh topology (`connected_components`, `boundary_edge_ratio`) lives in `pixal3d.eval.topology`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from scipy import ndimage
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


# ------------------------------------------------------------------------------------------------ voxel grids
def occupancy_grid(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Dense occupancy of sparse voxel coordinates.

    Args:
        coords: `[N, 3]` (i, j, k) or `[N, 4]` (b, i, j, k) integer voxel coordinates in `[0, resolution)`;
            the batch column, when present, is ignored (one object).
        resolution: R.

    Returns:
        `[R, R, R] bool` on `coords.device`, indexed `[i, j, k]`.
    """
    if coords.ndim != 2 or coords.shape[1] not in (3, 4) or coords.is_floating_point():
        raise ValueError(f"coords must be integer [N, 3] or [N, 4], got {tuple(coords.shape)} {coords.dtype}")
    ijk = coords[:, -3:].long()
    if ijk.numel() and (int(ijk.min()) < 0 or int(ijk.max()) >= resolution):
        raise ValueError(f"coords must lie in [0, {resolution}), got {int(ijk.min())}..{int(ijk.max())}")
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool, device=coords.device)
    grid[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return grid


def solid_occupancy(grid: torch.Tensor) -> torch.Tensor:
    """Fill the cavities that a surface-voxel shell encloses (6-connected flood fill from outside the grid).

    A closed surface becomes its solid; an open one stays a shell. Surface voxels (`mesh_to_voxels`, the
    decoder's) are one voxel thick, so their IoU alone would punish a half-voxel offset like a miss.

    Args:
        grid: `[R, R, R] bool`.

    Returns:
        `[R, R, R] bool` on `grid.device`, a superset of `grid`.
    """
    filled = ndimage.binary_fill_holes(grid.detach().cpu().numpy())
    return torch.from_numpy(filled).to(grid.device)


def volume_iou(a: torch.Tensor, b: torch.Tensor, resolution: int = 64, fill: bool = True) -> torch.Tensor:
    """Intersection over union of two voxel sets on one grid.

    Args:
        a, b: each either integer coords `[N, 3]` / `[N, 4]` at `resolution` or a dense `[R, R, R] bool` grid.
        resolution: R of coordinate inputs (dense grids bring their own; both must agree).
        fill: compare `solid_occupancy` of both (volumes) instead of the raw voxel sets.

    Returns:
        Scalar float32 tensor in [0, 1]; 1.0 when both are empty.
    """
    grids = []
    for x in (a, b):
        grid = x if x.dtype == torch.bool and x.ndim == 3 else occupancy_grid(x, resolution)
        grids.append(solid_occupancy(grid) if fill else grid)
    ga, gb = grids
    if ga.shape != gb.shape:
        raise ValueError(f"grids differ in shape: {tuple(ga.shape)} vs {tuple(gb.shape)}")
    gb = gb.to(ga.device)
    union = (ga | gb).sum()
    if int(union) == 0:
        return torch.tensor(1.0)
    return ((ga & gb).sum() / union).float()


def occupancy_scores(predicted: torch.Tensor, truth: torch.Tensor, resolution: int) -> dict[str, float]:
    """IoU, precision and recall of an occupied voxel set against the true one (raw sets, no filling).

    Stage 1's and the structure VAE's score: which coarse voxels hold surface.

    Args:
        predicted, truth: integer coords `[N, 3]` / `[N, 4]` at `resolution` (as `occupancy_grid`).
        resolution: R.

    Returns:
        `{"iou", "precision", "recall"}`: floats in [0, 1]; precision is NaN for an empty prediction and recall
        NaN for an empty truth (IoU is 1.0 when both are empty).
    """
    a, b = occupancy_grid(predicted, resolution), occupancy_grid(truth, resolution).to(predicted.device)
    both, na, nb = int((a & b).sum()), int(a.sum()), int(b.sum())
    union = na + nb - both
    return {
        "iou": both / union if union else 1.0,
        "precision": both / na if na else float("nan"),
        "recall": both / nb if nb else float("nan"),
    }


# ------------------------------------------------------------------------------------------------ images
def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim not in (2, 3):
        raise ValueError(f"images must be [H, W] or [H, W, C], got {tuple(a.shape)}")


def silhouette_iou(alpha_a: torch.Tensor, alpha_b: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of two masks: coverage `[H, W]` float in [0, 1] (thresholded, `> threshold`) or bool.

    Returns:
        Scalar float32 tensor in [0, 1]; 1.0 when both masks are empty.
    """
    _check_pair(alpha_a, alpha_b)
    ma = alpha_a if alpha_a.dtype == torch.bool else alpha_a > threshold
    mb = alpha_b if alpha_b.dtype == torch.bool else alpha_b > threshold
    union = (ma | mb).sum()
    if int(union) == 0:
        return torch.tensor(1.0)
    return ((ma & mb).sum() / union).float()


def _pixel_mask(mask: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
    """A `[H, W]` bool mask broadcast over the image's channels -> `[H, W(, C)]` bool."""
    if mask is None:
        return torch.ones_like(image, dtype=torch.bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be [H, W] = {tuple(image.shape[:2])}, got {tuple(mask.shape)}")
    mask = mask.bool()
    return mask[..., None].expand_as(image) if image.ndim == 3 else mask


def mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over all values, or over the pixels where `mask [H, W]` is true (NaN if none)."""
    _check_pair(a, b)
    m = _pixel_mask(mask, a)
    diff = (a.float() - b.float().to(a.device))[m.to(a.device)]
    return diff.square().mean() if diff.numel() else torch.tensor(float("nan"))


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio `10 log10(max_value^2 / MSE)` in dB.

    Args:
        a, b: `[H, W]` or `[H, W, C]` float images in `[0, max_value]`.
        mask: optional `[H, W]` bool, the pixels compared.
        max_value: the signal's peak.

    Returns:
        Scalar float32 tensor in dB; +inf for identical images, NaN for an empty mask.
    """
    error = mse(a, b, mask)
    return 10.0 * torch.log10(torch.tensor(max_value**2) / error.cpu())


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """`[size, size] float32` normalised 2D Gaussian (the separable product of two 1D ones)."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    max_value: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, averaged over channels and positions.

    Local means, variances and covariance are Gaussian-weighted over each fully inside window ("valid"
    positions, no padding); `C1 = (k1 L)^2`, `C2 = (k2 L)^2` with `L = max_value`.

    Args:
        a, b: `[H, W]` or `[H, W, C]` float images in `[0, max_value]`, `H, W >= window`.
        window: window side in pixels (odd).
        sigma: the Gaussian's standard deviation in pixels.

    Returns:
        Scalar float32 tensor in [-1, 1]; 1 for identical images.
    """
    _check_pair(a, b)
    if min(a.shape[:2]) < window:
        raise ValueError(f"images must be at least {window} x {window} for SSIM, got {tuple(a.shape[:2])}")
    x = a.float() if a.ndim == 3 else a.float()[..., None]
    y = b.float().to(x.device) if b.ndim == 3 else b.float().to(x.device)[..., None]
    x, y = x.permute(2, 0, 1)[:, None], y.permute(2, 0, 1)[:, None]  # (H, W, C) -> (C, 1, H, W)
    kernel = gaussian_window(window, sigma).to(x.device)[None, None]  # (1, 1, k, k)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * max_value) ** 2, (k2 * max_value) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    return (num / den).mean()


def mean_abs_error(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference over all values, or over the pixels where `mask [H, W]` is true (NaN if none).

    `pixal3d eval`'s base-colour error: sRGB base colour `[H, W, 3]`, mask = pixels both renders cover.
    """
    _check_pair(a, b)
    m = _pixel_mask(mask, a)
    diff = (a.float() - b.float().to(a.device))[m.to(a.device)]
    return diff.abs().mean() if diff.numel() else torch.tensor(float("nan"))


def fov_error_degrees(fov: float | torch.Tensor, fov_true: float | torch.Tensor) -> float:
    """Absolute FoV error `|fov - fov_true|`, both in radians, returned in degrees."""
    return abs(math.degrees(float(fov) - float(fov_true)))
