"""The export chain (DESIGN section 6) and `pixal3d convert`: voxels or a mesh file -> textured GLB.

`voxels_to_glb` is what the pipeline's `Asset.export` runs: dual-grid mesh -> clean-up -> simplify -> UV unwrap ->
bake (attributes trilinear from the voxels, normal map from the fine mesh) -> GLB. `convert_file` adds the front:
read a GLB/GLTF/OBJ (or a saved voxel file), normalise it into the volume cube and voxelise it.

All inputs are checked before any work starts; outputs are written atomically, so a failure leaves no file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from functools import partial
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import trimesh

from pixal3d.errors import InputError
from pixal3d.geometry.bake import AttributeSampler, Recolor, bake_textures, check_texture_size
from pixal3d.geometry.cleanup import CleanupOptions, check_face_budget, clean_mesh
from pixal3d.geometry.dual_grid import (
    check_resolution,
    mesh_to_voxels,
    normalize_to_unit_cube,
    unit_cube_transform,
)
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh
from pixal3d.geometry.gltf import ImageFormat, Placement, check_image_format, write_glb
from pixal3d.geometry.voxels import SparseVoxels, load_voxels, save_voxels

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".glb", ".gltf", ".obj")
VOXEL_SUFFIXES = (".safetensors",)


def mesh_to_glb(
    fine_mesh: trimesh.Trimesh,
    sampler: AttributeSampler,
    path: str | os.PathLike,
    faces: int = 100_000,
    texture_size: int = 2048,
    image_format: ImageFormat = "png",
    cleanup: CleanupOptions | None = None,
    sample_at_vertices: bool = False,
    recolor: Recolor | None = None,
    include_pbr: bool = True,
    placement: Placement | None = None,
) -> Path:
    """Clean and simplify a detailed mesh, bake its attributes and normals, and write a GLB.

    Args:
        fine_mesh: the detailed surface, volume frame, vertices shared between faces so that its vertex normals
            are smooth (e.g. `voxels_to_mesh(voxels)`).
        sampler: `points [M, 3] -> attrs [M, 6]` (sRGB base colour, metallic, roughness, alpha) on that surface.
        path: output `.glb` path, written atomically.
        faces: face budget of the simplified mesh.
        texture_size: side of the square textures, 256..8192.
        image_format: "png" or "webp" (see `gltf.write_glb`).
        cleanup: floater and hole thresholds; defaults when None.
        sample_at_vertices: sample attributes at the fine vertices only (see `bake.bake_textures`).
        recolor: base colour from the input image at texel points (see `bake.bake_textures`).
        include_pbr: False writes the base-colour texture only (no metallic-roughness or normal map).
        placement: the GLB node's transform (see `gltf.Placement`); None: the volume frame as is.

    Returns:
        The output path.
    """
    check_face_budget(faces)
    check_texture_size(texture_size)
    check_image_format(image_format)
    _check_output(path)
    start = time.perf_counter()
    coarse = clean_mesh(fine_mesh, faces, cleanup)
    logger.info(
        "cleaned %d -> %d faces in %.1f s",
        len(fine_mesh.faces),
        len(coarse.faces),
        time.perf_counter() - start,
    )
    start = time.perf_counter()
    baked = bake_textures(coarse, sampler, texture_size, fine_mesh, sample_at_vertices, recolor)
    logger.info("baked %d^2 textures in %.1f s", texture_size, time.perf_counter() - start)
    return write_glb(path, baked, image_format, include_pbr=include_pbr, placement=placement)


def vertex_attribute_sampler(mesh: trimesh.Trimesh) -> AttributeSampler:
    """`points -> attrs [M, 6]` of the mesh vertex nearest each point (exact at the vertices): its `pbr` vertex
    attribute, or its vertex colour with metallic 0, roughness 0.5 and alpha 1 when there is none."""
    import scipy.spatial
    import torch

    pbr = mesh.vertex_attributes.get("pbr")
    if pbr is None:
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        pbr = np.concatenate([colors, np.tile([[0.0, 0.5, 1.0]], (len(colors), 1))], axis=1)
    table = torch.as_tensor(np.asarray(pbr, dtype=np.float32))
    tree = scipy.spatial.cKDTree(np.asarray(mesh.vertices))

    def sampler(points: torch.Tensor) -> torch.Tensor:
        _, nearest = tree.query(points.detach().cpu().numpy(), k=1)
        return table[torch.as_tensor(nearest, dtype=torch.int64)]

    return sampler


def voxels_to_glb(
    voxels: SparseVoxels,
    path: str | os.PathLike,
    faces: int = 100_000,
    texture_size: int = 2048,
    image_format: ImageFormat = "png",
    include_pbr: bool = True,
    placement: Placement | None = None,
) -> Path:
    """Export a sparse PBR voxel set as a textured GLB (the decoder's output or a converted asset).

    Args:
        voxels: voxels with `attrs [N, 6]`, volume frame.
        path: output `.glb` path, written atomically.
        faces: face budget of the simplified mesh.
        texture_size: side of the square textures, 256..8192.
        image_format: "png" or "webp".
        include_pbr: False writes the base-colour texture only (no metallic-roughness or normal map).
        placement: the GLB node's transform (a converted asset's source placement); None: identity.

    Returns:
        The output path.
    """
    if voxels.attrs is None:
        raise InputError("the voxels carry no attributes (attrs is None); voxelise with with_attributes=True")
    check_face_budget(faces)
    check_texture_size(texture_size)
    check_image_format(image_format)
    _check_output(path)
    start = time.perf_counter()
    fine = voxels_to_mesh(voxels)
    if len(fine.faces) == 0:
        raise InputError(
            f"the {len(voxels)} voxels have no crossing edges, so they make no surface to export"
        )
    logger.info("voxels -> %d-face mesh in %.1f s", len(fine.faces), time.perf_counter() - start)
    # The dual-grid mesh has one vertex per voxel: sampling the voxels at its vertices loses nothing.
    sampler = partial(sample_attributes, voxels)
    return mesh_to_glb(fine, sampler, path, faces, texture_size, image_format, sample_at_vertices=True,
                       include_pbr=include_pbr, placement=placement)


def convert_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    resolution: int = 256,
    faces: int = 100_000,
    texture_size: int = 2048,
    image_format: ImageFormat = "png",
    save_voxels_path: str | os.PathLike | None = None,
    keep_placement: bool = True,
) -> Path:
    """`pixal3d convert`: a mesh file (or saved voxels) -> normalise -> voxels -> baked GLB.

    The mesh is normalised into the volume cube to be voxelised; by default the GLB's node carries the exact
    inverse of that normalisation (`gltf.Placement`), so the asset lands at the source's size and position.

    Args:
        input_path: `.glb`, `.gltf` or `.obj` (with its `.mtl` and textures), or `.safetensors` voxels.
        output_path: the `.glb` to write.
        resolution: voxel resolution R (see `dual_grid.RESOLUTIONS`); ignored for voxel input.
        faces: face budget of the exported mesh.
        texture_size: side of the square textures.
        image_format: "png" or "webp".
        save_voxels_path: also save the voxel set here (mesh input only; the voxels stay in the cube frame).
        keep_placement: write the source placement into the GLB node (mesh input); False: the normalised cube.

    Returns:
        The output path.
    """
    input_path = Path(input_path)
    suffix = _check_input_suffix(input_path)
    check_face_budget(faces)
    check_texture_size(texture_size)
    check_image_format(image_format)
    _check_output(output_path)
    if suffix in VOXEL_SUFFIXES:
        _check_readable(input_path)
        if save_voxels_path is not None:
            raise InputError("--save-voxels only applies to mesh input; the input is already a voxel file")
        voxels = load_voxels(input_path)  # raises InputError for a missing, corrupt or foreign file
        return voxels_to_glb(voxels, output_path, faces, texture_size, image_format)

    check_resolution(resolution)
    if save_voxels_path is not None:
        _check_output(save_voxels_path, suffixes=VOXEL_SUFFIXES)
    asset = load_mesh_file(input_path)
    start = time.perf_counter()
    scale, offset = unit_cube_transform(asset)
    placement = Placement.from_normalization(scale, offset) if keep_placement else None
    voxels = mesh_to_voxels(normalize_to_unit_cube(asset), resolution)
    logger.info(
        "voxelised at R=%d: %d voxels in %.1f s", resolution, len(voxels), time.perf_counter() - start
    )
    if save_voxels_path is not None:
        save_voxels(save_voxels_path, voxels)
    try:
        return voxels_to_glb(voxels, output_path, faces, texture_size, image_format, placement=placement)
    except BaseException:
        # No partial output: the voxel file belongs to this run's result.
        if save_voxels_path is not None:
            Path(save_voxels_path).unlink(missing_ok=True)
        raise


def _check_input_suffix(path: Path) -> str:
    """The lower-case suffix of an input `convert` reads (mesh or voxel file); anything else is an InputError."""
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES + VOXEL_SUFFIXES:
        raise InputError(
            f"unsupported input {str(path)!r}: expected one of {MESH_SUFFIXES + VOXEL_SUFFIXES}; "
            "convert other formats to GLB first"
        )
    return suffix


def load_mesh_file(path: str | os.PathLike) -> trimesh.Trimesh | trimesh.Scene:
    """Read a GLB, GLTF or OBJ file with its materials, after checking every file it references exists.

    Raises:
        InputError: missing or unreadable file, unsupported suffix, a missing referenced buffer/texture/MTL,
            no triangles, or NaN/Inf vertex coordinates.
    """
    path = Path(path)
    suffix = _check_input_suffix(path)
    _check_readable(path)
    if suffix == ".obj":
        _check_text(path, "OBJ")
    missing = [str(p) for p in referenced_files(path) if not p.is_file()]
    if missing:
        raise InputError(f"{str(path)!r} references files that do not exist: {missing}; copy them beside it")
    for mtl in referenced_files(path):
        if mtl.suffix.lower() == ".mtl":
            _check_text(mtl, "MTL")
    try:
        asset = trimesh.load(path, process=False)
    except Exception as err:  # trimesh raises many types for a malformed file
        raise InputError(f"could not read {str(path)!r} as {suffix[1:].upper()}: {err}") from err
    if isinstance(asset, trimesh.Trimesh):
        parts = [asset]
    elif isinstance(asset, trimesh.Scene):
        parts = [g for g in asset.geometry.values() if isinstance(g, trimesh.Trimesh)]
    else:
        parts = []
    if sum(len(p.faces) for p in parts) == 0:
        raise InputError(f"{str(path)!r} holds no triangles (empty, or only points/lines)")
    if not all(np.isfinite(np.asarray(p.vertices)).all() for p in parts):
        raise InputError(
            f"{str(path)!r} has NaN or Inf vertex coordinates; repair the mesh before converting"
        )
    return asset


def referenced_files(path: Path) -> list[Path]:
    """External files a mesh file names: MTL libraries and their texture maps (OBJ), buffers and images (GLTF)."""
    suffix = path.suffix.lower()
    if suffix == ".obj":
        mtls = [path.parent / name for name in _statements(path, ("mtllib",))]
        maps = [
            mtl.parent / name
            for mtl in mtls
            if mtl.is_file()
            for name in _statements(
                mtl, ("map_kd", "map_ka", "map_ks", "map_d", "map_bump", "bump", "norm", "map_pr", "map_pm")
            )
        ]
        return mtls + maps
    if suffix == ".gltf":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"could not read {str(path)!r} as glTF JSON: {err}") from err
        uris = [
            item.get("uri")
            for key in ("buffers", "images")
            for item in doc.get(key, [])
            if isinstance(item, dict)
        ]
        return [path.parent / unquote(u) for u in uris if isinstance(u, str) and not u.startswith("data:")]
    return []


def _statements(path: Path, keywords: tuple[str, ...]) -> list[str]:
    """The file names after `keywords` in an OBJ/MTL file (map options such as `-bm 1.0` skipped)."""
    names = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.strip().split()
        if len(words) < 2 or words[0].lower() not in keywords:
            continue
        rest = line.strip()[len(words[0]) :].strip()
        # Options are "-flag value(s)"; the file name is what remains (it may contain spaces).
        rest = re.sub(r"^(-\w+(\s+(on|off|[-+]?[\d.]+))*\s+)+", "", rest)
        names.append(rest.replace("\\", "/"))
    return names


def _check_text(path: Path, kind: str) -> None:
    """OBJ and MTL are UTF-8 (or ASCII) text: refuse binary data and other encodings with a clear message.

    (trimesh would hand undecodable bytes to an optional charset detector and fail with an ImportError.)
    """
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputError(f"{str(path)!r} holds binary data, not a text {kind} file; is it really {kind}? "
                         "(a binary mesh? convert it to GLB first)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{str(path)!r} is not UTF-8 text ({err}); re-save it as UTF-8, e.g. "
                         f"iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}") from err


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist or is not a file")


def _check_output(path: str | os.PathLike, suffixes: tuple[str, ...] = (".glb",)) -> None:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise InputError(f"output {str(path)!r} must end in one of {suffixes}")
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist; create it first")
