"""Real meshes into training samples: any folder of GLB / GLTF / OBJ(+MTL) through the same path as procedural ones.

`load_asset(path)` loads a file with trimesh as a scene (the scene graph is kept; `mesh_from_trimesh` and
`mesh_to_voxels` flatten it with node transforms applied), keeps the materials, checks that what the file refers
to exists (OBJ: `mtllib` files and their `map_*` textures; GLTF: external buffers and images), and normalises
the asset into the unit cube (bounding-box centre at the origin, longest side 0.96; +y up as glTF and most OBJ
files). `pixal3d.data.shards.ingest_folder` turns every such file into `views` samples: a file with no faces,
broken materials or missing textures is skipped with a logged reason and counted in the run summary; one bad
file never stops the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import trimesh

from pixal3d.errors import InputError
from pixal3d.geometry.dual_grid import mesh_parts, normalize_to_unit_cube

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".glb", ".gltf", ".obj")
NORMALISED_MARGIN = 0.02
"""Empty border of the normalised asset, volume units per side."""


def find_meshes(folder: str | os.PathLike) -> list[Path]:
    """Every GLB / GLTF / OBJ file under `folder` (recursive), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give a folder of .glb/.gltf/.obj files")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)


def _obj_references(path: Path) -> list[Path]:
    """Files an OBJ needs: its `mtllib`s and their `map_*` / `bump` / `norm` textures."""
    needed = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("mtllib "):
            needed.append(path.parent / line.split(None, 1)[1].strip())
    textures = []
    for mtl in needed:
        if not mtl.is_file():
            continue
        for line in mtl.read_text(errors="replace").splitlines():
            parts = line.strip().split()
            if parts and re.match(r"^(map_\w+|bump|norm|disp)$", parts[0], re.IGNORECASE) and len(parts) > 1:
                textures.append(mtl.parent / _texture_name(parts[1:]))
    return needed + textures


# MTL texture options and how many values follow each (`-s 1 1 1`, `-bm 0.5`, ...); the file name comes after them.
_MTL_OPTION_VALUES = {"-blendu": 1, "-blendv": 1, "-boost": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1,
                      "-clamp": 1, "-bm": 1, "-imfchan": 1, "-type": 1, "-cc": 1}


def _texture_name(tokens: list[str]) -> str:
    """The file name of a `map_*` statement's tokens: options skipped, the rest joined (names may hold spaces)."""
    i = 0
    while i < len(tokens) - 1 and tokens[i].lower() in _MTL_OPTION_VALUES:
        i += 1 + _MTL_OPTION_VALUES[tokens[i].lower()]
    return " ".join(tokens[i:]) if i < len(tokens) else tokens[-1]


def _gltf_references(path: Path) -> list[Path]:
    """External buffers and images of a .gltf (data URIs excluded)."""
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid glTF JSON ({err})") from err
    uris = [b.get("uri") for b in doc.get("buffers", [])] + [i.get("uri") for i in doc.get("images", [])]
    return [path.parent / u for u in uris if isinstance(u, str) and not u.startswith("data:")]


def check_references(path: Path) -> None:
    """Raise `InputError` naming the first missing file an OBJ or GLTF refers to."""
    suffix = path.suffix.lower()
    refs = _obj_references(path) if suffix == ".obj" else _gltf_references(path) if suffix == ".gltf" else []
    missing = [str(r.name) for r in refs if not r.is_file()]
    if missing:
        raise InputError(f"{path.name}: missing referenced file(s) {missing} (material library or texture)")


def _check_materials(scene: trimesh.Scene, name: str) -> None:
    """Every textured part must have a usable material and UVs for its vertices."""
    for geometry_name, geometry in scene.geometry.items():
        if not isinstance(geometry, trimesh.Trimesh) or geometry.visual.kind != "texture":
            continue
        material = getattr(geometry.visual, "material", None)
        if material is None:
            raise InputError(f"{name}: part {geometry_name!r} has a texture visual without a material")
        uv = getattr(geometry.visual, "uv", None)
        has_texture = any(getattr(material, k, None) is not None
                          for k in ("baseColorTexture", "metallicRoughnessTexture", "image"))
        if has_texture and (uv is None or len(uv) != len(geometry.vertices)):
            raise InputError(f"{name}: part {geometry_name!r} has a texture but no UVs per vertex")


def load_asset(path: str | os.PathLike) -> trimesh.Scene:
    """Load, check and normalise one mesh file into a scene inside the unit cube (module docstring).

    Raises:
        InputError: unreadable file, no triangle faces, missing textures or material libraries, broken
            materials, non-finite or zero-extent geometry.
    """
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(f"{path.name}: unsupported mesh type; give one of {', '.join(MESH_SUFFIXES)}")
    check_references(path)
    try:
        scene = trimesh.load(str(path), force="scene")
    except InputError:
        raise
    except Exception as err:  # trimesh raises many types for corrupt files; each means "unreadable"
        raise InputError(f"{path.name}: cannot be read as a mesh ({type(err).__name__}: {err})") from err
    if not isinstance(scene, trimesh.Scene) or not scene.geometry:
        raise InputError(f"{path.name}: the file holds no geometry")
    try:
        mesh_parts(scene)
    except InputError as err:
        raise InputError(f"{path.name}: {err}") from err
    _check_materials(scene, path.name)
    vertices = np.concatenate([np.asarray(p.vertices) for p in mesh_parts(scene)])
    if not np.isfinite(vertices).all():
        raise InputError(f"{path.name}: vertices with NaN or Inf coordinates")
    return normalize_to_unit_cube(scene, margin=NORMALISED_MARGIN)


def asset_id_of(path: Path, root: Path) -> str:
    """`mesh-<relative path without suffix>`, non-alphanumerics -> `_` (unique within one folder)."""
    relative = path.relative_to(root).with_suffix("").as_posix()
    return "mesh-" + re.sub(r"[^A-Za-z0-9_.-]", "_", relative)


