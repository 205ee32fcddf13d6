"""The export chain (DESIGN section 6) and `pixal3d convert`: voxels or a mesh file -> textured GLB (or OBJ).

The chain is four plain steps, each usable on its own:

    build_mesh(voxels)                      -> the fine dual-grid mesh (once; `Asset.mesh` is this mesh)
    clean_mesh(fine, faces, cleanup)        -> the cleaned, simplified mesh            (`cleanup.py`)
    bake_textures(coarse, sampler, S, fine) -> a `TexturedMesh` value                  (`bake.py`)
    writer_for(path)(path, textured, ...)   -> the file, by suffix                     (`writers.py`)

`textured_mesh` runs clean + bake on the CPU (xatlas, numpy: the reference) or, with `ExportOptions.device` set to
"cuda"/"auto", the pure-PyTorch path of `pixal3d.geometry.torch_export` on that device. `export_mesh` adds the
writer. `ExportOptions` is where the face budget, texture size, image format and device are checked: once, at the
boundary (the CLI, `Asset.export`, `convert_file`), not again on the way down.

`convert_file` adds the front: read a GLB/GLTF/OBJ (or a saved voxel file), normalise it into the volume cube and
voxelise it. All inputs are checked before any work starts; outputs are written atomically, so a failure leaves
no file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

import numpy as np
import torch
import trimesh

from pixal3d.errors import InputError
from pixal3d.geometry.bake import AttributeSampler, Recolor, TexturedMesh, bake_textures, check_texture_size
from pixal3d.geometry.cleanup import CleanupOptions, check_face_budget, clean_mesh
from pixal3d.geometry.dual_grid import (
    check_resolution,
    mesh_to_voxels,
    normalize_to_unit_cube,
    unit_cube_transform,
)
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh
from pixal3d.geometry.gltf import ImageFormat, Placement, check_image_format
from pixal3d.geometry.voxels import SparseVoxels, load_voxels, save_voxels
from pixal3d.geometry.writers import WRITERS, writer_for

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".glb", ".gltf", ".obj")
VOXEL_SUFFIXES = (".safetensors",)
ExportDevice = Literal["cpu", "cuda", "auto", "torch-cpu"]
EXPORT_DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto", "torch-cpu")


@dataclass(frozen=True)
class ExportOptions:
    """What an export makes; constructing one checks every field (`InputError` naming the fix)."""

    faces: int = 100_000
    """Face budget of the simplified mesh, `cleanup.MIN_FACES..MAX_FACES`."""
    texture_size: int = 2048
    """Side of the square textures, `bake.TEXTURE_SIZE_RANGE`."""
    image_format: ImageFormat = "png"
    """Texture images: "png" or "webp" (see `gltf.write_glb`)."""
    include_pbr: bool = True
    """False writes the base-colour texture only (no metallic-roughness or normal map)."""
    device: ExportDevice = "cpu"
    """"cpu": clean-up, xatlas and the numpy bake (the reference). "cuda": the pure-PyTorch path on the GPU.
    "auto": the PyTorch path on the GPU when CUDA is available, else the CPU path. "torch-cpu": the PyTorch path
    on the CPU (to compare the two paths without a GPU; slower than "cpu")."""

    def __post_init__(self) -> None:
        check_face_budget(self.faces)
        check_texture_size(self.texture_size)
        check_image_format(self.image_format)
        if not isinstance(self.include_pbr, bool):
            raise InputError(f"include_pbr must be True or False, got {self.include_pbr!r}")
        if self.device not in EXPORT_DEVICES:
            raise InputError(f"export device must be one of {EXPORT_DEVICES}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InputError("export device 'cuda' needs a CUDA GPU, and none is available; use 'cpu' or 'auto'")

    def torch_device(self) -> torch.device | None:
        """The device of the PyTorch export path, or None for the CPU reference path."""
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu") if self.device == "torch-cpu" else None


def build_mesh(voxels: SparseVoxels) -> trimesh.Trimesh:
    """The fine dual-grid mesh of a voxel set with attributes (`voxels_to_mesh`); `InputError` when empty."""
    if voxels.attrs is None:
        raise InputError("the voxels carry no attributes (attrs is None); voxelise with with_attributes=True")
    start = time.perf_counter()
    fine = voxels_to_mesh(voxels)
    if len(fine.faces) == 0:
        raise InputError(
            f"the {len(voxels)} voxels have no crossing edges, so they make no surface to export"
        )
    logger.info("voxels -> %d-face mesh in %.1f s", len(fine.faces), time.perf_counter() - start)
    return fine


def textured_mesh(
    fine_mesh: trimesh.Trimesh,
    sampler: AttributeSampler,
    options: ExportOptions,
    cleanup: CleanupOptions | None = None,
    sample_at_vertices: bool = False,
    recolor: Recolor | None = None,
    resolution: int | None = None,
    timings: dict[str, float] | None = None,
) -> TexturedMesh:
    """Clean and simplify a detailed mesh, then bake its attributes and normals: the export up to the writer.

    Args:
        fine_mesh: the detailed surface, volume frame, vertices shared between faces so that its vertex normals
            are smooth (e.g. `voxels_to_mesh(voxels)`).
        sampler: `points [M, 3] -> attrs [M, 6]` (sRGB base colour, metallic, roughness, alpha) on that surface.
        options: face budget, texture size, device (already checked).
        cleanup: floater and hole thresholds; defaults when None.
        sample_at_vertices: sample attributes at the fine vertices only (see `bake.bake_textures`).
        recolor: base colour from the input image at texel points (see `bake.bake_textures`).
        resolution: the voxel resolution the fine mesh comes from (the PyTorch path's sampling grid); None: derived
            from the mesh's edge lengths.
        timings: filled with the seconds of each step when given (`pixal3d bench`).

    Returns:
        The simplified, unwrapped mesh with its three textures.
    """
    device = options.torch_device()
    if device is not None:
        from pixal3d.geometry.torch_export import export_textured

        return export_textured(fine_mesh, options.faces, options.texture_size, device, cleanup,
                               recolor=recolor, resolution=resolution,
                               sampler=None if sample_at_vertices else sampler, timings=timings)
    start = time.perf_counter()
    coarse = clean_mesh(fine_mesh, options.faces, cleanup)
    logger.info(
        "cleaned %d -> %d faces in %.1f s",
        len(fine_mesh.faces),
        len(coarse.faces),
        time.perf_counter() - start,
    )
    if timings is not None:
        timings["clean-up + simplify"] = time.perf_counter() - start
    start = time.perf_counter()
    baked = bake_textures(coarse, sampler, options.texture_size, fine_mesh, sample_at_vertices, recolor, timings)
    logger.info("baked %d^2 textures in %.1f s", options.texture_size, time.perf_counter() - start)
    return baked


def export_mesh(
    fine_mesh: trimesh.Trimesh,
    sampler: AttributeSampler,
    path: str | os.PathLike,
    options: ExportOptions,
    cleanup: CleanupOptions | None = None,
    sample_at_vertices: bool = False,
    recolor: Recolor | None = None,
    placement: Placement | None = None,
    resolution: int | None = None,
) -> Path:
    """`textured_mesh`, then the writer for `path`'s suffix (`writers.WRITERS`); returns the path written."""
    writer = writer_for(path)  # an unknown suffix or a missing folder fails before any work
    baked = textured_mesh(fine_mesh, sampler, options, cleanup, sample_at_vertices, recolor, resolution)
    return writer(Path(path), baked, options.image_format, options.include_pbr, placement)


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
    """`export_mesh` with the options spelled out (CPU path); `path` may be any suffix of `writers.WRITERS`."""
    options = ExportOptions(faces, texture_size, image_format, include_pbr)
    return export_mesh(fine_mesh, sampler, path, options, cleanup, sample_at_vertices, recolor, placement)


def vertex_attribute_sampler(mesh: trimesh.Trimesh) -> AttributeSampler:
    """`points -> attrs [M, 6]` of the mesh vertex nearest each point (exact at the vertices): its `pbr` vertex
    attribute, or its vertex colour with metallic 0, roughness 0.5 and alpha 1 when there is none."""
    import scipy.spatial

    table = torch.as_tensor(vertex_attributes(mesh))
    tree = scipy.spatial.cKDTree(np.asarray(mesh.vertices))

    def sampler(points: torch.Tensor) -> torch.Tensor:
        _, nearest = tree.query(points.detach().cpu().numpy(), k=1)
        return table[torch.as_tensor(nearest, dtype=torch.int64)]

    return sampler


def vertex_attributes(mesh: trimesh.Trimesh) -> np.ndarray:
    """`[V, 6] float32`: the mesh's `pbr` vertex attribute, or its vertex colours with metallic 0, roughness 0.5
    and alpha 1."""
    pbr = mesh.vertex_attributes.get("pbr")
    if pbr is None:
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        pbr = np.concatenate([colors, np.tile([[0.0, 0.5, 1.0]], (len(colors), 1))], axis=1)
    return np.asarray(pbr, dtype=np.float32)


def voxels_to_glb(
    voxels: SparseVoxels,
    path: str | os.PathLike,
    faces: int = 100_000,
    texture_size: int = 2048,
    image_format: ImageFormat = "png",
    include_pbr: bool = True,
    placement: Placement | None = None,
    device: ExportDevice = "cpu",
) -> Path:
    """Export a sparse PBR voxel set as a textured GLB (the decoder's output or a converted asset).

    Args:
        voxels: voxels with `attrs [N, 6]`, volume frame.
        path: output `.glb` (or another suffix of `writers.WRITERS`), written atomically.
        faces, texture_size, image_format, include_pbr, device: see `ExportOptions`.
        placement: the GLB node's transform (a converted asset's source placement); None: identity.

    Returns:
        The output path.
    """
    return export_voxels(voxels, path, ExportOptions(faces, texture_size, image_format, include_pbr, device),
                         placement)


def export_voxels(voxels: SparseVoxels, path: str | os.PathLike, options: ExportOptions,
                  placement: Placement | None = None) -> Path:
    """`build_mesh` then `export_mesh`: the voxels' own trilinear sampler, evaluated at the fine vertices."""
    writer_for(path)
    fine = build_mesh(voxels)
    # The dual-grid mesh has one vertex per voxel: sampling the voxels at its vertices loses nothing.
    sampler = partial(sample_attributes, voxels)
    return export_mesh(fine, sampler, path, options, sample_at_vertices=True, placement=placement,
                       resolution=voxels.resolution)


def convert_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    resolution: int = 256,
    faces: int = 100_000,
    texture_size: int = 2048,
    image_format: ImageFormat = "png",
    save_voxels_path: str | os.PathLike | None = None,
    keep_placement: bool = True,
    device: ExportDevice = "cpu",
) -> Path:
    """`pixal3d convert`: a mesh file (or saved voxels) -> normalise -> voxels -> baked GLB.

    The mesh is normalised into the volume cube to be voxelised; by default the GLB's node carries the exact
    inverse of that normalisation (`gltf.Placement`), so the asset lands at the source's size and position.

    Args:
        input_path: `.glb`, `.gltf` or `.obj` (with its `.mtl` and textures), or `.safetensors` voxels.
        output_path: the `.glb` (or `.obj`, see `writers.WRITERS`) to write.
        resolution: voxel resolution R (see `dual_grid.RESOLUTIONS`); ignored for voxel input.
        faces: face budget of the exported mesh.
        texture_size: side of the square textures.
        image_format: "png" or "webp".
        save_voxels_path: also save the voxel set here (mesh input only; the voxels stay in the cube frame).
        keep_placement: write the source placement into the GLB node (mesh input); False: the normalised cube.
        device: the export path (see `ExportOptions.device`).

    Returns:
        The output path.
    """
    input_path = Path(input_path)
    suffix = _check_input_suffix(input_path)
    options = ExportOptions(faces, texture_size, image_format, device=device)
    _check_output(output_path, tuple(WRITERS))
    if suffix in VOXEL_SUFFIXES:
        _check_readable(input_path)
        if save_voxels_path is not None:
            raise InputError("--save-voxels only applies to mesh input; the input is already a voxel file")
        voxels = load_voxels(input_path)  # raises InputError for a missing, corrupt or foreign file
        return export_voxels(voxels, output_path, options)

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
        return export_voxels(voxels, output_path, options, placement)
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
