"""The renderer's input: a triangle mesh with per-vertex UVs and glTF metallic-roughness materials as tensors.

Conventions (shared with trimesh, which loads every asset we ingest):
- `vertices [V, 3] float32` in whatever frame the caller renders in (the volume frame for training samples).
- `uvs [V, 2] float32`, OpenGL convention: `(0, 0)` is the *bottom-left* of the texture image, `v` grows upwards.
  glTF stores `v` downwards (origin top-left); trimesh flips it on load (`v <- 1 - v`) and back on export, so UVs
  taken from a loaded GLB are already in this convention. Texture tensors keep image row order (row 0 = top).
- Base-colour textures and vertex colours are sRGB-encoded; `base_color_factor` is linear (glTF). The
  metallic-roughness texture is linear with glTF packing: G = roughness, B = metallic.
- Several materials per mesh: `face_materials [F] int64` indexes `materials`.

Alpha / transparency of materials is ignored: every surface is rendered opaque.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from pixal3d.errors import InputError
from pixal3d.transfer import to_device

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Material:
    """A glTF 2.0 metallic-roughness material.

    Attributes:
        base_color_factor: `[4] float32` linear RGBA multiplier.
        base_color_texture: `[H, W, 3|4]` uint8 or float in [0, 1], sRGB, row 0 = image top; None = white.
        metallic_factor: multiplier of the texture's B channel (or the value itself without a texture).
        roughness_factor: multiplier of the texture's G channel (or the value itself without a texture).
        metallic_roughness_texture: `[H, W, C >= 3]` uint8 or float, linear, G = roughness, B = metallic.
        name: for log messages only.
    """

    base_color_factor: torch.Tensor = field(default_factory=lambda: torch.ones(4))
    base_color_texture: torch.Tensor | None = None
    metallic_factor: float = 0.0
    roughness_factor: float = 0.5
    metallic_roughness_texture: torch.Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        self.base_color_factor = torch.as_tensor(self.base_color_factor, dtype=torch.float32).flatten()
        if self.base_color_factor.numel() == 3:
            self.base_color_factor = torch.cat([self.base_color_factor, torch.ones(1)])
        if self.base_color_factor.numel() != 4:
            raise InputError(
                f"base_color_factor must have 3 or 4 values, got {self.base_color_factor.numel()}"
            )
        for key in ("base_color_texture", "metallic_roughness_texture"):
            tex = getattr(self, key)
            min_channels = 3
            if tex is not None and (
                tex.ndim != 3 or tex.shape[2] < min_channels or tex.shape[0] * tex.shape[1] == 0
            ):
                raise InputError(f"material {self.name!r}: {key} must be [H, W, 3|4], got {tuple(tex.shape)}")

    def to(self, device: torch.device | str) -> Material:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else to_device(t, device)

        return replace(
            self,
            base_color_factor=to_device(self.base_color_factor, device),
            base_color_texture=move(self.base_color_texture),
            metallic_roughness_texture=move(self.metallic_roughness_texture),
        )


@dataclass(eq=False)
class RenderMesh:
    """A textured triangle mesh ready to render; see the module docstring for frames and encodings.

    Attributes:
        vertices: `[V, 3] float32`.
        faces: `[F, 3] int64` vertex indices.
        materials: at least one `Material`.
        face_materials: `[F] int64` index into `materials`; None means material 0 everywhere.
        uvs: `[V, 2] float32` (OpenGL convention, v up); None means no texture lookups (UV 0).
        normals: `[V, 3] float32` unit shading normals; None means flat face normals.
        colors: `[V, 4] float32` sRGB vertex colours in [0, 1], multiplied into the base colour; or None.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    materials: list[Material] = field(default_factory=lambda: [Material()])
    face_materials: torch.Tensor | None = None
    uvs: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    colors: torch.Tensor | None = None

    def __post_init__(self) -> None:
        v, f = self.vertices, self.faces
        if v.ndim != 2 or v.shape[1] != 3 or not v.is_floating_point():
            raise InputError(f"vertices must be a float [V, 3] tensor, got {tuple(v.shape)} {v.dtype}")
        if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
            raise InputError(f"faces must be a non-empty [F, 3] tensor, got {tuple(f.shape)}")
        if f.is_floating_point() or int(f.min()) < 0 or int(f.max()) >= v.shape[0]:
            raise InputError(
                f"faces must be integer indices in [0, {v.shape[0]}), got {f.dtype} {f.min()}..{f.max()}"
            )
        if not self.materials:
            raise InputError("a RenderMesh needs at least one material")
        self.faces = f.long()
        if self.face_materials is None:
            self.face_materials = torch.zeros(f.shape[0], dtype=torch.long, device=f.device)
        if self.face_materials.shape != (f.shape[0],) or int(self.face_materials.max()) >= len(
            self.materials
        ):
            raise InputError(
                f"face_materials must be [F] = [{f.shape[0]}] indices < {len(self.materials)}, "
                f"got {tuple(self.face_materials.shape)}"
            )
        for key, width in (("uvs", 2), ("normals", 3), ("colors", 4)):
            t = getattr(self, key)
            if t is not None and t.shape != (v.shape[0], width):
                raise InputError(
                    f"{key} must be [V, {width}] = [{v.shape[0]}, {width}], got {tuple(t.shape)}"
                )

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @classmethod
    def unchecked(cls, **fields: object) -> RenderMesh:
        """A mesh from all seven fields of a valid mesh (e.g. a checked mesh moved or concatenated), without the
        checks: on a GPU they read values back to the host, which waits for the device."""
        missing = {f.name for f in dataclasses.fields(cls)} - set(fields)
        if missing:
            raise TypeError(f"RenderMesh.unchecked needs every field; missing {sorted(missing)}")
        mesh = cls.__new__(cls)
        mesh.__dict__.update(fields)
        return mesh

    def to(self, device: torch.device | str) -> RenderMesh:
        """The mesh on `device` (host to GPU through pinned memory, without a host sync)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else to_device(t, device)

        return RenderMesh.unchecked(
            vertices=move(self.vertices),
            faces=move(self.faces),
            materials=[m.to(device) for m in self.materials],
            face_materials=move(self.face_materials),
            uvs=move(self.uvs),
            normals=move(self.normals),
            colors=move(self.colors),
        )

    def bounds(self) -> torch.Tensor:
        """`[2, 3]` axis-aligned bounds (min, max) of the vertices used by faces."""
        used = self.vertices[self.faces.flatten()]
        return torch.stack([used.min(dim=0).values, used.max(dim=0).values])

    def transformed(self, matrix: torch.Tensor) -> RenderMesh:
        """The mesh moved by a `[4, 4]` similarity (rotation * uniform scale + translation); normals rotated."""
        m = torch.as_tensor(matrix, dtype=torch.float32, device=self.device)
        normals = None
        if self.normals is not None:
            normals = torch.nn.functional.normalize(self.normals @ m[:3, :3].T, dim=-1)
        return replace(self, vertices=self.vertices @ m[:3, :3].T + m[:3, 3], normals=normals)


# ------------------------------------------------------------------------------------------- from trimesh
def _image_tensor(image: object, device: torch.device | str) -> torch.Tensor | None:
    """A PIL image -> `[H, W, 4] uint8` (RGBA), or None."""
    if image is None:
        return None
    arr = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    return to_device(torch.from_numpy(arr.copy()), device)


def _material_from_trimesh(material: object, device: torch.device | str) -> Material:
    """trimesh PBRMaterial / SimpleMaterial -> `Material` (factors are uint8 RGBA in trimesh)."""
    from trimesh.visual.material import MultiMaterial, PBRMaterial

    if isinstance(material, MultiMaterial):
        material = material.to_pbr()
    if not isinstance(material, PBRMaterial):
        material = material.to_pbr()
    factor = material.baseColorFactor
    factor = (
        torch.ones(4) if factor is None else torch.as_tensor(np.asarray(factor, dtype=np.float32) / 255.0)
    )
    metallic = material.metallicFactor
    roughness = material.roughnessFactor
    mr_texture = _image_tensor(material.metallicRoughnessTexture, device)
    return Material(
        base_color_factor=to_device(factor, device),
        base_color_texture=_image_tensor(material.baseColorTexture, device),
        # glTF defaults: factors 1.0 (so a bare texture is used as is); with neither, metallic 1 is the spec
        # default but nearly every such asset is meant as a dielectric, so no texture -> metallic 0.
        metallic_factor=float(metallic) if metallic is not None else (1.0 if mr_texture is not None else 0.0),
        roughness_factor=float(roughness)
        if roughness is not None
        else (1.0 if mr_texture is not None else 0.5),
        metallic_roughness_texture=mr_texture,
        name=str(getattr(material, "name", "") or ""),
    )


def _part_from_trimesh(mesh: object, device: torch.device | str) -> tuple[dict[str, torch.Tensor], Material]:
    """One `trimesh.Trimesh` -> per-vertex tensors + its material (vertex/face colours become `colors`)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
    visual = mesh.visual
    uvs = colors = None
    material = Material(name="default")
    if visual.kind == "texture":
        material = _material_from_trimesh(visual.material, device)
        uv = getattr(visual, "uv", None)
        if uv is not None and len(uv) == len(vertices):
            uvs = np.asarray(uv, dtype=np.float32)[:, :2]
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float32) / 255.0
    elif visual.kind == "face":
        # Face colours: split every face into its own three vertices so a per-vertex colour is exact.
        colors = np.repeat(np.asarray(visual.face_colors, dtype=np.float32) / 255.0, 3, axis=0)
        vertices, normals = vertices[faces.reshape(-1)], normals[faces.reshape(-1)]
        faces = np.arange(faces.size, dtype=np.int64).reshape(-1, 3)
    part = {
        "vertices": torch.from_numpy(vertices),
        "faces": torch.from_numpy(faces),
        "normals": torch.from_numpy(normals),
        "uvs": torch.zeros(len(vertices), 2) if uvs is None else torch.from_numpy(uvs),
        "colors": torch.ones(len(vertices), 4) if colors is None else torch.from_numpy(colors),
        "has_colors": torch.tensor(colors is not None),
    }
    return part, material


def _scene_parts(scene_or_mesh: object) -> list[object]:
    """Every triangle mesh of a trimesh Scene in world coordinates (node transforms applied)."""
    import trimesh

    if isinstance(scene_or_mesh, trimesh.Trimesh):
        return [scene_or_mesh]
    if not isinstance(scene_or_mesh, trimesh.Scene):
        raise InputError(f"expected a trimesh.Trimesh or trimesh.Scene, got {type(scene_or_mesh).__name__}")
    parts = []
    for node in scene_or_mesh.graph.nodes_geometry:
        transform, geometry_name = scene_or_mesh.graph[node]
        geometry = scene_or_mesh.geometry[geometry_name]
        if not isinstance(geometry, trimesh.Trimesh):
            logger.info("skipping non-mesh geometry %r (%s)", geometry_name, type(geometry).__name__)
            continue
        part = geometry.copy()
        part.apply_transform(transform)
        parts.append(part)
    return parts


def mesh_from_trimesh(scene_or_mesh: object, device: torch.device | str = "cpu") -> RenderMesh:
    """Flatten a `trimesh.Scene` (node transforms applied) or `trimesh.Trimesh` into one `RenderMesh`.

    Each part keeps its own material (PBRMaterial as is; SimpleMaterial via `to_pbr`); vertex or face colours
    become `colors`. Parts without faces are skipped.

    Args:
        scene_or_mesh: a loaded asset, e.g. `trimesh.load("x.glb")`.
        device: where the tensors go.

    Returns:
        A `RenderMesh` in the asset's own frame and units.

    Raises:
        InputError: the asset holds no triangles.
    """
    parts = [p for p in _scene_parts(scene_or_mesh) if len(p.faces) > 0]
    if not parts:
        raise InputError("the asset has no triangle faces to render")
    converted = [_part_from_trimesh(p, "cpu") for p in parts]  # built and checked on the host, then moved
    offsets = np.cumsum([0] + [len(c[0]["vertices"]) for c in converted])
    cat = {key: torch.cat([c[0][key] for c in converted]) for key in ("vertices", "normals", "uvs", "colors")}
    faces = torch.cat([c[0]["faces"] + int(o) for c, o in zip(converted, offsets[:-1], strict=True)])
    face_materials = torch.cat(
        [torch.full((len(c[0]["faces"]),), i, dtype=torch.long) for i, c in enumerate(converted)]
    )
    any_colors = any(bool(c[0]["has_colors"]) for c in converted)
    any_uvs = any(
        m.base_color_texture is not None or m.metallic_roughness_texture is not None for _, m in converted
    )
    normals = torch.nn.functional.normalize(cat["normals"], dim=-1)
    mesh = RenderMesh(
        vertices=cat["vertices"],
        faces=faces,
        materials=[m for _, m in converted],
        face_materials=face_materials,
        uvs=cat["uvs"] if any_uvs else None,
        normals=normals,
        colors=cat["colors"] if any_colors else None,
    )
    return mesh if torch.device(device).type == "cpu" else mesh.to(device)
