"""Material lookup for the rasteriser: per-fragment base colour, metallic and roughness from `Material` factors and
textures (glTF conventions: base colour texture in sRGB, metallic in B and roughness in G of their texture).
"""

from __future__ import annotations

import torch

from pixal3d.render.mesh import Material
from pixal3d.render.shading import srgb_to_linear
from pixal3d.transfer import to_device


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
    table = to_device(rows, device, torch.long)[material_id]  # (N, 3)
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
    is_uint8 = to_device([t is not None and t.dtype == torch.uint8 for t in textures], device)
    is_uint8 = is_uint8[material_id]
    return torch.where(is_uint8[:, None], out / 255.0, out)


def materials_at(
    materials: list[Material], material_id: torch.Tensor, uv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear base colour `[N, 3]`, metallic `[N]`, roughness `[N]` of fragments with `material_id [N]` at `uv`.

    Per fragment: the base colour factor times the linearised texture (`sample_texture`), the metallic and
    roughness factors times the texture's B and G channels. All materials at once, with one host sync instead of
    one per material: fragments are stably sorted by material and the textures read by one batched lookup. On the
    CPU `srgb_to_linear` runs per material (on its contiguous run), because the vectorised CPU `pow` rounds a
    call's tail elements differently and a material's values must not depend on the other materials; a GPU
    computes each element alike wherever it sits, so there it is one call.
    """
    device = uv.device
    order = torch.argsort(material_id, stable=True)
    mid, uv = material_id[order], uv[order]
    factors = torch.stack([m.base_color_factor[:3].to(device) for m in materials])[mid]  # (N, 3)
    scalars = to_device([[m.metallic_factor, m.roughness_factor] for m in materials], device, torch.float32)
    metallic, roughness = scalars[mid].unbind(1)
    base = factors
    colour_maps = [m.base_color_texture for m in materials]
    if any(t is not None for t in colour_maps):
        has = to_device([t is not None for t in colour_maps], device)[mid]
        texel = _atlas(colour_maps, mid, uv)
        if device.type == "cpu":
            counts = torch.bincount(material_id, minlength=len(materials)).tolist()
            linear = torch.cat([srgb_to_linear(run) for run in texel.split(counts)])
        else:
            linear = srgb_to_linear(texel)
        base = torch.where(has[:, None], factors * linear, factors)
    mr_maps = [m.metallic_roughness_texture for m in materials]
    if any(t is not None for t in mr_maps):
        has = to_device([t is not None for t in mr_maps], device)[mid]
        mr = _atlas(mr_maps, mid, uv)
        metallic = torch.where(has, metallic * mr[:, 2], metallic)
        roughness = torch.where(has, roughness * mr[:, 1], roughness)
    values = torch.cat([base, metallic.clamp(0, 1)[:, None], roughness.clamp(0, 1)[:, None]], dim=1)
    values = torch.zeros_like(values).index_copy_(0, order, values)  # back to the fragments' order
    return values[:, :3].contiguous(), values[:, 3].contiguous(), values[:, 4].contiguous()
