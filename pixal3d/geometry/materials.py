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

from pixal3d.transfer import to_device

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
    return to_device(torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1).copy()), device)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, wrap: Wrap = "repeat") -> torch.Tensor:
    """Bilinear texture lookup at texel centres.

    Args:
        texture: `[H, W, C]` float, row 0 = top of the image.
        uv: `[M, 2]` float; (0, 0) is the bottom-left corner of the image, (1, 1) the top-right.
        wrap: "repeat" (modulo) or "clamp" (edge texels).

    Returns:
        `[M, C]` float.
    """
    flat = _FlatTextures.of([texture], texture.shape[2], texture.device)
    m = uv.shape[0]
    table = torch.zeros(m, dtype=torch.long, device=uv.device)
    return flat.sample(table, uv, torch.full((m,), wrap == "repeat", device=uv.device))


def _rgba(color, device: torch.device) -> torch.Tensor:
    """trimesh colours (uint8 RGBA as trimesh stores them, or floats in [0, 1]) as float32 in [0, 1]."""
    array = np.asarray(color)
    scale = 255.0 if array.dtype.kind in "ui" else 1.0
    return to_device(torch.from_numpy(array.astype(np.float32) / scale), device)


def material_tables(mesh: trimesh.Trimesh, device: torch.device | str = "cpu") -> MaterialTables:
    """Read a mesh's visual into `MaterialTables` (see the module docstring for what is supported)."""
    device = torch.device(device)
    faces = to_device(np.asarray(mesh.faces, dtype=np.int64), device)
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
        uv = to_device(np.asarray(visual.uv, dtype=np.float32), device)
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
    base_factor = tuple(_rgba(factor, torch.device("cpu")).tolist()) if factor is not None else (1.0, 1.0, 1.0, 1.0)
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
        base_factor=tuple(_rgba(material.diffuse, torch.device("cpu")).tolist()),
        roughness=roughness,
    )


@dataclass
class _FlatTextures:
    """The textures of several tables as one texel list: table t's texel (row y, column x) is
    `texels[start[t] + y * width[t] + x]`; a table without a texture has a 1 x 1 stand-in (never used)."""

    texels: torch.Tensor  # [N, C] float32
    start: torch.Tensor  # [T] int64
    height: torch.Tensor  # [T] int64
    width: torch.Tensor  # [T] int64

    @classmethod
    def of(cls, textures: list[torch.Tensor | None], channels: int, device: torch.device) -> _FlatTextures:
        blocks = [t.reshape(-1, channels) if t is not None else torch.zeros(1, channels, device=device)
                  for t in textures]
        sizes = [(t.shape[0], t.shape[1]) if t is not None else (1, 1) for t in textures]
        start = np.cumsum([0] + [h * w for h, w in sizes])[:-1]
        height, width = zip(*sizes, strict=True)
        return cls(_cat(blocks), *(to_device(np.asarray(v, dtype=np.int64), device) for v in (start, height, width)))

    def sample(self, table: torch.Tensor, uv: torch.Tensor, repeat: torch.Tensor) -> torch.Tensor:
        """`sample_texture` of each point's table: `[M, C]` at `uv [M, 2]`, `repeat [M]` bool (else clamp)."""
        h, w, start = self.height[table], self.width[table], self.start[table]
        x = uv[:, 0] * w - 0.5
        y = (1.0 - uv[:, 1]) * h - 0.5
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        x0, y0 = x0.long(), y0.long()

        def texel(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
            ix = torch.where(repeat, ix % w, torch.minimum(ix.clamp(min=0), w - 1))
            iy = torch.where(repeat, iy % h, torch.minimum(iy.clamp(min=0), h - 1))
            return self.texels[start + iy * w + ix]

        top = texel(x0, y0) * (1 - fx) + texel(x0 + 1, y0) * fx
        bottom = texel(x0, y0 + 1) * (1 - fx) + texel(x0 + 1, y0 + 1) * fx
        return top * (1 - fy) + bottom * fy


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


@dataclass
class FusedMaterials:
    """Several `MaterialTables` (same device) as one set of tensors, so that one `sample_materials` call evaluates
    points of any of them (one set of kernels for all materials, no per-material loop or host sync).

    Per-table rows (faces, vertices, face colours) are concatenated, textures flattened into one texel list, and
    scalars become `[T]` tensors; `any_*` say on the host which branches some table needs.
    """

    faces: torch.Tensor  # [F, 3] int64 rows of `uv` / `vertex_rgba`
    face_start: torch.Tensor  # [T] int64, first row of each table in `faces`
    uv: torch.Tensor  # [V, 2] float32 (zeros for tables without)
    vertex_rgba: torch.Tensor | None  # [V, 4] float32 sRGB + alpha (zeros for tables without), or None
    face_rgba: torch.Tensor | None  # [F, 4] float32 sRGB + alpha (zeros for tables without), or None
    base: _FlatTextures | None
    mr: _FlatTextures | None
    flags: dict[str, torch.Tensor]  # [T] bool: pbr, base, mr, vertex_rgba, face_rgba, opaque, mask, repeat
    factor: torch.Tensor  # [T, 4] float32
    metallic: torch.Tensor  # [T] float32
    roughness: torch.Tensor  # [T] float32
    alpha_cutoff: torch.Tensor  # [T] float32
    any_pbr: bool


def fuse_materials(tables: list[MaterialTables]) -> FusedMaterials:
    """`FusedMaterials` of `tables` (one or more, all on one device); a single table's tensors are used as they are."""
    device = tables[0].faces.device
    has = {
        "pbr": [t.pbr for t in tables],
        "base": [t.base_texture is not None and t.uv is not None for t in tables],
        "mr": [t.mr_texture is not None and t.uv is not None for t in tables],
        "vertex_rgba": [t.vertex_rgba is not None for t in tables],
        "face_rgba": [t.face_rgba is not None for t in tables],
        "opaque": [t.pbr and t.alpha_mode == "OPAQUE" for t in tables],
        "mask": [t.pbr and t.alpha_mode == "MASK" for t in tables],
        "repeat": [t.wrap == "repeat" for t in tables],
    }
    # Vertex rows: uv or vertex colours (a table has one or the other); a table with neither gets one zero row.
    counts = [max(0 if t.uv is None else t.uv.shape[0], 0 if t.vertex_rgba is None else t.vertex_rgba.shape[0], 1)
              for t in tables]
    first_vertex = np.cumsum([0] + counts)

    def rows(t: MaterialTables, values: torch.Tensor | None, count: int, width: int) -> torch.Tensor:
        return values if values is not None else torch.zeros(count, width, device=device)

    faces = [t.faces + int(v) if t.uv is not None or t.vertex_rgba is not None else torch.full_like(t.faces, int(v))
             for t, v in zip(tables, first_vertex, strict=False)]
    if len(tables) == 1:
        faces = [tables[0].faces if has["base"][0] or has["mr"][0] or has["vertex_rgba"][0] else faces[0]]
    scalars = to_device([[*t.base_factor, t.metallic, t.roughness, t.alpha_cutoff] for t in tables], device,
                        torch.float32)
    return FusedMaterials(
        faces=_cat(faces),
        face_start=to_device(np.cumsum([0] + [len(t.faces) for t in tables])[:-1], device),
        uv=_cat([rows(t, t.uv, n, 2) for t, n in zip(tables, counts, strict=True)]),
        vertex_rgba=_cat([rows(t, t.vertex_rgba, n, 4) for t, n in zip(tables, counts, strict=True)])
        if any(has["vertex_rgba"]) else None,
        face_rgba=_cat([rows(t, t.face_rgba, len(t.faces), 4) for t in tables]) if any(has["face_rgba"]) else None,
        base=_FlatTextures.of([t.base_texture if b else None for t, b in zip(tables, has["base"], strict=True)], 4,
                              device) if any(has["base"]) else None,
        mr=_FlatTextures.of([t.mr_texture if m else None for t, m in zip(tables, has["mr"], strict=True)], 3,
                            device) if any(has["mr"]) else None,
        flags={k: to_device(v, device) for k, v in has.items()},
        factor=scalars[:, :4], metallic=scalars[:, 4], roughness=scalars[:, 5], alpha_cutoff=scalars[:, 6],
        any_pbr=any(has["pbr"]),
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
    return sample_materials(fuse_materials([tables]), torch.zeros_like(face), face, bary)


def sample_materials(fused: FusedMaterials, table: torch.Tensor, face: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Material at surface points of several tables in one pass (each point as `sample_material` of its table).

    Args:
        fused: from `fuse_materials(tables)`.
        table: `[M]` int64 index into `tables` of each point.
        face: `[M]` int64 face indices within that table.
        bary: `[M, 3]` float barycentric coordinates in those faces.

    Returns:
        `[M, 6]` float32 in [0, 1]: sRGB base colour, metallic, roughness, alpha.
    """
    flag = {k: v[table] for k, v in fused.flags.items()}  # [M] bool each
    row = fused.face_start[table] + face
    corners = fused.faces[row]  # (M, 3)
    factor = fused.factor[table]  # (M, 4)
    rgba = factor
    uv = None if fused.base is None and fused.mr is None else (bary[:, :, None] * fused.uv[corners]).sum(1)
    if fused.base is not None:
        texel = fused.base.sample(table, uv, flag["repeat"])
        if fused.any_pbr:  # glTF factors multiply in linear light
            linear = torch.cat([srgb_to_linear(texel[:, :3]) * factor[:, :3], texel[:, 3:] * factor[:, 3:]], dim=1)
            texel = torch.where(flag["pbr"][:, None], linear, texel * factor)
        else:
            texel = texel * factor
        rgba = torch.where(flag["base"][:, None], texel, rgba)
    if fused.any_pbr:
        rgba = torch.where(flag["pbr"][:, None], torch.cat([linear_to_srgb(rgba[:, :3]), rgba[:, 3:]], dim=1), rgba)
    if fused.vertex_rgba is not None:
        rgba = torch.where(flag["vertex_rgba"][:, None], (bary[:, :, None] * fused.vertex_rgba[corners]).sum(1), rgba)
    if fused.face_rgba is not None:
        rgba = torch.where(flag["face_rgba"][:, None], fused.face_rgba[row], rgba)
    metallic, roughness = fused.metallic[table], fused.roughness[table]
    if fused.mr is not None:
        texel = fused.mr.sample(table, uv, flag["repeat"])
        roughness = torch.where(flag["mr"], roughness * texel[:, 1], roughness)
        metallic = torch.where(flag["mr"], metallic * texel[:, 2], metallic)
    alpha = rgba[:, 3]
    alpha = torch.where(flag["mask"], (alpha >= fused.alpha_cutoff[table]).float(), alpha)
    alpha = torch.where(flag["opaque"], torch.ones_like(alpha), alpha)
    out = torch.cat([rgba[:, :3], metallic[:, None], roughness[:, None], alpha[:, None]], dim=1)
    return out.float().clamp(0, 1)
