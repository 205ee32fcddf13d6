"""GLB writer (DESIGN section 6): one mesh, one glTF 2.0 metallic-roughness material with three textures.

The file holds `POSITION`, `NORMAL`, `TANGENT`, `TEXCOORD_0` and `uint32` indices, plus `baseColorTexture` (sRGB),
`metallicRoughnessTexture` (G = roughness, B = metallic) and `normalTexture` (tangent space, OpenGL style). The
frame is the volume frame, which is glTF's (+Y up, +Z towards the front view): a generated asset needs no node
transform. A converted asset may carry a `Placement` (uniform scale + translation on its node, glTF TRS) that puts
the unit-cube mesh back at the source's size and position.

The material is `doubleSided` when the mesh is not closed (some edge, compared by vertex position so UV seams do
not count, lacks its second face): an open surface must stay visible from behind in a viewer.

We write the JSON and binary chunks ourselves (the format is a 12-byte header and two chunks): trimesh's exporter
cannot write `TANGENT` or WebP textures, and pygltflib would add a dependency for what is ~150 lines here.

Images are PNG by default. `image_format="webp"` stores WebP images, which glTF 2.0 only allows through the
`EXT_texture_webp` extension; it is listed in `extensionsRequired` (there is no PNG fallback), so a viewer without
WebP support refuses the file rather than showing it untextured.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from pixal3d.atomic import write_bytes_atomic
from pixal3d.errors import InputError
from pixal3d.geometry.bake import TexturedMesh

logger = logging.getLogger(__name__)

ImageFormat = Literal["png", "webp"]
IMAGE_FORMATS: tuple[str, ...] = ("png", "webp")

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A  # "JSON"
_CHUNK_BIN = 0x004E4942  # "BIN\0"
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _REPEAT = 9729, 9987, 10497

TRANSLUCENT_ALPHA = 191
"""Texels with alpha below this (0.75) count as see-through when choosing the material's alphaMode."""
TRANSLUCENT_FRACTION = 0.01
"""BLEND only when more than this fraction of the texels is see-through; else OPAQUE (alpha ignored)."""


def is_translucent(alpha: np.ndarray) -> bool:
    """Whether a base-colour alpha channel (uint8) makes the material BLEND rather than OPAQUE.

    A decoded asset's alpha is a prediction: a nearly opaque object comes back with alpha around 0.85-1.0, which
    BLEND would render as ghostly. Only a real share of clearly see-through texels makes the material BLEND.
    """
    return float((np.asarray(alpha) < TRANSLUCENT_ALPHA).mean()) > TRANSLUCENT_FRACTION


@dataclass(frozen=True)
class Placement:
    """A node transform `p_source = scale * p_cube + translation` (glTF TRS: no rotation), source units."""

    scale: float
    translation: tuple[float, float, float]

    @classmethod
    def from_normalization(cls, scale: float, offset: np.ndarray) -> Placement:
        """The exact inverse of `p_cube = scale * p + offset` (`dual_grid.unit_cube_transform`)."""
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(offset).all()):
            raise InputError(f"a placement needs a finite positive scale and offset, got {scale}, {offset}")
        inverse = 1.0 / float(scale)
        return cls(inverse, tuple(float(-o * inverse) for o in np.asarray(offset, dtype=np.float64)))

    def matrix(self) -> np.ndarray:
        """`[4, 4] float64` column-vector matrix of the transform."""
        out = np.eye(4)
        out[:3, :3] *= self.scale
        out[:3, 3] = self.translation
        return out


def is_closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether every edge has exactly two faces, vertices compared by position (UV-seam copies are one vertex).

    Args:
        vertices: `[V, 3]` positions.
        faces: `[F, 3]` indices.
    """
    if len(faces) == 0:
        return False
    _, index = np.unique(np.ascontiguousarray(vertices, dtype=np.float32), axis=0, return_inverse=True)
    welded = index.reshape(-1)[np.asarray(faces, dtype=np.int64)]  # (F, 3) position ids
    edges = np.sort(welded[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)  # (3F, 2) undirected
    _, counts = np.unique(edges[:, 0] * (int(welded.max()) + 1) + edges[:, 1], return_counts=True)
    return bool((counts == 2).all())


def check_image_format(image_format: str) -> None:
    """Raise `InputError` unless `image_format` is one of `IMAGE_FORMATS`."""
    if image_format not in IMAGE_FORMATS:
        raise InputError(f"texture image format must be one of {IMAGE_FORMATS}, got {image_format!r}")


def encode_image(image: np.ndarray, image_format: ImageFormat) -> bytes:
    """Encode an `[S, S, C] uint8` image (C = 3 or 4) as PNG or WebP bytes (WebP lossy, quality 90)."""
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if image_format == "png":
        pil.save(buf, format="PNG", compress_level=1)
    else:
        pil.save(buf, format="WEBP", quality=90, method=2)
    return buf.getvalue()


def encode_images(images: list[np.ndarray], image_format: ImageFormat) -> list[bytes]:
    """`encode_image` of several images at once, one worker thread each (Pillow's encoders release the GIL)."""
    if len(images) <= 1:
        return [encode_image(img, image_format) for img in images]
    with ThreadPoolExecutor(max_workers=len(images), thread_name_prefix="pixal3d-encode") as pool:
        return list(pool.map(lambda img: encode_image(img, image_format), images))


def glb_bytes(
    mesh: TexturedMesh,
    image_format: ImageFormat = "png",
    include_pbr: bool = True,
    placement: Placement | None = None,
) -> bytes:
    """The complete GLB file for a baked mesh.

    Args:
        mesh: vertices, faces, normals, tangents, UVs and textures (see `TexturedMesh`).
        image_format: "png" or "webp" (the latter requires `EXT_texture_webp`, see the module docstring).
        include_pbr: False writes the base colour only: no metallic-roughness or normal texture (nor `TANGENT`),
            a dielectric material (`metallicFactor` 0, `roughnessFactor` 1).
        placement: the node's transform (a converted asset's source placement); None: identity.

    Returns:
        The file's bytes.
    """
    check_image_format(image_format)
    builder = _BinaryBuilder()
    positions = np.ascontiguousarray(mesh.vertices, dtype=np.float32)
    attributes = {
        "POSITION": builder.accessor(positions, "VEC3", _ARRAY_BUFFER, with_bounds=True),
        "NORMAL": builder.accessor(mesh.normals.astype(np.float32), "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": builder.accessor(mesh.uvs.astype(np.float32), "VEC2", _ARRAY_BUFFER),
    }
    if include_pbr:
        attributes["TANGENT"] = builder.accessor(mesh.tangents.astype(np.float32), "VEC4", _ARRAY_BUFFER)
    indices = builder.accessor(mesh.faces.astype(np.uint32).reshape(-1), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    mime = f"image/{image_format}"
    maps = (mesh.base_color, mesh.metallic_roughness, mesh.normal_map) if include_pbr else (mesh.base_color,)
    images = [{"bufferView": builder.view(data), "mimeType": mime} for data in encode_images(list(maps), image_format)]
    if image_format == "webp":
        textures = [{"sampler": 0, "extensions": {"EXT_texture_webp": {"source": i}}} for i in range(len(maps))]
    else:
        textures = [{"sampler": 0, "source": i} for i in range(len(maps))]
    translucent = is_translucent(mesh.base_color[..., 3])
    material: dict = {
        "name": "pbr",
        "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0},
            "metallicRoughnessTexture": {"index": 1},
            "metallicFactor": 1.0,
            "roughnessFactor": 1.0,
        },
        "normalTexture": {"index": 2},
        "alphaMode": "BLEND" if translucent else "OPAQUE",
        "doubleSided": not is_closed(mesh.vertices, mesh.faces),
    }
    if not include_pbr:
        material = {"name": "base_color", "pbrMetallicRoughness": {"baseColorTexture": {"index": 0},
                    "metallicFactor": 0.0, "roughnessFactor": 1.0}, "alphaMode": material["alphaMode"],
                    "doubleSided": material["doubleSided"]}
    node: dict = {"mesh": 0, "name": "asset"}
    if placement is not None:
        node["scale"] = [float(placement.scale)] * 3
        node["translation"] = [float(t) for t in placement.translation]
    doc: dict = {
        "asset": {"version": "2.0", "generator": "pixal3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [
            {"primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}
        ],
        "materials": [material],
        "textures": textures,
        "images": images,
        "samplers": [
            {"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _REPEAT, "wrapT": _REPEAT}
        ],
        "accessors": builder.accessors,
        "bufferViews": builder.views,
        "buffers": [{"byteLength": len(builder.data)}],
    }
    if image_format == "webp":
        doc["extensionsUsed"] = ["EXT_texture_webp"]
        doc["extensionsRequired"] = ["EXT_texture_webp"]
    return _assemble_glb(doc, bytes(builder.data))


def write_glb(
    path: str | os.PathLike,
    mesh: TexturedMesh,
    image_format: ImageFormat = "png",
    include_pbr: bool = True,
    placement: Placement | None = None,
) -> Path:
    """Write a baked mesh as a GLB file, atomically (temporary file in the same folder, then rename).

    Args:
        path: output path; its folder must exist. An existing file is replaced only on success.
        mesh: the baked mesh.
        image_format: "png" (default) or "webp" (requires `EXT_texture_webp`, see the module docstring).
        include_pbr: False writes the base-colour texture only (see `glb_bytes`).
        placement: the node's transform; None: identity.

    Returns:
        The output path.
    """
    path = Path(path)
    check_image_format(image_format)
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist; create it first")
    data = glb_bytes(mesh, image_format, include_pbr=include_pbr, placement=placement)
    write_bytes_atomic(path, data, make_parents=False)
    logger.info("wrote %s (%d faces, %.1f MiB)", path, len(mesh.faces), len(data) / 2**20)
    return path


class _BinaryBuilder:
    """Accumulates the BIN chunk with its bufferViews and accessors (each view 4-byte aligned)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data.extend(b"\x00" * (-len(self.data) % 4))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, array: np.ndarray, kind: str, target: int, with_bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        component = _UINT32 if array.dtype == np.uint32 else _FLOAT
        accessor = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if with_bounds:
            accessor["min"] = array.min(axis=0).tolist()
            accessor["max"] = array.max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _assemble_glb(doc: dict, binary: bytes) -> bytes:
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary += b"\x00" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    header = struct.pack("<III", _GLB_MAGIC, 2, total)
    return (
        header
        + struct.pack("<II", len(text), _CHUNK_JSON)
        + text
        + struct.pack("<II", len(binary), _CHUNK_BIN)
        + binary
    )
