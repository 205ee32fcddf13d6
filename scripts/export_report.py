"""The `## Export` section of docs/representation.md: colour round trip and normal-map check at R (issue 3).

Run through `python scripts/representation_report.py --sections "## Export"` (which imports `export_section`), or
alone: `python scripts/export_report.py [--resolution 256]` prints the section.

1. Colour round trip: a box whose six faces carry a 5 x 5 checkerboard base-colour texture -> voxels at R ->
   `voxels_to_glb` -> read back with trimesh; base colour at 10k uniform surface samples, looked up through the
   GLB's own UVs, against the source checker, on samples at least 2 voxels from a checker line or box edge.
2. Normal map: a 0.8-cube whose top face carries sinusoidal bumps (amplitude 0.03, period 0.2) -> voxels at R ->
   dual-grid mesh (the fine mesh) -> clean-up and simplify to 2,000 faces -> bake. At 20k samples on the simplified
   mesh, the normal a glTF viewer reads from the normal map (`bake.decode_normal_map`) is compared with the
   simplified mesh's face normal and with the fine mesh's normal at the nearest point.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from pixal3d.geometry import bake
from pixal3d.geometry.cleanup import clean_mesh
from pixal3d.geometry.dual_grid import mesh_to_voxels, normalize_to_unit_cube
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh
from pixal3d.geometry.export import voxels_to_glb

CHECKER_SQUARES = 5
CHECKER_COLOURS = np.array([[0.85, 0.15, 0.10], [0.10, 0.30, 0.80]])
BOX_EXTENTS = np.array([0.96, 0.70, 0.50])
BOX_FACES = [
    (0, 1, (1, 2)),
    (0, -1, (1, 2)),
    (1, 1, (0, 2)),
    (1, -1, (0, 2)),
    (2, 1, (0, 1)),
    (2, -1, (0, 1)),
]


def checker_box() -> trimesh.Trimesh:
    """A box whose every face maps its [0, 1]^2 UV square onto one 5 x 5 checkerboard (PBR base colour)."""
    half = BOX_EXTENTS / 2
    vertices, uvs, faces = [], [], []
    for axis, sign, (a, b) in BOX_FACES:
        local = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
        corners = np.zeros((4, 3))
        corners[:, axis] = sign * half[axis]
        corners[:, a] = (local[:, 0] - 0.5) * BOX_EXTENTS[a]
        corners[:, b] = (local[:, 1] - 0.5) * BOX_EXTENTS[b]
        quad = np.array([[0, 1, 2], [0, 2, 3]]) + 4 * len(vertices)
        if np.cross(corners[1] - corners[0], corners[2] - corners[0])[axis] * sign < 0:
            quad = quad[:, ::-1]
        vertices.append(corners)
        uvs.append(local)
        faces.append(quad)
    cell = np.arange(500) * CHECKER_SQUARES // 500
    image = np.rint(CHECKER_COLOURS[(cell[:, None] + cell[None, :]) % 2] * 255).astype(np.uint8)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(image))
    visual = trimesh.visual.TextureVisuals(uv=np.concatenate(uvs), material=material)
    return trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), visual=visual, process=False)


def colour_round_trip(
    resolution: int, texture_size: int = 2048, faces: int = 20_000
) -> tuple[list[str], float]:
    """Table rows for the checker box at `resolution`, and the median error."""
    voxels = mesh_to_voxels(normalize_to_unit_cube(checker_box()), resolution)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = voxels_to_glb(voxels, Path(tmp) / "box.glb", faces, texture_size)
        seconds = time.perf_counter() - start
        (mesh,) = trimesh.load(path).geometry.values()
    points, face_id = trimesh.sample.sample_surface(mesh, 10_000, seed=0)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face_id], points)
    uv = np.einsum("mc,mcd->md", bary, mesh.visual.uv[mesh.faces[face_id]])
    uv[:, 1] = 1 - uv[:, 1]  # trimesh flips glTF v on load
    baked = bake.lookup_texture(np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")), uv)
    rel = points / (BOX_EXTENTS / 2)
    axis = np.argmax(np.abs(rel), axis=1)
    face = axis * 2 + (rel[np.arange(len(points)), axis] < 0)
    axes = np.array([f[2] for f in BOX_FACES])[face]
    local = (np.take_along_axis(points, axes, axis=1) + BOX_EXTENTS[axes] / 2) / BOX_EXTENTS[axes]
    cell = np.floor(np.clip(local, 0, 1 - 1e-9) * CHECKER_SQUARES).astype(int)
    truth = CHECKER_COLOURS[(cell[:, 0] + cell[:, 1]) % 2]
    to_line = (
        np.abs(local * CHECKER_SQUARES - np.rint(local * CHECKER_SQUARES))
        * BOX_EXTENTS[axes]
        / CHECKER_SQUARES
    )
    to_rim = BOX_EXTENTS / 2 - np.abs(points)
    to_rim[np.arange(len(points)), axis] = 1.0
    away = (to_line.min(axis=1) > 2 / resolution) & (to_rim.min(axis=1) > 2 / resolution)
    error = np.abs(baked - truth).mean(axis=1)
    median = float(np.median(error[away]))
    rows = [
        f"| checker box, R = {resolution}, {len(voxels):,} voxels -> {len(mesh.faces):,} faces, {texture_size}^2 "
        f"| {away.sum():,} of 10,000 | {median:.4f} | {np.quantile(error[away], 0.9):.4f} "
        f"| {np.median(error):.4f} | {seconds:.1f} s | {'yes' if median <= 0.05 else 'NO'} |"
    ]
    return rows, median


def bumpy_box(subdivisions: int = 6) -> trimesh.Trimesh:
    """A 0.8-cube with sinusoidal bumps on its top (+y) face, fading out 0.05 before the rim."""
    mesh = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    for _ in range(subdivisions):
        mesh = mesh.subdivide()
    v = mesh.vertices.copy()
    top = v[:, 1] > 0.4 - 1e-9
    fade = np.clip((0.4 - np.abs(v[:, [0, 2]])) / 0.05, 0, 1).prod(axis=1)
    v[top, 1] += 0.03 * fade[top] * np.sin(v[top, 0] * 2 * np.pi / 0.2) * np.sin(v[top, 2] * 2 * np.pi / 0.2)
    return trimesh.Trimesh(v, mesh.faces, process=False)


def normal_map_check(resolution: int, texture_size: int = 2048, faces: int = 2_000) -> list[str]:
    """Table rows: decoded normal-map normals vs coarse face normals and vs the fine surface."""
    voxels = mesh_to_voxels(bumpy_box(), resolution)
    fine = voxels_to_mesh(voxels)
    coarse = clean_mesh(fine, faces)

    def sampler(points: torch.Tensor) -> torch.Tensor:
        return sample_attributes(voxels, points)

    baked = bake.bake_textures(coarse, sampler, texture_size, fine_mesh=fine, sample_at_vertices=True)
    tm = trimesh.Trimesh(baked.vertices, baked.faces, process=False)
    points, face_id = trimesh.sample.sample_surface(tm, 20_000, seed=0)
    bary = trimesh.triangles.points_to_barycentric(tm.triangles[face_id], points)
    decoded = bake.decode_normal_map(baked, face_id, bary)
    fine_face, fine_bary = bake.closest_surface_points(fine, points)
    fine.merge_vertices()
    truth = np.einsum(
        "mc,mcd->md", fine_bary, np.asarray(fine.vertex_normals)[np.asarray(fine.faces)[fine_face]]
    )

    def angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    inner = (np.abs(points) < 0.35).sum(axis=1) >= 2
    regions = {"flat faces": inner & (points[:, 1] < 0.3), "bumpy top": inner & (points[:, 1] > 0.3)}
    rows = []
    for name, sel in regions.items():
        to_face = angles(decoded[sel], tm.face_normals[face_id][sel])
        to_fine = angles(decoded[sel], truth[sel])
        rows.append(
            f"| {name} | {sel.sum():,} | {np.median(to_face):.2f} / {np.quantile(to_face, 0.95):.2f} "
            f"| {np.median(to_fine):.2f} / {np.quantile(to_fine, 0.95):.2f} |"
        )
    return [
        f"Fine mesh {len(fine.faces):,} faces (R = {resolution}) -> {len(baked.faces):,} faces, {texture_size}^2.",
        "",
        *rows,
    ]


def export_section(args: argparse.Namespace) -> str:
    """Markdown body of `## Export`."""
    r = args.resolution
    colour_rows, _ = colour_round_trip(r)
    normal_rows = normal_map_check(r)
    return "\n".join(
        [
            "The export chain (`pixal3d.geometry.export.voxels_to_glb`: dual-grid mesh -> floaters, holes -> quadric "
            "simplification -> xatlas -> bake -> GLB), measured by `scripts/export_report.py`. Every GLB written "
            "here and in the tests passes the Khronos glTF validator with 0 errors.",
            "",
            "**Colour round trip.** A box (0.96 x 0.70 x 0.50) whose six faces each carry a 5 x 5 checkerboard "
            "base-colour texture (sRGB (0.85, 0.15, 0.10) / (0.10, 0.30, 0.80)) -> voxels -> GLB -> read back with "
            "trimesh. Error = mean absolute sRGB difference over R, G, B at uniform surface samples, looked up "
            "through the GLB's UVs, on samples at least 2 voxels from a checker line or box edge (all samples in "
            "the 'all' column). Target (issue 3): median <= 0.05.",
            "",
            "| case | samples used | median error | p90 | median, all samples | voxels -> GLB | target met |",
            "|---|---|---|---|---|---|---|",
            *colour_rows,
            "",
            "**Normal map.** A 0.8-cube with sinusoidal bumps (amplitude 0.03, period 0.2) on its top face, "
            "voxelised, simplified and baked. At 20,000 uniform samples on the simplified mesh, away from the "
            "cube's edges, the normal a glTF viewer reads (normal-map texel in the interpolated TANGENT/NORMAL "
            "frame) is compared with the simplified mesh's face normal and with the fine mesh's normal at the "
            "nearest point. Angles in degrees, median / 95th percentile. Expected: flat faces agree with the face "
            "normal (<= 5 deg); on the bumps the map departs from the face normal and follows the fine surface.",
            "",
            *normal_rows[:2],
            "| region | samples | vs simplified face normal | vs fine-mesh normal |",
            "|---|---|---|---|",
            *normal_rows[2:],
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    print(export_section(parser.parse_args()))


if __name__ == "__main__":
    main()
