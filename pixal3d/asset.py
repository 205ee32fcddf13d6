"""`Asset`: what `Pixal3DPipeline.__call__` returns, and its export to a textured GLB (DESIGN sections 4, 6, 11).

Everything is in the volume frame of the input camera (DESIGN section 2: +x right, +y up, +z towards the camera,
the cube `[-0.5, 0.5]^3`), which is also glTF's frame: the GLB needs no rotation. The material lives in
`voxels.attrs` (sRGB base colour, metallic, roughness, alpha per fine voxel); `export` bakes it into base-colour,
metallic-roughness and normal textures through the geometry export chain (`geometry.export.voxels_to_glb`).

`contact_sheet` renders a written GLB from four views beside the input image (the CLI's `--preview`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh
from PIL import Image

from pixal3d.camera import Camera, look_at
from pixal3d.errors import InputError
from pixal3d.geometry.gltf import ImageFormat
from pixal3d.geometry.voxels import SparseVoxels

FovSource = Literal["given", "estimated", "default", "cameras"]


@dataclass(eq=False)
class Asset:
    """A generated 3D asset.

    Attributes:
        mesh: the detailed dual-grid surface, volume frame; vertex colours and `vertex_attributes["pbr"]`
            `[V, 6]` carry the PBR attributes (unsimplified, untextured: `export` does the rest).
        voxels: the sparse PBR voxels at `R_hr` the mesh comes from (`attrs` set).
        camera: the input view's camera (FoV, `d = 0.5 / tan(fov / 2)`, image side S).
        image: the preprocessed input, `S x S` RGBA (RGB composited on black).
        fov_source: where the FoV came from: "given", "estimated" (FoV head), "default" or "cameras".
        timings: seconds per step, in order (preprocess, encode, camera, structure, shape, texture, decode).
        seed: the seed used, or None when a generator was passed.
        faces: default face budget of `export`.
        texture_size: default texture side of `export`, pixels.
    """

    mesh: trimesh.Trimesh
    voxels: SparseVoxels
    camera: Camera
    image: Image.Image
    fov_source: FovSource
    timings: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    faces: int = 100_000
    texture_size: int = 2048

    @property
    def meshes(self) -> list[Asset]:
        """`[self]`: the diffusers-style result list (`pipe(image=...).meshes[0].export(...)`), one per call."""
        return [self]

    def export(
        self,
        path: str | os.PathLike,
        faces: int | None = None,
        texture_size: int | None = None,
        image_format: ImageFormat = "png",
        include_pbr: bool = True,
    ) -> Path:
        """Write a textured GLB atomically (no partial file on failure); returns the path.

        Args:
            path: output `.glb`; its folder must exist.
            faces: face budget of the simplified mesh (default: `self.faces`).
            texture_size: side of the square textures, 256..8192 (default: `self.texture_size`).
            image_format: "png" or "webp".
            include_pbr: True (default) writes base-colour, metallic-roughness and normal textures; False the
                base colour only (a dielectric material).
        """
        if not isinstance(include_pbr, bool):
            raise InputError(f"include_pbr must be True or False, got {include_pbr!r}")
        from pixal3d.geometry.export import voxels_to_glb

        return voxels_to_glb(
            self.voxels,
            path,
            faces=self.faces if faces is None else faces,
            texture_size=self.texture_size if texture_size is None else texture_size,
            image_format=image_format,
            include_pbr=include_pbr,
        )


def preview_cameras(size: int = 256, fov: float = math.radians(35.0), elevation: float = math.radians(20.0)) -> list[Camera]:
    """Four cameras around the volume cube (front, right, back, left), looking at its centre, `size` pixels."""
    distance = 0.9 / math.sin(fov / 2)  # the cube's circumscribed sphere (radius ~0.87) fits the view
    cams = []
    for azimuth in (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi):
        eye = distance * torch.tensor([
            math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth)
        ], dtype=torch.float64)
        cams.append(Camera(fov=fov, size=size, cam_to_world=look_at(eye, torch.zeros(3, dtype=torch.float64))))
    return cams


def contact_sheet(glb_path: str | os.PathLike, image: Image.Image, size: int = 256) -> Image.Image:
    """Render the GLB's mesh from four views (`preview_cameras`) with the input image on the left.

    Args:
        glb_path: a GLB written by `Asset.export` (volume frame).
        image: the (preprocessed) input image, any mode.
        size: tile side in pixels.

    Returns:
        An RGB image `size x 5 size`: input, front, right, back, left, on a grey background.
    """
    from pixal3d.render import mesh_from_trimesh, render_mesh

    mesh = mesh_from_trimesh(trimesh.load(glb_path))
    background = np.array([0.22, 0.22, 0.24], dtype=np.float32)
    tiles = [_on_background(image.convert("RGBA").resize((size, size), Image.Resampling.BILINEAR), background)]
    for camera in preview_cameras(size):
        rgba = render_mesh(mesh, camera).rgba.clamp(0, 1).cpu().numpy()  # (S, S, 4)
        rgb = rgba[..., :3] + (1 - rgba[..., 3:4]) * background
        tiles.append((rgb * 255).round().astype(np.uint8))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def _on_background(image: Image.Image, background: np.ndarray) -> np.ndarray:
    """Composite an RGBA image whose colour is premultiplied (preprocess output) over `background`."""
    a = np.asarray(image, dtype=np.float32) / 255
    rgb = a[..., :3] + (1 - a[..., 3:4]) * background
    return (rgb * 255).round().clip(0, 255).astype(np.uint8)
