"""Mesh <-> sparse PBR voxels (flexible dual grid, DESIGN section 4).

Frame and units: the volume cube `[-0.5, 0.5]^3` (DESIGN section 2); voxel `(i, j, k)` at resolution `R` covers
`[-0.5 + i/R, -0.5 + (i+1)/R)` per axis. Internally the code works in *grid units* `g = (p + 0.5) * R`, where voxel
`(i, j, k)` is the unit box `[i, i+1) x [j, j+1) x [k, k+1)` and grid corners are integer points.

- `mesh_to_voxels`: triangles -> voxels they touch (triangle/box SAT overlap, then exact clipping for the area and
  centroid inside each voxel), dual vertex = QEF minimiser of the clipped triangles' planes (sharp edges survive),
  signed crossings of primal grid edges, and PBR attributes sampled from the mesh's material.
- `voxels_to_mesh`: one quad per crossing edge from its four voxels, found by a hashed-coordinate gather.
- `sample_attributes`: trilinear lookup of the sparse attribute volume at arbitrary points (used by the bake).
"""

from __future__ import annotations

import logging

import torch
import trimesh

from pixal3d.errors import InputError
from pixal3d.geometry.voxels import SparseVoxels

logger = logging.getLogger(__name__)

RESOLUTIONS = (64, 128, 256, 512)


def check_resolution(resolution: int) -> None:
    """Raise `InputError` unless `resolution` is one of `RESOLUTIONS`."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in RESOLUTIONS:
        raise InputError(
            f"voxel resolution must be one of {RESOLUTIONS}, got {resolution!r}; pick the nearest allowed value"
        )


def normalize_to_unit_cube(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene, margin: float = 0.02
) -> trimesh.Trimesh | trimesh.Scene:
    """A copy of a mesh or scene centred on its bounding box and scaled into the volume cube.

    The longest side of the (transformed) bounding box becomes `1 - 2 * margin`, so the asset spans
    `[-0.5 + margin, 0.5 - margin]` along that axis. Scenes keep their graph; the root gets the transform.

    Args:
        mesh_or_scene: the asset, any units.
        margin: empty border left on each side, in volume units, in `[0, 0.25)`.

    Returns:
        A transformed copy of the same type.
    """
    raise NotImplementedError


def mesh_to_voxels(
    mesh_or_scene: trimesh.Trimesh | trimesh.Scene,
    resolution: int,
    device: torch.device | str = "cpu",
    with_attributes: bool = True,
) -> SparseVoxels:
    """Voxelise a mesh or scene (already in the volume frame) into sparse PBR voxels.

    Args:
        mesh_or_scene: triangles in the volume cube; need not be watertight or manifold. Scene node transforms are
            applied. Materials: PBR (glTF) or simple (OBJ/MTL) with textures, vertex/face colours, or none.
        resolution: R, one of `RESOLUTIONS`.
        device: where the computation runs and the result lives.
        with_attributes: sample the material into `attrs [N, 6]`; when False, `attrs` is None.

    Returns:
        `SparseVoxels` with coords sorted by key `i*R*R + j*R + k`.
    """
    raise NotImplementedError


def voxels_to_mesh(voxels: SparseVoxels) -> trimesh.Trimesh:
    """Dual-grid mesh of a voxel set: one quad per crossing edge, split into two triangles.

    Returns:
        `trimesh.Trimesh` in the volume frame (not processed: no vertex merging). Vertices are the dual vertices of
        the voxels that some face uses. When `voxels.attrs` is set, `vertex_attributes["pbr"]` holds `[V, 6]`
        float32 (sRGB base colour, metallic, roughness, alpha) and the visual carries RGBA vertex colours.
    """
    raise NotImplementedError


def sample_attributes(voxels: SparseVoxels, points: torch.Tensor) -> torch.Tensor:
    """Trilinear sample of the sparse attribute volume.

    Args:
        voxels: a voxel set with `attrs`.
        points: `[M, 3]` float, volume frame.

    Returns:
        `[M, 6]` float32 attributes: trilinear over the (up to 8) surrounding voxel centres that exist, weights
        renormalised; the nearest voxel's value where none of the 8 exists.
    """
    raise NotImplementedError
