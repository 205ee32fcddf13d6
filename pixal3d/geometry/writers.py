"""File writers for a baked `TexturedMesh`, one per output suffix (the last step of the export seam).

`WRITERS` maps a lower-case suffix to a function `(path, mesh, image_format, include_pbr, placement) -> path`; a new
format is one function and one entry. `writer_for(path)` picks it and raises `InputError` for an unknown suffix.

- `.glb`: `gltf.write_glb` (glTF 2.0 metallic-roughness, one binary file).
- `.obj`: Wavefront OBJ + MTL + texture images beside it, for tools that read no glTF. OBJ has no tangents and no
  standard PBR slots, so the MTL uses the common PBR extension (`map_Pr` roughness, `map_Pm` metallic, `norm`
  tangent-space normal map) next to `map_Kd`/`map_d`; viewers without it show the base colour. OBJ has no node
  transform either: a `Placement` is applied to the vertices.

Every file is written atomically, and a multi-file writer removes the files it wrote when a later one fails, so a
failure leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pixal3d.atomic import write_bytes_atomic, write_text_atomic
from pixal3d.errors import InputError
from pixal3d.geometry.bake import TexturedMesh
from pixal3d.geometry.gltf import ImageFormat, Placement, encode_images, write_glb

logger = logging.getLogger(__name__)

Writer = Callable[[Path, TexturedMesh, ImageFormat, bool, "Placement | None"], Path]
"""`(path, mesh, image_format, include_pbr, placement) -> path`: writes one baked mesh as a file (or file set)."""


def write_obj(
    path: Path,
    mesh: TexturedMesh,
    image_format: ImageFormat = "png",
    include_pbr: bool = True,
    placement: Placement | None = None,
) -> Path:
    """Write `NAME.obj`, `NAME.mtl` and `NAME_basecolor.png` (+ `_roughness`, `_metallic`, `_normal` with PBR).

    OBJ's `vt` origin is the image's bottom-left corner, so `vt = (u, 1 - v)` of glTF's UVs; faces are
    `f v/vt/vn` with 1-based indices. Returns the `.obj` path.
    """
    path = Path(path)
    _check_folder(path)
    stem = path.stem
    maps = {"basecolor": mesh.base_color}
    if include_pbr:
        maps |= {
            "roughness": mesh.metallic_roughness[..., 1],
            "metallic": mesh.metallic_roughness[..., 2],
            "normal": mesh.normal_map,
        }
    names = {key: f"{stem}_{key}.{image_format}" for key in maps}
    written: list[Path] = []
    try:
        for key, data in zip(maps, encode_images(list(maps.values()), image_format), strict=True):
            write_bytes_atomic(path.with_name(names[key]), data, make_parents=False)
            written.append(path.with_name(names[key]))
        write_text_atomic(path.with_suffix(".mtl"), _mtl_text(names), make_parents=False)
        written.append(path.with_suffix(".mtl"))
        write_text_atomic(path, _obj_text(mesh, f"{stem}.mtl", placement), make_parents=False)
    except BaseException:
        for done in written:
            done.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (+ .mtl, %d textures; %d faces)", path, len(maps), len(mesh.faces))
    return path


def _mtl_text(names: dict[str, str]) -> str:
    lines = ["# pixal3d", "newmtl pbr", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1",
             f"map_Kd {names['basecolor']}", f"map_d {names['basecolor']}"]
    if "normal" in names:
        lines += [f"map_Pr {names['roughness']}", f"map_Pm {names['metallic']}", f"norm {names['normal']}"]
    return "\n".join(lines) + "\n"


def _obj_text(mesh: TexturedMesh, mtl_name: str, placement: Placement | None) -> str:
    vertices = mesh.vertices.astype(np.float64)
    if placement is not None:
        vertices = vertices * placement.scale + np.asarray(placement.translation)
    uvs = mesh.uvs.astype(np.float64) * (1.0, -1.0) + (0.0, 1.0)
    corners = mesh.faces.astype(np.int64) + 1
    blocks = [
        f"# pixal3d\nmtllib {mtl_name}\no asset\n",
        _rows("v", vertices, "%.7g"),
        _rows("vt", uvs, "%.7g"),
        _rows("vn", mesh.normals.astype(np.float64), "%.6g"),
        "usemtl pbr\n",
        "".join(f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}\n" for a, b, c in corners.tolist()),
    ]
    return "".join(blocks)


def _rows(tag: str, values: np.ndarray, fmt: str) -> str:
    if len(values) == 0:
        return ""
    line = f"{tag} " + " ".join([fmt] * values.shape[1]) + "\n"
    return "".join(line % tuple(row) for row in values.tolist())


def _write_glb(path: Path, mesh: TexturedMesh, image_format: ImageFormat, include_pbr: bool,
               placement: Placement | None) -> Path:
    return write_glb(path, mesh, image_format, include_pbr=include_pbr, placement=placement)


WRITERS: dict[str, Writer] = {".glb": _write_glb, ".obj": write_obj}
"""Output suffix -> writer. `Asset.export`, `pixal3d generate` and `convert` accept exactly these suffixes."""


def writer_for(path: str | os.PathLike) -> Writer:
    """The writer for `path`'s suffix; `InputError` naming the supported ones otherwise, or a missing folder."""
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise InputError(f"output {str(path)!r} must end in one of {tuple(WRITERS)}")
    _check_folder(path)
    return writer


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise InputError(f"output folder {str(path.parent)!r} does not exist; create it first")
