"""How close two bakes of one surface are, and how much of an atlas the charts cover (tests and benchmarks).

`compare_bakes` reads both textured meshes where a viewer would: each probe point goes to its closest point on
each mesh, whose UV reads the base colour (bilinear) and whose normal map, decoded in the viewer's tangent frame
(`bake.decode_normal_map`), gives the shading normal. It reports the colour difference in 1/255 steps and the
angle between the normals in degrees.
"""

from __future__ import annotations

import numpy as np
import trimesh

from pixal3d.geometry.bake import TexturedMesh, closest_surface_points, decode_normal_map, lookup_texture
from pixal3d.geometry.uv import rasterize_uv


def read_surface(mesh: TexturedMesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(rgb [M, 3] in [0, 1], normal [M, 3] unit)` that a viewer shows at the mesh's closest point to each point."""
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces.astype(np.int64), process=False)
    face, bary = closest_surface_points(shape, np.asarray(points, dtype=np.float32), candidates=8)
    corners = mesh.faces[face].astype(np.int64)
    uv = np.einsum("mc,mcd->md", bary, mesh.uvs[corners])
    rgb = lookup_texture(mesh.base_color, uv)[:, :3]
    return rgb, decode_normal_map(mesh, face, bary)


def compare_bakes(reference: TexturedMesh, other: TexturedMesh, points: np.ndarray) -> dict[str, float]:
    """Colour and normal differences between two bakes at probe points `[M, 3]` on the surface.

    Returns:
        `colour_mean`, `colour_p95`, `colour_max` (mean absolute RGB difference per point, in 1/255 steps) and
        `normal_mean_deg`, `normal_p95_deg`, `normal_max_deg` (angle between the decoded normals).
    """
    rgb_a, n_a = read_surface(reference, points)
    rgb_b, n_b = read_surface(other, points)
    colour = np.abs(rgb_a - rgb_b).mean(axis=1) * 255.0
    angle = np.degrees(np.arccos(np.clip((n_a * n_b).sum(axis=1), -1.0, 1.0)))
    return {
        "colour_mean": float(colour.mean()),
        "colour_p95": float(np.quantile(colour, 0.95)),
        "colour_max": float(colour.max()),
        "normal_mean_deg": float(angle.mean()),
        "normal_p95_deg": float(np.quantile(angle, 0.95)),
        "normal_max_deg": float(angle.max()),
    }


def surface_truth(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(points [M, 3], rgb [M, 3], normals [M, 3])` sampled on a fine mesh with `pbr` (or colour) vertex attributes:
    the colour interpolated over the face, the normal that of the face (the surface as the voxels describe it)."""
    from pixal3d.geometry.export import vertex_attributes

    points, face = trimesh.sample.sample_surface(mesh, count, seed=seed)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face], points)
    rgb = np.einsum("mc,mcd->md", bary, vertex_attributes(mesh)[mesh.faces[face]][:, :, :3])
    return points.astype(np.float32), rgb, np.asarray(mesh.face_normals[face])


def bake_error(mesh: TexturedMesh, points: np.ndarray, rgb: np.ndarray, normals: np.ndarray) -> dict[str, float]:
    """How far a bake is from the fine surface it was baked from (`surface_truth`): colour in 1/255 steps and the
    angle between the decoded and the true face normal, in degrees (mean, median, p95)."""
    got_rgb, got_n = read_surface(mesh, points)
    colour = np.abs(got_rgb - rgb).mean(axis=1) * 255.0
    angle = np.degrees(np.arccos(np.clip((got_n * normals).sum(axis=1), -1.0, 1.0)))
    return {"colour_mean": float(colour.mean()), "colour_p95": float(np.quantile(colour, 0.95)),
            "normal_mean_deg": float(angle.mean()), "normal_median_deg": float(np.median(angle)),
            "normal_p95_deg": float(np.quantile(angle, 0.95))}


def texel_efficiency(mesh: TexturedMesh) -> float:
    """The share of the atlas's texels whose centre some triangle covers (the rest is padding and gaps)."""
    size = mesh.base_color.shape[0]
    face_id, _ = rasterize_uv(mesh.uvs, mesh.faces.astype(np.int64), size)
    return float((face_id >= 0).mean())
