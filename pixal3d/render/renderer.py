"""`render_mesh`: a `RenderMesh` seen by a `Camera` -> RGBA + depth, normals, base colour, metallic, roughness, face id.

Frames: the mesh and the camera share one frame (the volume frame for training samples, DESIGN section 2);
`Camera.project` decides where every vertex lands, so renders agree with the rest of pixal3d to the pixel.

Anti-aliasing: the image is rasterised and shaded at `supersample x supersample` samples per pixel (sample
centres at `(i + 0.5) / supersample` inside a pixel) and box-filtered down. Alpha is the covered fraction of a
pixel's samples, so silhouettes are accurate to `1 / supersample` of a pixel.

Textures are sampled bilinearly with glTF's default REPEAT wrap and no mipmaps (supersampling is the only
texture filter; very dense textures alias).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixal3d.camera import Camera
from pixal3d.errors import InputError
from pixal3d.render.mesh import Material, RenderMesh
from pixal3d.render.raster import rasterize
from pixal3d.render.shading import (
    Lighting,
    default_lighting,
    lighting_to,
    linear_to_srgb,
    shade,
    srgb_to_linear,
    tone_map,
)


@dataclass(eq=False)
class RenderOutput:
    """Everything one render produces; `S` is the camera's image side, all tensors on the mesh's device.

    Attributes:
        rgba: `[S, S, 4] float32` in [0, 1]. RGB is sRGB-encoded colour composited over black (the linear,
            tone-mapped colour averaged over a pixel's samples with empty samples counting as black, then
            encoded): *premultiplied* in the sense that an edge pixel holds `alpha * colour` in linear space.
            A = covered fraction of the pixel's samples.
        depth: `[S, S] float32` distance along the view axis (`-z_cam`), mean over the covered samples; 0 where
            empty.
        normals: `[S, S, 3] float32` unit shading normals in the render (volume) frame, turned to face the camera;
            0 where empty.
        base_color: `[S, S, 3] float32` sRGB-encoded base colour (texture x factor x vertex colour), mean over the
            covered samples in linear space; 0 where empty.
        metallic: `[S, S] float32` in [0, 1]; 0 where empty.
        roughness: `[S, S] float32` in [0, 1]; 0 where empty.
        face_id: `[S, S] int64` the face seen by the pixel's nearest covered sample; -1 where empty.
    """

    rgba: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    base_color: torch.Tensor
    metallic: torch.Tensor
    roughness: torch.Tensor
    face_id: torch.Tensor

    @property
    def alpha(self) -> torch.Tensor:
        """`[S, S] float32` coverage."""
        return self.rgba[..., 3]

    def rgba_uint8(self) -> torch.Tensor:
        """`[S, S, 4] uint8` (for PIL / PNG), on the CPU."""
        return (self.rgba.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()


@dataclass(eq=False)
class _Surface:
    """Attributes of the visible surface at `N` covered samples (render frame, linear colours)."""

    position: torch.Tensor  # [N, 3]
    normal: torch.Tensor  # [N, 3] unit, facing the camera
    base_color: torch.Tensor  # [N, 3] linear
    metallic: torch.Tensor  # [N]
    roughness: torch.Tensor  # [N]


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup with REPEAT wrap.

    Args:
        texture: `[H, W, C]` uint8 (read as `/255`) or float, row 0 = image top.
        uv: `[N, 2] float32`, OpenGL convention (`(0, 0)` = bottom-left of the image, `v` up).

    Returns:
        `[N, C] float32`.
    """
    h, w, c = texture.shape
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    flat = texture.reshape(h * w, c)

    def texel(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        return flat[torch.remainder(iy, h) * w + torch.remainder(ix, w)].float()

    top = texel(x0, y0) * (1 - fx) + texel(x0 + 1, y0) * fx
    bottom = texel(x0, y0 + 1) * (1 - fx) + texel(x0 + 1, y0 + 1) * fx
    out = top * (1 - fy) + bottom * fy
    return out / 255.0 if texture.dtype == torch.uint8 else out


def _atlas(textures: list[torch.Tensor | None], material_id: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """`sample_texture(textures[m], uv)[:, :3]` for every fragment's material `m`, in one batched lookup.

    The textures (first three channels) are concatenated into one flat table and each fragment reads its own at
    its own offset, width and height, so the arithmetic per fragment is `sample_texture`'s, bit for bit, while
    the kernel count no longer grows with the number of materials. Fragments whose material has no texture
    read texel 0 (the caller ignores them).
    """
    device = uv.device
    rows, start = [], 0  # (offset, height, width) per material; a 1 x 1 stand-in for a missing texture
    for t in textures:
        rows.append((start, t.shape[0], t.shape[1]) if t is not None else (0, 1, 1))
        start += 0 if t is None else t.shape[0] * t.shape[1]
    present = [t for t in textures if t is not None]
    all_uint8 = all(t.dtype == torch.uint8 for t in present)
    flat = torch.cat([t[..., :3].reshape(-1, 3) if all_uint8 else t[..., :3].reshape(-1, 3).float() for t in present])
    table = torch.tensor(rows, dtype=torch.long).to(device)[material_id]  # (N, 3)
    offset, h, w = table.unbind(1)
    x = uv[:, 0] * w.float() - 0.5
    y = (1.0 - uv[:, 1]) * h.float() - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()

    def texel(ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        return flat[offset + torch.remainder(iy, h) * w + torch.remainder(ix, w)].float()

    top = texel(x0, y0) * (1 - fx) + texel(x0 + 1, y0) * fx
    bottom = texel(x0, y0 + 1) * (1 - fx) + texel(x0 + 1, y0 + 1) * fx
    out = top * (1 - fy) + bottom * fy
    if all_uint8:
        return out / 255.0
    is_uint8 = torch.tensor([t is not None and t.dtype == torch.uint8 for t in textures], device=device)
    is_uint8 = is_uint8[material_id]
    return torch.where(is_uint8[:, None], out / 255.0, out)


def _materials_at(
    materials: list[Material], material_id: torch.Tensor, uv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear base colour `[N, 3]`, metallic `[N]`, roughness `[N]` of fragments with `material_id [N]` at `uv`.

    Per fragment: the base colour factor times the linearised texture (`sample_texture`), the metallic and
    roughness factors times the texture's B and G channels. All materials at once, with one host sync instead of
    one per material: fragments are stably sorted by material, the textures read by one batched lookup, and only
    `srgb_to_linear` runs per material (on its contiguous run), because the vectorised CPU `pow` rounds its
    tail elements differently and the result must stay bit for bit that of a pass per material.
    """
    device = uv.device
    order = torch.argsort(material_id, stable=True)
    counts = torch.bincount(material_id, minlength=len(materials)).tolist()
    mid, uv = material_id[order], uv[order]
    factors = torch.stack([m.base_color_factor[:3].to(device) for m in materials])[mid]  # (N, 3)
    scalars = torch.tensor([[m.metallic_factor, m.roughness_factor] for m in materials], device=device)
    metallic, roughness = scalars[mid].unbind(1)
    base = factors
    colour_maps = [m.base_color_texture for m in materials]
    if any(t is not None for t in colour_maps):
        has = torch.tensor([t is not None for t in colour_maps], device=device)[mid]
        texel = _atlas(colour_maps, mid, uv)
        linear = torch.cat([srgb_to_linear(run) for run in texel.split(counts)])
        base = torch.where(has[:, None], factors * linear, factors)
    mr_maps = [m.metallic_roughness_texture for m in materials]
    if any(t is not None for t in mr_maps):
        has = torch.tensor([t is not None for t in mr_maps], device=device)[mid]
        mr = _atlas(mr_maps, mid, uv)
        metallic = torch.where(has, metallic * mr[:, 2], metallic)
        roughness = torch.where(has, roughness * mr[:, 1], roughness)
    values = torch.cat([base, metallic.clamp(0, 1)[:, None], roughness.clamp(0, 1)[:, None]], dim=1)
    values = torch.zeros_like(values).index_copy_(0, order, values)  # back to the fragments' order
    return values[:, :3].contiguous(), values[:, 3].contiguous(), values[:, 4].contiguous()


def _surface(mesh: RenderMesh, face: torch.Tensor, bary: torch.Tensor, eye: torch.Tensor) -> _Surface:
    """Interpolate the mesh at `N` fragments (`face [N]`, perspective-correct `bary [N, 3]`)."""
    corners = mesh.faces[face]  # (N, 3) vertex ids

    def interp(attr: torch.Tensor) -> torch.Tensor:
        return (bary[..., None] * attr[corners]).sum(dim=1)

    position = interp(mesh.vertices)
    p = mesh.vertices[corners]
    geometric = F.normalize(torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1), dim=-1)
    # Double-sided: turn the geometric normal towards the camera, the shading normal to its side.
    geometric = geometric * torch.where((geometric * (eye - position)).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    normal = geometric
    if mesh.normals is not None:
        smooth = interp(mesh.normals)
        smooth = smooth * torch.where((smooth * geometric).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        length = smooth.norm(dim=-1, keepdim=True)
        normal = torch.where(length > 1e-6, smooth / length.clamp(min=1e-12), geometric)
    uv = interp(mesh.uvs) if mesh.uvs is not None else torch.zeros(face.shape[0], 2, device=face.device)
    base, metallic, roughness = _materials_at(mesh.materials, mesh.face_materials[face], uv)
    if mesh.colors is not None:
        base = base * srgb_to_linear(interp(mesh.colors)[:, :3].clamp(0, 1))
    return _Surface(position=position, normal=normal, base_color=base, metallic=metallic, roughness=roughness)


def _point_lights(mesh: RenderMesh, camera: Camera, lighting: Lighting) -> tuple[torch.Tensor, torch.Tensor]:
    """Light positions `[L, 3]` (render frame) and intensities `[L, 3]` giving `light_colors` at the centre."""
    lo, hi = mesh.bounds()
    centre = (lo + hi) / 2
    radius = (mesh.vertices - centre).norm(dim=-1).max().clamp(min=1e-6)
    rot = camera.c2w()[:3, :3].to(device=mesh.device, dtype=torch.float32)
    distance = lighting.light_distances * radius
    positions = centre + (lighting.light_directions @ rot.T) * distance[:, None]
    return positions, lighting.light_colors * (distance * distance)[:, None]


def _box_sum(values: torch.Tensor, index: torch.Tensor, size: int, factor: int) -> torch.Tensor:
    """Scatter `values [N, C]` to samples `index [N]` of a `(size * factor)^2` grid; sum factor x factor blocks.

    Returns `[size, size, C]`.
    """
    hi = size * factor
    dense = torch.zeros(hi * hi, values.shape[1], dtype=values.dtype, device=values.device)
    dense[index] = values
    return dense.view(size, factor, size, factor, -1).sum(dim=(1, 3))


def _nearest_face(face_hi: torch.Tensor, depth_hi: torch.Tensor, size: int, factor: int) -> torch.Tensor:
    """Per pixel, the face of the covered sample nearest to the camera; `[size, size] int64`, -1 if none."""
    depth = torch.where(face_hi >= 0, depth_hi, torch.full_like(depth_hi, float("inf")))
    blocks = depth.view(size, factor, size, factor).permute(0, 2, 1, 3).reshape(size, size, -1)
    faces = face_hi.view(size, factor, size, factor).permute(0, 2, 1, 3).reshape(size, size, -1)
    return faces.gather(-1, blocks.argmin(dim=-1, keepdim=True))[..., 0]


def render_mesh(
    mesh: RenderMesh,
    camera: Camera,
    lighting: Lighting | None = None,
    *,
    supersample: int = 2,
    max_candidates: int = 1 << 21,
) -> RenderOutput:
    """Render a textured PBR mesh.

    Args:
        mesh: the mesh, in the camera's frame; its device is the render's device.
        camera: pose, FoV and image side `S` (`Camera.project` is the projection used).
        lighting: from `random_lighting(generator)`; None = `default_lighting()`.
        supersample: samples per pixel along each axis (2 -> 4 samples); 1 gives aliased edges but G-buffers at
            exact pixel centres.
        max_candidates: rasteriser batch size (peak memory about 60 bytes per candidate sample).

    Returns:
        A `RenderOutput` (see its fields for encodings).
    """
    if not (isinstance(supersample, int) and 1 <= supersample <= 8):
        raise InputError(f"supersample must be an int in [1, 8], got {supersample!r}")
    device = mesh.device
    lighting = lighting_to(lighting if lighting is not None else default_lighting(), device)
    size, ss = camera.size, supersample
    uv, depth = camera.with_size(size * ss).project(mesh.vertices)
    frags = rasterize(
        torch.cat([uv, depth[:, None]], dim=-1),
        mesh.faces,
        size * ss,
        size * ss,
        max_candidates=max_candidates,
    )
    face_hi, depth_hi = frags.face_id.flatten(), frags.depth.flatten()
    pix = torch.nonzero(face_hi >= 0).flatten()
    eye = camera.center.to(device)
    surf = _surface(mesh, face_hi[pix], frags.bary.view(-1, 3)[pix], eye)
    light_positions, light_colors = _point_lights(mesh, camera, lighting)
    radiance = shade(
        surf.position,
        surf.normal,
        eye,
        surf.base_color,
        surf.metallic,
        surf.roughness,
        lighting,
        light_positions,
        light_colors,
    )
    ones = torch.ones_like(surf.metallic)[:, None]
    packed = torch.cat(
        [
            tone_map(radiance),
            ones,
            depth_hi[pix, None],
            surf.normal,
            surf.base_color,
            surf.metallic[:, None],
            surf.roughness[:, None],
        ],
        dim=-1,
    )  # (N, 13): rgb, 1, depth, normal, base colour, metallic, roughness
    sums = _box_sum(packed, pix, size, ss)  # (S, S, 13)
    count = sums[..., 3:4]
    mean = sums / count.clamp(min=1.0)
    covered = count > 0
    alpha = count / (ss * ss)
    rgb = linear_to_srgb(sums[..., :3] / (ss * ss))
    normals = F.normalize(mean[..., 5:8], dim=-1) * covered
    return RenderOutput(
        rgba=torch.cat([rgb, alpha], dim=-1),
        depth=mean[..., 4],
        normals=normals,
        base_color=linear_to_srgb(mean[..., 8:11]) * covered,
        metallic=mean[..., 11],
        roughness=mean[..., 12],
        face_id=_nearest_face(face_hi, depth_hi, size, ss),
    )
