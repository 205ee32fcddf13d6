"""Seeded procedural PBR objects (DESIGN section 7): `generate(seed) -> ProceduralObject`.

Each family is a small grammar (a plain function `rng -> list[Part]`) that assembles parts with real UVs and
glTF PBR materials. The object is then centred and scaled so that its bounding box's longest side is
`EXTENT` (< 1), i.e. it lies inside the unit cube `[-0.5, 0.5]^3`, y up, its front facing +z (DESIGN section 2).
Determinism: all randomness flows from one `numpy.random.Generator(PCG64(seed))`; the same seed gives a
byte-identical GLB. The family is `FAMILIES[seed % len(FAMILIES)]`, so consecutive seeds cycle through the
families (balanced data sets) and `generate(s, family=f)` equals `generate(s)` when `f` is that family.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from trimesh.visual import TextureVisuals

from pixal3d.atomic import write_bytes_atomic
from pixal3d.data.procedural import furniture, organic, props, tools, toys, vessels
from pixal3d.data.procedural.parts import Part
from pixal3d.errors import InputError

EXTENT = 0.95
"""Longest side of the normalised object's bounding box, in volume units."""

FAMILIES: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "chair": furniture.chair,
    "table": furniture.table,
    "shelf": furniture.shelf,
    "lamp": furniture.lamp,
    "mug": vessels.mug,
    "vase": vessels.vase,
    "bottle": vessels.bottle,
    "hammer": tools.hammer,
    "wrench": tools.wrench,
    "screwdriver": tools.screwdriver,
    "car": toys.car,
    "airplane": toys.airplane,
    "robot": toys.robot,
    "house": props.house,
    "sign": props.sign,
    "crate": props.crate,
    "fruit": organic.fruit,
    "mushroom": organic.mushroom,
    "potted_plant": organic.potted_plant,
}
"""Family name -> builder. A builder takes the seeded generator and returns the parts in object units."""


@dataclass
class ProceduralObject:
    """One generated object."""

    seed: int
    family: str
    scene: trimesh.Scene
    """One node per part (identity transforms), each a `Trimesh` with `TextureVisuals(uv, PBRMaterial)`."""


def generate(seed: int, family: str | None = None) -> ProceduralObject:
    """Build the procedural object of `seed` (optionally forcing its family).

    Args:
        seed: any integer >= 0.
        family: one of `FAMILIES`, or None for the seed's own (`seed % len(FAMILIES)`).

    Returns:
        The object, normalised into `[-0.5, 0.5]^3`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown procedural family {family!r}; choose one of: {', '.join(FAMILIES)}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    family = family or list(FAMILIES)[int(seed) % len(FAMILIES)]
    parts = FAMILIES[family](rng)
    return ProceduralObject(int(seed), family, assemble(parts))


def assemble(parts: list[Part]) -> trimesh.Scene:
    """Normalise parts jointly (bounding-box centre to the origin, longest side to `EXTENT`) into a scene."""
    verts = np.concatenate([p.geom.vertices for p in parts])
    lo, hi = verts.min(0), verts.max(0)
    centre, factor = (lo + hi) / 2, EXTENT / float((hi - lo).max())
    scene = trimesh.Scene()
    for i, p in enumerate(parts):
        mesh = trimesh.Trimesh(
            vertices=(p.geom.vertices - centre) * factor,
            faces=p.geom.faces,
            visual=TextureVisuals(uv=p.geom.uv, material=p.material),
            process=False,
        )
        name = f"{i:02d}_{p.name}"
        scene.add_geometry(mesh, geom_name=name, node_name=name)
    return scene


def export_glb(obj: ProceduralObject, path: str | os.PathLike) -> Path:
    """Write `obj` as a binary glTF at `path` through a temporary file and a rename; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".glb":
        raise InputError(f"procedural objects are written as GLB; use a .glb path, got {str(path)!r}")
    data = obj.scene.export(file_type="glb")
    write_bytes_atomic(path, data)
    return path


__all__ = ["EXTENT", "FAMILIES", "ProceduralObject", "assemble", "export_glb", "generate"]
