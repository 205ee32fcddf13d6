"""`Asset`: what `Pixal3DPipeline.__call__` returns, and its export to a textured GLB (DESIGN sections 4, 6, 11).

Everything is in the volume frame of the input camera (DESIGN section 2: +x right, +y up, +z towards the camera,
the cube `[-0.5, 0.5]^3`), which is also glTF's frame: the GLB needs no rotation. The material lives in
`voxels.attrs` (sRGB base colour, metallic, roughness, alpha per fine voxel); `export` bakes it into base-colour,
metallic-roughness and normal textures through the geometry export chain (`geometry.export.export_mesh`).

`contact_sheet` renders a written GLB from four views beside the input image (the CLI's `--preview`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh
from PIL import Image

from pixal3d.camera import Camera, look_at
from pixal3d.geometry.bake import Recolor, TexturedMesh
from pixal3d.geometry.cleanup import CleanupOptions
from pixal3d.geometry.export import ExportDevice, ExportOptions
from pixal3d.geometry.gltf import ImageFormat
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.image_texels import ImageTexelOptions, prepare_view, project_colors

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
        depth: `[S/4, S/4] float32` the depth head's map of the visible surface (depth along the view axis, volume
            units), or None without a depth head.
        image_texels: how `export` projects the input pixels onto the visible texels (None: it does not).
        cleanup: the export's clean-up thresholds (None: `CleanupOptions()`). With the silhouette enforced the
            pipeline keeps every fragment: what is left inside the mask mends the visible surface, and dropping
            small pieces as floaters reopened holes (input-view coverage 0.974 -> 0.904 on examples/ball.png).
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
    depth: torch.Tensor | None = None
    image_texels: ImageTexelOptions | None = None
    cleanup: CleanupOptions | None = None

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
        device: ExportDevice = "cpu",
    ) -> Path:
        """Write a textured GLB (or OBJ + MTL + textures) atomically (no partial file on failure); returns the path.

        Args:
            path: output file; its suffix picks the writer (`.glb`, `.obj`: `geometry.writers.WRITERS`); its
                folder must exist.
            faces: face budget of the simplified mesh (default: `self.faces`).
            texture_size: side of the square textures, 256..8192 (default: `self.texture_size`).
            image_format: "png" or "webp".
            include_pbr: True (default) writes base-colour, metallic-roughness and normal textures; False the
                base colour only (a dielectric material).
            device: "cpu" (default: xatlas and the numpy bake, the reference), "cuda" (the pure-PyTorch export on
                the GPU), "auto" (the GPU when there is one) or "torch-cpu" (see `export.ExportOptions.device`).

        The file is baked from `self.mesh` (silhouette patches and image colours included); with `image_texels`
        set, every texel the input camera sees takes its base colour from the input pixels at texel precision.
        """
        from pixal3d.geometry.export import ExportOptions
        from pixal3d.geometry.writers import writer_for

        options = ExportOptions(
            faces=self.faces if faces is None else faces,
            texture_size=self.texture_size if texture_size is None else texture_size,
            image_format=image_format,
            include_pbr=include_pbr,
            device=device,
        )
        writer = writer_for(path)  # an unknown suffix or a missing folder fails before the bake
        return writer(Path(path), self.bake(options), image_format, include_pbr, None)

    def bake(self, options: ExportOptions | None = None, timings: dict[str, float] | None = None) -> TexturedMesh:
        """Clean, simplify, unwrap and bake `self.mesh`: the `TexturedMesh` value that `export` hands a writer.

        Args:
            options: face budget, texture size and export device (`geometry.export.ExportOptions`); None: this
                asset's `faces` and `texture_size` on the CPU path.
            timings: filled with the seconds of each export step when given (`pixal3d bench`).
        """
        from pixal3d.geometry.export import ExportOptions, textured_mesh, vertex_attribute_sampler

        options = options or ExportOptions(faces=self.faces, texture_size=self.texture_size)
        start = time.perf_counter()
        recolor = None
        if self.image_texels is not None:
            recolor = texel_recolor(self.mesh, self.image, self.camera, self.image_texels, options.torch_device())
        # The PyTorch path reads the vertex attributes itself; only the CPU bake needs the KD-tree sampler.
        sampler = vertex_attribute_sampler(self.mesh) if options.torch_device() is None else None
        if timings is not None:
            timings["input view + sampler"] = time.perf_counter() - start
        return textured_mesh(self.mesh, sampler, options, cleanup=self.cleanup, sample_at_vertices=True,
                             recolor=recolor, resolution=self.voxels.resolution, timings=timings)


def texel_recolor(mesh: trimesh.Trimesh, image: Image.Image, camera: Camera, options: ImageTexelOptions,
                  device: torch.device | None = None) -> Recolor:
    """`(points [M, 3], normals [M, 3]) -> (colors [M, 3], weight [M])`: the input pixels at surface points.

    numpy arrays in, numpy arrays out (the CPU bake); torch tensors in, tensors on their device out (the PyTorch
    export, which keeps its texels on the GPU). `device`: where the input view's depth buffer is rasterised.
    """
    rgba = torch.from_numpy(np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0)
    view = prepare_view(rgba, camera.with_size(rgba.shape[0]), mesh, options, device)

    def recolor(points, normals):
        if isinstance(points, torch.Tensor):
            return project_colors(points, normals, view, options)
        colors, weight = project_colors(torch.from_numpy(points), torch.from_numpy(normals), view, options)
        return colors.numpy(), weight.numpy()

    return recolor


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


def contact_sheet(glb_path: str | os.PathLike, image: Image.Image, size: int = 256,
                  camera: Camera | None = None, orbit: bool = True) -> Image.Image:
    """Render the GLB beside the input: from the input camera, as an overlay on the input, and from four views.

    Args:
        glb_path: a GLB written by `Asset.export` (volume frame).
        image: the (preprocessed) input image, any mode.
        size: tile side in pixels.
        camera: the input camera (`Asset.camera`); None leaves out the input-view and overlay tiles.
        orbit: add the four orbit views (False: the input, input-view and overlay tiles only, the demo's check).

    Returns:
        An RGB image on a grey background, `size` high: input, [input-camera render, overlay,] front, right, back,
        left. The overlay blends the render over the input and marks in magenta the pixels where only one of them
        has the object (silhouette disagreement), so the pixel alignment shows at a glance.
    """
    from pixal3d.render import mesh_from_trimesh, render_mesh

    mesh = mesh_from_trimesh(trimesh.load(glb_path))
    background = np.array([0.22, 0.22, 0.24], dtype=np.float32)
    rgba_in = image.convert("RGBA").resize((size, size), Image.Resampling.BILINEAR)
    tiles = [_on_background(rgba_in, background)]
    cameras = preview_cameras(size) if orbit else []
    if camera is not None:
        cameras = [camera.with_size(size), *cameras]
    renders = [render_mesh(mesh, c).rgba.clamp(0, 1).cpu().numpy() for c in cameras]  # (S, S, 4) each
    for i, rgba in enumerate(renders):
        rgb = rgba[..., :3] + (1 - rgba[..., 3:4]) * background
        tiles.append((rgb * 255).round().astype(np.uint8))
        if camera is not None and i == 0:
            tiles.append(_overlay(tiles[0], tiles[-1], np.asarray(rgba_in)[..., 3] > 127, rgba[..., 3] > 0.5))
    return Image.fromarray(np.concatenate(tiles, axis=1))


def _overlay(inp: np.ndarray, render: np.ndarray, mask_in: np.ndarray, mask_out: np.ndarray) -> np.ndarray:
    """Half-and-half blend of two `[S, S, 3] uint8` tiles, magenta where exactly one of the masks is set."""
    blend = (inp.astype(np.float32) + render.astype(np.float32)) / 2
    blend[mask_in != mask_out] = (255, 0, 255)
    return blend.round().astype(np.uint8)


def _on_background(image: Image.Image, background: np.ndarray) -> np.ndarray:
    """Composite an RGBA image whose colour is premultiplied (preprocess output) over `background`."""
    a = np.asarray(image, dtype=np.float32) / 255
    rgb = a[..., :3] + (1 - a[..., 3:4]) * background
    return (rgb * 255).round().clip(0, 255).astype(np.uint8)
