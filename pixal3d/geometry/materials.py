"""Evaluate a trimesh mesh's material at surface points: `[M, 6]` = sRGB base colour, metallic, roughness, alpha.

Surface points are given as (face index, barycentric coordinates) in one `trimesh.Trimesh`. Supported visuals:
- `TextureVisuals` with a glTF `PBRMaterial`: `baseColorTexture` (sRGB) x `baseColorFactor` (linear, as glTF
  says; the product is taken in linear light and stored back in sRGB), `metallicRoughnessTexture` (G = roughness,
  B = metallic, linear) x the factors (glTF defaults 1.0), `alphaMode` OPAQUE / MASK (with `alphaCutoff`) / BLEND.
- `TextureVisuals` with an OBJ `SimpleMaterial`: `image` x `diffuse` (both taken as sRGB, OBJ has no colour
  management), alpha from both, metallic 0, roughness from the Phong exponent `Ns` (`sqrt(2 / (Ns + 2))`).
- `ColorVisuals`: per-vertex (interpolated) or per-face RGBA, metallic 0, roughness `DEFAULT_ROUGHNESS`.
- Anything else: `DEFAULT_BASE_COLOR`, metallic 0, roughness `DEFAULT_ROUGHNESS`, opaque.

Textures are sampled bilinearly at texel centres with REPEAT wrapping (glTF's default sampler; trimesh does not
keep a file's sampler settings, so a clamped texture is read as repeating). UVs follow trimesh's convention:
origin at the image's bottom-left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import trimesh

DEFAULT_BASE_COLOR = (0.8, 0.8, 0.8)
DEFAULT_ROUGHNESS = 0.5
Wrap = Literal["repeat", "clamp"]


@dataclass
class MaterialTables:
    """One mesh's material as tensors on one device, ready for `sample_material`."""

    faces: torch.Tensor
    """`[F, 3]` int64 vertex indices."""
    uv: torch.Tensor | None = None
    """`[V, 2]` float32 texture coordinates, or None."""
    vertex_rgba: torch.Tensor | None = None
    """`[V, 4]` float32 sRGB + alpha per vertex, or None."""
    face_rgba: torch.Tensor | None = None
    """`[F, 4]` float32 sRGB + alpha per face, or None."""
    base_texture: torch.Tensor | None = None
    """`[H, W, 4]` float32 sRGB + alpha in [0, 1], or None."""
    base_factor: tuple[float, float, float, float] = (*DEFAULT_BASE_COLOR, 1.0)
    """RGBA multiplier; linear when `pbr`, sRGB otherwise."""
    mr_texture: torch.Tensor | None = None
    """`[H, W, 3]` float32 (R unused, G roughness, B metallic), or None."""
    metallic: float = 0.0
    roughness: float = DEFAULT_ROUGHNESS
    pbr: bool = False
    """True for glTF materials: colour factors multiply in linear light."""
    alpha_mode: Literal["OPAQUE", "MASK", "BLEND"] = "BLEND"
    alpha_cutoff: float = 0.5
    wrap: Wrap = "repeat"


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer function, inverse (IEC 61966-2-1), elementwise on values in [0, 1]."""
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """sRGB transfer function, elementwise on values in [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def image_to_tensor(image, mode: str, device: torch.device) -> torch.Tensor:
    """A PIL image as `[H, W, C]` float32 in [0, 1] (C = len(mode)); top row first."""
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1).copy()).to(device)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, wrap: Wrap = "repeat") -> torch.Tensor:
    """Bilinear texture lookup at texel centres.

    Args:
        texture: `[H, W, C]` float, row 0 = top of the image.
        uv: `[M, 2]` float; (0, 0) is the bottom-left corner of the image, (1, 1) the top-right.
        wrap: "repeat" (modulo) or "clamp" (edge texels).

    Returns:
        `[M, C]` float.
    """
    h, w = texture.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()

    def texel(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        if wrap == "repeat":
            ix, iy = ix % w, iy % h
        else:
            ix, iy = ix.clamp(0, w - 1), iy.clamp(0, h - 1)
        return texture[iy, ix]

    top = texel(x0, y0) * (1 - fx) + texel(x0 + 1, y0) * fx
    bottom = texel(x0, y0 + 1) * (1 - fx) + texel(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def _rgba(color, device: torch.device) -> torch.Tensor:
    """trimesh colours (uint8 RGBA as trimesh stores them, or floats in [0, 1]) as float32 in [0, 1]."""
    array = np.asarray(color)
    scale = 255.0 if array.dtype.kind in "ui" else 1.0
    return torch.from_numpy(array.astype(np.float32) / scale).to(device)


def material_tables(mesh: trimesh.Trimesh, device: torch.device | str = "cpu") -> MaterialTables:
    """Read a mesh's visual into `MaterialTables` (see the module docstring for what is supported)."""
    device = torch.device(device)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long, device=device)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.ColorVisuals):
        if visual.kind == "vertex":
            return MaterialTables(faces=faces, vertex_rgba=_rgba(visual.vertex_colors, device))
        if visual.kind == "face":
            return MaterialTables(faces=faces, face_rgba=_rgba(visual.face_colors, device))
        return MaterialTables(faces=faces)
    if not isinstance(visual, trimesh.visual.TextureVisuals):
        return MaterialTables(faces=faces)
    uv = None
    if visual.uv is not None and len(visual.uv) == len(mesh.vertices):
        uv = torch.as_tensor(np.asarray(visual.uv, dtype=np.float32), device=device)
    material = visual.material
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        return _pbr_tables(material, faces, uv, device)
    if isinstance(material, trimesh.visual.material.SimpleMaterial):
        return _simple_tables(material, faces, uv, device)
    return MaterialTables(faces=faces)


def _pbr_tables(
    material, faces: torch.Tensor, uv: torch.Tensor | None, device: torch.device
) -> MaterialTables:
    factor = material.baseColorFactor
    base_factor = tuple(_rgba(factor, device).tolist()) if factor is not None else (1.0, 1.0, 1.0, 1.0)
    has_uv = uv is not None
    base = material.baseColorTexture
    mr = material.metallicRoughnessTexture
    return MaterialTables(
        faces=faces,
        uv=uv,
        base_texture=image_to_tensor(base, "RGBA", device) if base is not None and has_uv else None,
        base_factor=base_factor,
        mr_texture=image_to_tensor(mr, "RGB", device) if mr is not None and has_uv else None,
        metallic=1.0 if material.metallicFactor is None else float(material.metallicFactor),
        roughness=1.0 if material.roughnessFactor is None else float(material.roughnessFactor),
        pbr=True,
        alpha_mode=material.alphaMode or "OPAQUE",
        alpha_cutoff=0.5 if material.alphaCutoff is None else float(material.alphaCutoff),
    )


def _simple_tables(
    material, faces: torch.Tensor, uv: torch.Tensor | None, device: torch.device
) -> MaterialTables:
    glossiness = material.glossiness
    roughness = (
        DEFAULT_ROUGHNESS
        if glossiness is None
        else min(1.0, (2.0 / (max(float(glossiness), 0.0) + 2.0)) ** 0.5)
    )
    image = material.image
    return MaterialTables(
        faces=faces,
        uv=uv,
        base_texture=image_to_tensor(image, "RGBA", device) if image is not None and uv is not None else None,
        base_factor=tuple(_rgba(material.diffuse, device).tolist()),
        roughness=roughness,
    )


def sample_material(tables: MaterialTables, face: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Material at surface points.

    Args:
        tables: from `material_tables`.
        face: `[M]` int64 face indices.
        bary: `[M, 3]` float barycentric coordinates in those faces.

    Returns:
        `[M, 6]` float32 in [0, 1]: sRGB base colour, metallic, roughness, alpha.
    """
    m, device = face.shape[0], face.device
    corners = tables.faces[face]  # (M, 3)
    factor = torch.tensor(tables.base_factor, device=device, dtype=torch.float32)
    rgba = factor.expand(m, 4).clone()
    uv = None if tables.uv is None else (bary[:, :, None] * tables.uv[corners]).sum(1)
    if tables.base_texture is not None and uv is not None:
        texel = sample_texture(tables.base_texture, uv, tables.wrap)
        if tables.pbr:
            rgba = torch.cat([srgb_to_linear(texel[:, :3]) * factor[:3], texel[:, 3:] * factor[3:]], dim=1)
        else:
            rgba = texel * factor
    if tables.pbr:
        rgba = torch.cat([linear_to_srgb(rgba[:, :3]), rgba[:, 3:]], dim=1)
    if tables.vertex_rgba is not None:
        rgba = (bary[:, :, None] * tables.vertex_rgba[corners]).sum(1)
    if tables.face_rgba is not None:
        rgba = tables.face_rgba[face]
    metallic = torch.full((m,), tables.metallic, device=device)
    roughness = torch.full((m,), tables.roughness, device=device)
    if tables.mr_texture is not None and uv is not None:
        texel = sample_texture(tables.mr_texture, uv, tables.wrap)
        roughness, metallic = roughness * texel[:, 1], metallic * texel[:, 2]
    alpha = rgba[:, 3]
    if tables.pbr and tables.alpha_mode == "OPAQUE":
        alpha = torch.ones_like(alpha)
    elif tables.pbr and tables.alpha_mode == "MASK":
        alpha = (alpha >= tables.alpha_cutoff).float()
    out = torch.cat([rgba[:, :3], metallic[:, None], roughness[:, None], alpha[:, None]], dim=1)
    return out.float().clamp(0, 1)
