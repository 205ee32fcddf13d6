"""Seeded procedural PBR objects (DESIGN section 7): `generate(seed) -> ProceduralObject`.

Each family is a small grammar (a plain function `rng -> list[Part]`) that assembles parts with real UVs and
glTF PBR materials. The object is then centred and scaled so that its bounding box's longest side is
`EXTENT` (< 1), i.e. it lies inside the unit cube `[-0.5, 0.5]^3`, y up, its front facing +z (DESIGN section 2).
Determinism: all randomness flows from one `numpy.random.Generator(PCG64(seed))`; the same seed gives a
byte-identical GLB. The family is `FAMILIES[seed % len(FAMILIES)]`, so consecutive seeds cycle through the
families (balanced data sets) and `generate(s, family=f)` equals `generate(s)` when `f` is that family.

Family sets: `FAMILIES` (the 19 classic families) and its seed mapping never change, since past evaluations name
objects by seed alone (held-out seeds 1,000,000 on). Newer families (`zeroverse`: height-fielded primitive stacks,
blocks with boolean cutters, thin wires) live in `FAMILY_SETS` instead: `generate(seed, family_set="all")` picks
`FAMILY_SETS["all"][seed % 22]`. Only the classic set names assets "proc-<seed>"; the others add the set's name
("proc-all-<seed>", `procedural_asset_id`), so data made from different sets never collide.
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
from pixal3d.data.procedural.zeroverse import ZEROVERSE_FAMILIES
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
"""The classic families: name -> builder. A builder takes the seeded generator and returns the parts in object
units. Frozen: adding an entry would change the object of every seed (use `FAMILY_SETS`)."""

BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {**FAMILIES, **ZEROVERSE_FAMILIES}
"""Every family, classic or not: name -> builder."""

FAMILY_SETS: dict[str, tuple[str, ...]] = {
    "classic": tuple(FAMILIES),
    "zeroverse": tuple(ZEROVERSE_FAMILIES),
    "all": tuple(FAMILIES) + tuple(ZEROVERSE_FAMILIES),
}
"""Named family sets; a seed's family is `FAMILY_SETS[name][seed % len(...)]`. "classic" is the default."""


def check_family_set(family_set: str) -> str:
    """`family_set` if it names a `FAMILY_SETS` entry, else an `InputError` listing the names."""
    if family_set not in FAMILY_SETS:
        raise InputError(f"unknown procedural family set {family_set!r}; choose one of: {', '.join(FAMILY_SETS)}")
    return family_set


def procedural_asset_id(seed: int, family_set: str = "classic") -> str:
    """The id of a procedural asset: "proc-00000012" (classic set, unchanged), "proc-all-00000012" (others)."""
    check_family_set(family_set)
    return f"proc-{seed:08d}" if family_set == "classic" else f"proc-{family_set}-{seed:08d}"


@dataclass
class ProceduralObject:
    """One generated object."""

    seed: int
    family: str
    scene: trimesh.Scene
    """One node per part (identity transforms), each a `Trimesh` with `TextureVisuals(uv, PBRMaterial)`."""


def generate(seed: int, family: str | None = None, family_set: str = "classic") -> ProceduralObject:
    """Build the procedural object of `seed` (optionally forcing its family).

    Args:
        seed: any integer >= 0.
        family: one of `BUILDERS`, or None for the seed's own in `family_set`.
        family_set: a `FAMILY_SETS` name; the seed's family is `FAMILY_SETS[family_set][seed % len(set)]`.

    Returns:
        The object, normalised into `[-0.5, 0.5]^3`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if family is not None and family not in BUILDERS:
        raise InputError(f"unknown procedural family {family!r}; choose one of: {', '.join(BUILDERS)}")
    families = FAMILY_SETS[check_family_set(family_set)]
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    family = family or families[int(seed) % len(families)]
    parts = BUILDERS[family](rng)
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


__all__ = ["BUILDERS", "EXTENT", "FAMILIES", "FAMILY_SETS", "ProceduralObject", "assemble", "check_family_set",
           "export_glb", "generate", "procedural_asset_id"]
