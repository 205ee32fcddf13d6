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

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pixal3d.camera import Camera
from pixal3d.errors import InputError
from pixal3d.render.mesh import RenderMesh
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
from pixal3d.render.texturing import materials_at
from pixal3d.transfer import to_device


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

    All fields but `rgba` are None for a render made with `gbuffers=False`.
    """

    rgba: torch.Tensor
    depth: torch.Tensor | None
    normals: torch.Tensor | None
    base_color: torch.Tensor | None
    metallic: torch.Tensor | None
    roughness: torch.Tensor | None
    face_id: torch.Tensor | None

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


@dataclass(eq=False)
class _Batch:
    """Several render items as one mesh: vertices, faces and materials concatenated, one image per item.

    Attributes:
        mesh: the concatenation (face and material indices offset per item; missing UVs and normals are zeros,
            which reads as "no texture coordinates" and "flat normals" exactly as for a mesh without them).
        face_image: `[F] int64` the item of each face, or None for a single item.
        has_colors: `[B] bool` items with vertex colours (their colour is multiplied in), or None when all or
            none have them (then `mesh.colors` says which).
    """

    mesh: RenderMesh
    face_image: torch.Tensor | None
    has_colors: torch.Tensor | None


def _concat(meshes: list[RenderMesh]) -> _Batch:
    if len(meshes) == 1:
        return _Batch(meshes[0], None, None)
    device = meshes[0].device
    n_vertices = [m.vertices.shape[0] for m in meshes]
    n_faces = [m.faces.shape[0] for m in meshes]
    face_image = to_device(torch.repeat_interleave(torch.arange(len(meshes)), torch.tensor(n_faces)), device)
    vertex_start = to_device(torch.tensor([0, *n_vertices[:-1]]).cumsum(0), device)
    material_start = to_device(torch.tensor([0, *[len(m.materials) for m in meshes[:-1]]]).cumsum(0), device)

    def cat(key: str, width: int, fill: float) -> torch.Tensor | None:
        parts = [getattr(m, key) for m in meshes]
        if all(t is None for t in parts):
            return None
        return torch.cat([t if t is not None else torch.full((n, width), fill, device=device)
                          for t, n in zip(parts, n_vertices, strict=True)])

    colored = [m.colors is not None for m in meshes]
    mesh = RenderMesh.unchecked(  # the parts were validated one by one
        vertices=torch.cat([m.vertices for m in meshes]),
        faces=torch.cat([m.faces for m in meshes]) + vertex_start[face_image][:, None],
        materials=[material for m in meshes for material in m.materials],
        face_materials=torch.cat([m.face_materials for m in meshes]) + material_start[face_image],
        uvs=cat("uvs", 2, 0.0),
        normals=cat("normals", 3, 0.0),
        colors=cat("colors", 4, 1.0),
    )
    has_colors = None if all(colored) or not any(colored) else to_device(colored, device)
    return _Batch(mesh, face_image, has_colors)


def _surface(
    mesh: RenderMesh,
    face: torch.Tensor,
    bary: torch.Tensor,
    eye: torch.Tensor,
    has_colors: torch.Tensor | None = None,
) -> _Surface:
    """Interpolate the mesh at `N` fragments (`face [N]`, perspective-correct `bary [N, 3]`) seen from `eye`
    (`[3]`, or `[N, 3]` per fragment); `has_colors [N]`: the fragments whose mesh has vertex colours (None: all)."""
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
    base, metallic, roughness = materials_at(mesh.materials, mesh.face_materials[face], uv)
    if mesh.colors is not None:
        tinted = base * srgb_to_linear(interp(mesh.colors)[:, :3].clamp(0, 1))
        base = tinted if has_colors is None else torch.where(has_colors[:, None], tinted, base)
    return _Surface(position=position, normal=normal, base_color=base, metallic=metallic, roughness=roughness)


def _point_lights(
    meshes: list[RenderMesh], cameras: list[Camera], lightings: list[Lighting], batch: _Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Light positions and intensities `[B, L, 3]` (render frame) giving `light_colors` at each mesh's centre.

    Items with fewer than `L` (the most of any item) lights get lights of intensity 0, which add exactly 0.
    The per-light offsets from the centre are computed on the CPU (a few numbers per item); the centres (of the
    bounds) and the bounding radii on the meshes' device.
    """
    device = batch.mesh.device
    count = max(len(lighting.light_distances) for lighting in lightings)
    offsets = torch.zeros(len(meshes), count, 3)
    colors = torch.zeros(len(meshes), count, 3)
    for n, (camera, lighting) in enumerate(zip(cameras, lightings, strict=True)):
        rot = camera.c2w()[:3, :3].float()
        lights = len(lighting.light_distances)
        offsets[n, :lights] = (lighting.light_directions @ rot.T) * lighting.light_distances[:, None]
        colors[n, :lights] = lighting.light_colors * (lighting.light_distances**2)[:, None]
    if batch.face_image is None:
        lo, hi = batch.mesh.bounds()
        centre = ((lo + hi) / 2)[None]
        radius = (batch.mesh.vertices - centre).norm(dim=-1).max()[None]
    else:
        used = batch.mesh.faces.flatten()
        owner = batch.face_image.repeat_interleave(3)
        init = torch.full((len(meshes), 3), float("inf"), device=device)
        lo = init.scatter_reduce(0, owner[:, None].expand(-1, 3), batch.mesh.vertices[used], reduce="amin")
        hi = (-init).scatter_reduce(0, owner[:, None].expand(-1, 3), batch.mesh.vertices[used], reduce="amax")
        centre = (lo + hi) / 2
        vertex_image = to_device(torch.repeat_interleave(torch.arange(len(meshes)),
                                                         torch.tensor([m.vertices.shape[0] for m in meshes])), device)
        distance = (batch.mesh.vertices - centre[vertex_image]).norm(dim=-1)
        radius = torch.zeros(len(meshes), device=device).scatter_reduce(0, vertex_image, distance, reduce="amax")
    radius = radius.clamp(min=1e-6)[:, None, None]
    scale = torch.stack([radius, radius * radius])  # positions scale with r, intensities with r^2
    lights = to_device(torch.stack([offsets, colors]), device)
    return centre[:, None] + lights[0] * scale[0], lights[1] * scale[1]


def _box_sum(values: torch.Tensor, index: torch.Tensor, images: int, size: int, factor: int) -> torch.Tensor:
    """Scatter `values [N, C]` to samples `index [N]` of `images` stacked `(size * factor)^2` grids; sum each
    factor x factor block, always in the same order (row by row), so a pixel's sum does not depend on `images`.

    Returns `[images, size, size, C]`.
    """
    hi = size * factor
    dense = torch.zeros(images * hi * hi, values.shape[1], dtype=values.dtype, device=values.device)
    dense[index] = values
    blocks = dense.view(images * size, factor, size, factor, -1)
    total = blocks[:, 0, :, 0]
    for i in range(factor):
        for j in range(factor):
            if i or j:
                total = total + blocks[:, i, :, j]
    return total.view(images, size, size, -1)


def _nearest_face(face_hi: torch.Tensor, depth_hi: torch.Tensor, images: int, size: int, factor: int) -> torch.Tensor:
    """Per pixel, the face of the covered sample nearest to the camera; `[images, size, size] int64`, -1 if none."""
    depth = torch.where(face_hi >= 0, depth_hi, torch.full_like(depth_hi, float("inf")))
    shape, order = (images, size, factor, size, factor), (0, 1, 3, 2, 4)
    blocks = depth.view(shape).permute(order).reshape(images, size, size, -1)
    faces = face_hi.view(shape).permute(order).reshape(images, size, size, -1)
    return faces.gather(-1, blocks.argmin(dim=-1, keepdim=True))[..., 0]


RenderItem = tuple[RenderMesh, Camera, "Lighting | None"]
"""`(mesh, camera, lighting)` of one render in `render_meshes`; lighting None = `default_lighting()`."""


def render_mesh(
    mesh: RenderMesh,
    camera: Camera,
    lighting: Lighting | None = None,
    *,
    supersample: int = 2,
    max_candidates: int = 1 << 21,
    gbuffers: bool = True,
) -> RenderOutput:
    """Render a textured PBR mesh.

    Args:
        mesh: the mesh, in the camera's frame; its device is the render's device.
        camera: pose, FoV and image side `S` (`Camera.project` is the projection used).
        lighting: from `random_lighting(generator)`; None = `default_lighting()`.
        supersample: samples per pixel along each axis (2 -> 4 samples); 1 gives aliased edges but G-buffers at
            exact pixel centres.
        max_candidates: rasteriser batch size (peak memory about 60 bytes per candidate sample).
        gbuffers: False renders the RGBA only (the other fields of the output are None): less work and memory
            when only the image is wanted (training samples).

    Returns:
        A `RenderOutput` (see its fields for encodings).
    """
    return render_meshes([(mesh, camera, lighting)], supersample=supersample, max_candidates=max_candidates,
                         gbuffers=gbuffers)[0]


def render_meshes(
    items: list[RenderItem],
    *,
    supersample: int = 2,
    max_candidates: int = 1 << 21,
    gbuffers: bool = True,
) -> list[RenderOutput]:
    """Render several `(mesh, camera, lighting)` items of one image size in one pass (`render_mesh` of each).

    The meshes are concatenated, rasterised into a stack of images (`rasterize(..., face_image=)`) and shaded
    together, so the kernel launches and host syncs of a render are shared by all items. Every item is computed
    with the arithmetic of its own render; on a GPU the outputs are those of one `render_mesh` per item, bit
    for bit. On the CPU a few transcendental functions (`pow`, `exp`) are vectorised with a differently rounded
    tail, so a batched item can differ from its lone render in the last bit of some pixels.

    Args:
        items: the renders; all meshes on one device, all cameras of one image size.
        supersample, max_candidates, gbuffers: as in `render_mesh`.

    Returns:
        One `RenderOutput` per item, in order.
    """
    if not (isinstance(supersample, int) and 1 <= supersample <= 8):
        raise InputError(f"supersample must be an int in [1, 8], got {supersample!r}")
    if not items:
        return []
    meshes = [mesh for mesh, _, _ in items]
    cameras = [camera for _, camera, _ in items]
    lightings = [lighting if lighting is not None else default_lighting() for _, _, lighting in items]
    device, size, ss, images = meshes[0].device, cameras[0].size, supersample, len(items)
    if any(m.device != device for m in meshes) or any(c.size != size for c in cameras):
        raise InputError("render_meshes needs all meshes on one device and all cameras of one image size; "
                         f"got devices {sorted({str(m.device) for m in meshes})}, sizes "
                         f"{sorted({c.size for c in cameras})}: render the groups separately")
    batch = _concat(meshes)
    screen = []
    for mesh, camera in zip(meshes, cameras, strict=True):
        uv, depth = camera.with_size(size * ss).project(mesh.vertices)
        screen.append(torch.cat([uv, depth[:, None]], dim=-1))
    frags = rasterize(torch.cat(screen) if images > 1 else screen[0], batch.mesh.faces, size * ss, size * ss,
                      max_candidates=max_candidates, face_image=batch.face_image, images=images)
    face_hi, depth_hi = frags.face_id.flatten(), frags.depth.flatten()
    pix = torch.nonzero(face_hi >= 0).flatten()
    image = None if images == 1 else pix // (size * ss) ** 2  # the item of each fragment
    eyes = to_device(torch.stack([camera.center for camera in cameras]), device)
    eye = eyes[0] if image is None else eyes[image]
    face = face_hi[pix]
    has_colors = None if batch.has_colors is None else batch.has_colors[image]
    surf = _surface(batch.mesh, face, frags.bary.view(-1, 3)[pix], eye, has_colors)
    light_positions, light_colors = _point_lights(meshes, cameras, lightings, batch)
    if image is None:
        lighting = lighting_to(lightings[0], device)
        light_positions, light_colors = light_positions[0], light_colors[0]
    else:  # per-fragment environment, exposure and lights
        environment = to_device(torch.stack([torch.stack([lt.sky, lt.ground, lt.up]) for lt in lightings]), device)
        exposure = to_device([[lt.exposure] for lt in lightings], device, torch.float32)[image]
        sky, ground, up = environment[image].unbind(1)
        lighting = replace(lightings[0], sky=sky, ground=ground, up=up, exposure=exposure)
        light_positions, light_colors = light_positions[image].unbind(1), light_colors[image].unbind(1)
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
    channels = [tone_map(radiance), ones]
    if gbuffers:  # rgb, 1, depth, normal, base colour, metallic, roughness
        channels += [depth_hi[pix, None], surf.normal, surf.base_color, surf.metallic[:, None],
                     surf.roughness[:, None]]
    sums = _box_sum(torch.cat(channels, dim=-1), pix, images, size, ss)  # (B, S, S, 4 or 13)
    count = sums[..., 3:4]
    alpha = count / (ss * ss)
    rgba = torch.cat([linear_to_srgb(sums[..., :3] / (ss * ss)), alpha], dim=-1)
    if not gbuffers:
        return [RenderOutput(rgba=rgba[n], depth=None, normals=None, base_color=None, metallic=None,
                             roughness=None, face_id=None) for n in range(images)]
    mean = sums / count.clamp(min=1.0)
    covered = count > 0
    normals = F.normalize(mean[..., 5:8], dim=-1) * covered
    base_color = linear_to_srgb(mean[..., 8:11]) * covered
    face_id = _nearest_face(face_hi, depth_hi, images, size, ss)
    if images > 1:  # the item's own face numbers
        first = to_device(torch.tensor([0, *[m.faces.shape[0] for m in meshes[:-1]]]).cumsum(0), device)
        face_id = torch.where(face_id >= 0, face_id - first[:, None, None], face_id)
    return [
        RenderOutput(
            rgba=rgba[n],
            depth=mean[n, ..., 4],
            normals=normals[n],
            base_color=base_color[n],
            metallic=mean[n, ..., 11],
            roughness=mean[n, ..., 12],
            face_id=face_id[n],
        )
        for n in range(images)
    ]
