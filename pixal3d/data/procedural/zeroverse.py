"""Zeroverse-style families (after LRM-Zero's "Zeroverse", Xie et al. 2024): random primitives whose sides carry
smooth height fields, blocks with boolean cutters subtracted, and thin wire structures, each part with a random
PBR material. They add shapes the classic grammars lack (relief, holes and hollows, thin wires) without semantics.

Builders have the classic signature `rng -> list[Part]` and work in object units (about 1); `assemble` later
scales the longest side to `EXTENT`. Booleans go through manifold3d (imported where used, see `_manifold`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from trimesh.visual.material import PBRMaterial

import pixal3d.data.procedural.materials as M
from pixal3d.data.procedural.parts import (
    Geom,
    Part,
    _grid_faces,
    box,
    merge,
    project_uv,
    revolve,
    rod,
    rotate,
    smooth_noise,
    sphere,
    sweep,
    torus,
    translate,
)
from pixal3d.errors import InputError

Primitive = Literal["box", "cylinder", "sphere", "cone", "torus"]
PRIMITIVES: tuple[Primitive, ...] = ("box", "cylinder", "sphere", "cone", "torus")

EXTENT = 0.95
"""`pixal3d.data.procedural.EXTENT` (the normalised longest side), repeated here to avoid an import cycle."""

WIRE_RADIUS_MIN = 0.0065
"""Smallest wire radius after normalisation to `EXTENT` (volume units): 1.66 voxels across at R = 128."""


# ------------------------------------------------------------------------------------------- height fields
def height_field(points: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """A random smooth field in [-1, 1] at `points` [N, 3] (object units, feature size ~ `size`), reaching +-1
    over the points: waves, ridges (creased crests), bumps (positive blobs) or terraces (quantised levels)."""
    kind = str(rng.choice(["waves", "ridges", "bumps", "terraces"]))
    n = smooth_noise(points / size, rng, octaves=int(rng.integers(1, 4)), freq=rng.uniform(0.8, 2.2))
    n = n / max(float(np.abs(n).max()), 1e-9)  # full range on every side, so the relief always shows
    if kind == "ridges":
        return 1.0 - 2.0 * np.abs(n)
    if kind == "bumps":
        return np.clip(n, 0, None) ** 2 * 1.2 - 0.2
    if kind == "terraces":
        levels = rng.uniform(1.5, 4)
        return np.round(n * levels) / levels
    return n


def _window(v: np.ndarray, power: float) -> np.ndarray:
    """1 - |2v - 1|^power: exactly 0 at v = 0 and 1 (creases stay shut), near 1 inside."""
    return 1.0 - np.abs(2.0 * v - 1.0) ** power


def displaced_box(extents: tuple[float, float, float], rng: np.random.Generator, amplitude: float,
                  cells: int = 16) -> Geom:
    """Box of `extents` centred at the origin, each face a `cells` x `cells` grid displaced along its normal by its
    own height field (zero on the edges, so the welded box stays closed). UVs: [0, 1]^2 per face.

    `amplitude` (object units) should stay at most min(extents) / 8 so that neighbouring faces never cross (the
    edge window's slope is 2 p / side for power p <= 3, and the field is in [-1, 1]).
    """
    h = np.asarray(extents, dtype=np.float64) / 2
    s, t = np.meshgrid(np.linspace(0, 1, cells + 1), np.linspace(0, 1, cells + 1), indexing="ij")
    s, t = s.ravel(), t.ravel()
    grid = _grid_faces(cells + 1, cells + 1)
    geoms = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            p = np.zeros((len(s), 3))
            p[:, axis] = sign * h[axis]
            p[:, u_ax], p[:, v_ax] = (2 * s - 1) * h[u_ax], (2 * t - 1) * h[v_ax]
            faces = grid
            tri = p[faces[0]]
            if np.cross(tri[1] - tri[0], tri[2] - tri[0])[axis] * sign < 0:  # face outwards
                faces = grid[:, ::-1]
            power = float(rng.choice([2.0, 3.0]))
            bump = amplitude * _window(s, power) * _window(t, power) * height_field(p, rng, float(h.max()))
            p[:, axis] += sign * bump
            geoms.append(Geom(p, np.ascontiguousarray(faces), np.stack([s, t], 1)))
    return merge(geoms)


def _profile_normals(piece: np.ndarray) -> np.ndarray:
    """Outward 2D normals (r, y) of a profile piece [P, 2]: the right-hand side of the walking direction."""
    d = np.gradient(piece, axis=0)
    n = np.stack([d[:, 1], -d[:, 0]], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    pole = np.abs(piece[:, 0]) < 1e-9  # on the axis the normal is +-y, or the pole's copies would split apart
    n[pole] = np.c_[np.zeros(pole.sum()), np.sign(n[pole, 1])]
    return n


def displaced_revolve(pieces: list[np.ndarray], rng: np.random.Generator, amplitude: float, size: float,
                      segments: int = 48, closed: bool = False, creased: bool = True) -> Geom:
    """Surface of revolution about y whose profile `pieces` (each [P_i, 2] (r, y), consecutive pieces meeting at
    creases) are each displaced along the surface normal by their own height field.

    Args:
        creased: zero displacement at each piece's ends (keeps creases and poles shut); False for one smooth
            piece (sphere, torus), displaced everywhere.
    """
    prof = np.concatenate(pieces)
    normals = np.concatenate([_profile_normals(p) for p in pieces])
    ids = np.concatenate([np.full(len(p), i) for i, p in enumerate(pieces)])
    weight = np.concatenate([_window(np.linspace(0, 1, len(p)), float(rng.choice([2.0, 4.0]))) if creased
                             else np.ones(len(p)) for p in pieces])
    g = revolve(prof, segments, closed=closed)
    rows = len(prof) + int(closed)
    theta = np.linspace(0.0, 2 * np.pi, segments + 1)
    if closed:  # revolve repeats the first profile point at the end
        normals, ids, weight = (np.concatenate([a, a[:1]]) for a in (normals, ids, weight))
    verts = g.vertices.reshape(rows, segments + 1, 3).copy()
    n3 = np.stack([normals[:, :1] * np.sin(theta), np.broadcast_to(normals[:, 1:], (rows, segments + 1)),
                   normals[:, :1] * np.cos(theta)], -1)  # (rows, segments + 1, 3)
    for i in range(len(pieces)):
        sel = ids == i
        field = height_field(verts[sel].reshape(-1, 3), rng, size).reshape(int(sel.sum()), segments + 1)
        verts[sel] += (amplitude * weight[sel, None] * field)[..., None] * n3[sel]
    return Geom(verts.reshape(-1, 3), g.faces, g.uv)


def _line(a: tuple[float, float], b: tuple[float, float], n: int) -> np.ndarray:
    return np.linspace(a, b, n)


def displaced_primitive(kind: Primitive, size: float, rng: np.random.Generator, amplitude: float) -> Geom:
    """A primitive of about `size` (object units) centred near the origin, its sides displaced by height fields
    of `amplitude` (a fraction of `size`)."""
    amp = amplitude * size
    if kind == "box":
        ext = size * rng.uniform(0.45, 1.0, 3)
        return displaced_box(tuple(ext), rng, min(amp, 0.12 * float(ext.min())))
    if kind == "sphere":
        a = np.linspace(-np.pi / 2, np.pi / 2, 33)
        r = size / 2
        return displaced_revolve([np.stack([r * np.cos(a), r * np.sin(a)], 1)], rng, amp, size, creased=False)
    if kind == "torus":
        major = size * rng.uniform(0.25, 0.4)
        minor = major * rng.uniform(0.2, 0.5)
        a = np.linspace(-np.pi / 2, 3 * np.pi / 2, 24, endpoint=False)
        prof = np.stack([major + minor * np.cos(a), minor * np.sin(a)], 1)
        return displaced_revolve([prof], rng, min(amp, 0.4 * minor), size, closed=True, creased=False)
    r, height = size * rng.uniform(0.25, 0.5), size * rng.uniform(0.5, 1.0)
    amp = min(amp, 0.15 * r)
    if kind == "cylinder":
        pieces = [_line((0, 0), (r, 0), 9), _line((r, 0), (r, height), 17), _line((r, height), (0, height), 9)]
    else:  # cone
        pieces = [_line((0, 0), (r, 0), 9), _line((r, 0), (0, height), 21)]
    return translate(displaced_revolve(pieces, rng, amp, size), (0, -height / 2, 0))


def random_rotation(g: Geom, rng: np.random.Generator) -> Geom:
    """`g` turned by random angles about x, y and z (in that order)."""
    for axis in ("x", "y", "z"):
        g = rotate(g, axis, rng.uniform(0, 2 * np.pi))
    return g


def random_material(rng: np.random.Generator) -> PBRMaterial:
    """Mostly `any_surface`, sometimes a decal, rubber, brick or glass."""
    roll = rng.uniform()
    if roll < 0.8:
        return M.any_surface(rng)
    return (M.decal, M.rubber, M.brick, M.glass)[int(rng.integers(4))](rng)


# ------------------------------------------------------------------------------------------- primitive_stack
def primitive_stack(rng: np.random.Generator) -> list[Part]:
    """2-6 random primitives (box, cylinder, sphere, cone, torus) with height-field sides, randomly rotated,
    each stacked onto a random surface point of an earlier one and pushed in so that they touch or overlap."""
    parts: list[Part] = []
    material = random_material(rng)
    for i in range(int(rng.integers(2, 7))):
        kind = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
        size = rng.uniform(0.35, 1.0)
        g = random_rotation(displaced_primitive(kind, size, rng, rng.uniform(0.05, 0.15)), rng)
        if parts:
            anchor = parts[int(rng.integers(len(parts)))].geom.vertices
            centre = (anchor.min(0) + anchor.max(0)) / 2
            target = anchor[int(rng.integers(len(anchor)))]
            out = target - centre
            out /= max(float(np.linalg.norm(out)), 1e-9)
            contact = g.vertices[int(np.argmin(g.vertices @ out))]  # the new part's point furthest towards -out
            g = translate(g, target - contact - out * size * rng.uniform(0.05, 0.35))
        if i and rng.uniform() < 0.7:
            material = random_material(rng)
        parts.append(Part(f"{kind}{i}", g, material))
    return parts


# ------------------------------------------------------------------------------------------- cut_block
def _manifold() -> object:
    """The manifold3d module (a core dependency, imported on use so that the classic families never need it)."""
    try:
        import manifold3d
    except ImportError as err:
        raise InputError("the cut_block family needs manifold3d: pip install manifold3d "
                         "(or the wheel in .whl/ on machines without network)") from err
    return manifold3d


def weld(g: Geom) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ~1e-9 (seams: sin(2 pi) is not 0): (vertices [V, 3] float64, faces [F, 3])
    without degenerate faces."""
    _, first, inverse = np.unique(np.round(g.vertices, 9), axis=0, return_index=True, return_inverse=True)
    verts = g.vertices[first]
    faces = inverse.reshape(-1)[g.faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return verts, faces[keep]


def solid(g: Geom) -> object:
    """A closed `Geom` (seams welded by position) as a `manifold3d.Manifold`; raises if it is not a manifold."""
    m3d = _manifold()
    verts, faces = weld(g)
    result = m3d.Manifold(m3d.Mesh64(vert_properties=verts, tri_verts=faces.astype(np.uint64)))
    if result.status() != m3d.Error.NoError:
        raise ValueError(f"not a closed manifold mesh: {result.status()}")
    return result


def to_geom(shape: object) -> Geom:
    """A `Manifold` as a `Geom` with box-projected UVs (`project_uv`)."""
    mesh = shape.to_mesh64()
    verts = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
    faces = np.asarray(mesh.tri_verts, dtype=np.int64)
    return project_uv(Geom(verts, faces, np.zeros((len(verts), 2))), "box")


def _cutter(rng: np.random.Generator, ext: np.ndarray, kind: str | None = None) -> Geom:
    """One cutter for a block of extents `ext` [3] centred at the origin: a through hole, a slot, a corner or
    edge notch, or a blind pocket (`kind`, None: random)."""
    kind = kind or str(rng.choice(["hole", "hole", "slot", "notch", "pocket"]))
    axis = int(rng.integers(3))
    others = [a for a in range(3) if a != axis]
    spot = np.zeros(3)
    spot[others] = rng.uniform(-0.3, 0.3, 2) * ext[others]
    length = 1.5 * float(ext.max())
    if kind in ("hole", "pocket"):
        r = rng.uniform(0.06, 0.2) * float(ext[others].min())
        g = translate(cylinder_geom(r, length), (0, -length / 2, 0))
        if kind == "pocket":  # a blind hole from one face, to a random depth
            g = translate(g, (0, length / 2 + ext[axis] * (0.5 - rng.uniform(0.25, 0.6)), 0))
        g = _along(g, axis)
    elif kind == "slot":
        size = np.full(3, length)
        size[others[0]] = rng.uniform(0.05, 0.15) * ext[others[0]]
        size[others[1]] = rng.uniform(0.3, 0.7) * ext[others[1]]
        g = box(tuple(size))
    else:  # notch: a box over an edge or a corner
        size = ext * rng.uniform(0.2, 0.45, 3)
        if rng.uniform() < 0.5:
            size[axis] = length
        corner = np.sign(rng.uniform(-1, 1, 3)) * ext / 2
        corner[axis] = 0.0 if size[axis] == length else corner[axis]
        spot = corner
        g = box(tuple(size))
    return translate(g, spot)


def _along(g: Geom, axis: int) -> Geom:
    """A y-axis shape turned so that its axis is `axis` (0 x, 1 y, 2 z)."""
    if axis == 0:
        return rotate(g, "z", -np.pi / 2)
    return rotate(g, "x", np.pi / 2) if axis == 2 else g


def block_and_cutters(rng: np.random.Generator) -> tuple[object, list[object], np.ndarray]:
    """The uncut solid (a box, maybe height-fielded, a cylinder or a sphere, maybe with a second primitive fused
    on), the cutters to subtract (holes, slots, notches, pockets; or a hollow with an opening), and the base
    primitive's extents [3]. All `manifold3d.Manifold`s in object units."""
    kind = str(rng.choice(["box", "box", "displaced_box", "cylinder", "sphere"]))
    ext = rng.uniform(0.5, 1.0, 3)
    if kind == "box":
        base = box(tuple(ext))
    elif kind == "displaced_box":
        base = displaced_box(tuple(ext), rng, rng.uniform(0.02, 0.08) * float(ext.min()), cells=12)
    elif kind == "cylinder":
        ext[2] = ext[0]
        base = _along(translate(revolve(np.array([(0, 0), (ext[0] / 2, 0), (ext[0] / 2, 0), (ext[0] / 2, ext[1]),
                                                  (ext[0] / 2, ext[1]), (0, ext[1])]), 48), (0, -ext[1] / 2, 0)),
                      int(rng.integers(3)))
        ext = base.vertices.max(0) - base.vertices.min(0)
    else:
        ext = np.full(3, ext[0])
        base = sphere(ext[0] / 2, 48, 24)
    shape = solid(base)
    if rng.uniform() < 0.35:  # a second primitive fused on top: a boss or a cap
        r = rng.uniform(0.15, 0.35) * float(min(ext[0], ext[2]))
        second = cylinder_geom(r, rng.uniform(0.2, 0.5) * ext[1]) if rng.uniform() < 0.6 else sphere(r, 32, 16)
        shape = shape + solid(translate(second, (0, ext[1] * 0.4, 0)))
    cutters = []
    if rng.uniform() < 0.3:  # hollow it out and open it on one side
        wall = rng.uniform(0.06, 0.15) * float(ext.min())
        inner = base.vertices * ((ext - 2 * wall) / ext)
        cutters.append(solid(Geom(inner, base.faces, base.uv)))
        cutters.append(solid(_cutter(rng, ext, str(rng.choice(["hole", "slot"])))))
    for _ in range(int(rng.integers(1, 5))):
        cutters.append(solid(_cutter(rng, ext)))
    return shape, cutters, ext


def cylinder_geom(radius: float, height: float) -> Geom:
    """Capped cylinder from y = 0 to `height` (welds into a closed manifold)."""
    return revolve(np.array([(0, 0), (radius, 0), (radius, 0), (radius, height), (radius, height), (0, height)]), 40)


def cut_block(rng: np.random.Generator) -> list[Part]:
    """A block (box, height-fielded box, cylinder or sphere, sometimes fused with a second primitive) with boolean
    cutters subtracted: through holes, slots, edge/corner notches, blind pockets, or a hollow with an opening.
    UVs are box projections of the result. Sometimes a peg of another material passes through a hole of its own."""
    shape, cutters, ext = block_and_cutters(rng)
    for c in cutters:
        shape = shape - c
    parts: list[Part] = []
    if rng.uniform() < 0.3:  # a peg of another material through a hole of its own
        axis = int(rng.integers(3))
        others = [a for a in range(3) if a != axis]
        spot = np.zeros(3)
        spot[others] = rng.uniform(-0.25, 0.25, 2) * ext[others]
        hole_r = rng.uniform(0.08, 0.16) * float(ext[others].min())
        length = 1.5 * float(ext.max())
        shape = shape - solid(translate(_along(translate(cylinder_geom(hole_r, length), (0, -length / 2, 0)), axis),
                                        spot))
        end = np.zeros(3)
        end[axis] = 0.65 * float(ext.max())
        parts.append(Part("peg", rod(spot - end, spot + end, 0.75 * hole_r, 16), random_material(rng)))
    return [Part("block", to_geom(shape), random_material(rng))] + parts


# ------------------------------------------------------------------------------------------- wireframe
def _smooth_curve(points: np.ndarray, samples: int) -> np.ndarray:
    """Catmull-Rom spline through `points` [K, 3] -> [samples, 3]."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, len(points) - 1, samples)
    i = np.minimum(t.astype(np.int64), len(points) - 2)
    f = (t - i)[:, None]
    p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
    return 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2 + (3 * p1 - p0 - 3 * p2 + p3) * f**3)


@dataclass(frozen=True)
class Ring:
    """A circular wire: centre [3], radius of the circle, and rotations (radians) about x, y, z in that order of a
    circle lying in the xz plane."""

    centre: np.ndarray
    radius: float
    angles: tuple[float, float, float]

    def place(self, g: Geom) -> Geom:
        """`g`, built around the y axis at the origin, turned and moved like this ring."""
        for axis, angle in zip(("x", "y", "z"), self.angles, strict=True):
            g = rotate(g, axis, angle)
        return translate(g, self.centre)

    def points(self, n: int = 48) -> np.ndarray:
        """[n, 3] points on the circle (the torus's own segment angles)."""
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        flat = np.stack([self.radius * np.sin(a), np.zeros(n), self.radius * np.cos(a)], 1)
        return self.place(Geom(flat, np.zeros((0, 3), np.int64), np.zeros((n, 2)))).vertices


@dataclass(frozen=True)
class WireLayout:
    """Centrelines of a wire structure in about [-0.5, 0.5]^3 (object units)."""

    kind: str
    """curves, lattice, rings, cage or helix."""
    lines: list[np.ndarray]
    """Open polylines [K_i, 3] (K = 2: a straight rod)."""
    rings: list[Ring]
    """Closed circular wires (tori)."""
    joints: list[np.ndarray]
    """Points [3] that get a ball (lattice nodes)."""

    def points(self) -> np.ndarray:
        """[P, 3] every centreline point (the layout's extent)."""
        return np.concatenate(self.lines + [r.points() for r in self.rings] + [np.zeros((0, 3))]
                              + ([np.stack(self.joints)] if self.joints else []))


def wire_layout(rng: np.random.Generator) -> WireLayout:
    """A random wire structure: smooth curves, a jittered lattice, interlocked rings, a bird cage or a helix."""
    kind = str(rng.choice(["curves", "lattice", "rings", "cage", "helix"]))
    lines: list[np.ndarray] = []
    rings: list[Ring] = []
    joints: list[np.ndarray] = []
    if kind == "curves":
        for _ in range(int(rng.integers(2, 7))):
            lines.append(_smooth_curve(rng.uniform(-0.5, 0.5, (int(rng.integers(3, 7)), 3)), 48))
    elif kind == "lattice":
        n = rng.integers(2, 5, 3)
        nodes = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, k) for k in n], indexing="ij"), -1)
        nodes += rng.normal(0, 0.04, nodes.shape)
        keep = rng.uniform(0.55, 0.95)
        for axis in range(3):
            a, b = nodes.take(range(n[axis] - 1), axis), nodes.take(range(1, n[axis]), axis)
            for p, q in zip(a.reshape(-1, 3), b.reshape(-1, 3), strict=True):
                if rng.uniform() < keep:
                    lines.append(np.stack([p, q]))
        if rng.uniform() < 0.6:
            joints = list(nodes.reshape(-1, 3))
    elif kind == "rings":  # an armillary sphere: rings of similar size turned every way
        for _ in range(int(rng.integers(2, 6))):
            rings.append(Ring(rng.normal(0, 0.05, 3), rng.uniform(0.25, 0.5), tuple(rng.uniform(0, np.pi, 3))))
    elif kind == "cage":
        radius, height = rng.uniform(0.25, 0.5), rng.uniform(0.6, 1.0)
        bulge = rng.uniform(0.0, 0.6)
        y = np.linspace(-height / 2, height / 2, 24)
        r = radius * (1 - bulge + bulge * np.cos(np.pi * y / height))
        for a in np.linspace(0, 2 * np.pi, int(rng.integers(4, 11)), endpoint=False):
            lines.append(np.stack([r * np.sin(a), y, r * np.cos(a)], 1))
        for k in np.linspace(0, len(y) - 1, int(rng.integers(2, 5))).astype(np.int64):
            rings.append(Ring(np.array([0.0, y[k], 0.0]), float(r[k]), (0.0, 0.0, 0.0)))
    else:  # helix: a spring, sometimes around a central post
        turns, radius, height = rng.uniform(2, 6), rng.uniform(0.15, 0.4), rng.uniform(0.6, 1.0)
        t = np.linspace(0, 1, int(turns * 32))
        lines.append(np.stack([radius * np.cos(2 * np.pi * turns * t), height * (t - 0.5),
                               radius * np.sin(2 * np.pi * turns * t)], 1))
        if rng.uniform() < 0.5:
            lines.append(np.array([[0, -height / 2, 0], [0, height / 2, 0]], dtype=np.float64))
    return WireLayout(kind, lines, rings, joints)


def wireframe(rng: np.random.Generator) -> list[Part]:
    """Thin wires (`wire_layout`), optionally on a small base. The wire radius is chosen after the layout so that
    it is at least `WIRE_RADIUS_MIN` once the object is normalised (joint balls up to 1.6x the wire radius)."""
    layout = wire_layout(rng)
    pts = layout.points()
    lo, hi = pts.min(0), pts.max(0)
    parts: list[Part] = []
    if rng.uniform() < 0.5:  # a small base under the wires
        foot = (hi - lo) * rng.uniform(0.7, 1.1)
        thick = max(float(hi[1] - lo[1]), 0.1) * rng.uniform(0.04, 0.1)
        base = box((foot[0], thick, foot[2])) if rng.uniform() < 0.5 else \
            translate(cylinder_geom(float(max(foot[0], foot[2])) / 2, thick), (0, -thick / 2, 0))
        centre = (lo + hi) / 2
        parts.append(Part("base", translate(base, (centre[0], lo[1] - thick / 2, centre[2])), random_material(rng)))
        lo = np.minimum(lo, parts[0].geom.vertices.min(0))
        hi = np.maximum(hi, parts[0].geom.vertices.max(0))
    extent = float((hi - lo).max())
    target = rng.uniform(WIRE_RADIUS_MIN, 2.2 * WIRE_RADIUS_MIN)
    joint = 1.6
    # `assemble` maps radius r to at least r * EXTENT / (extent + 2 * joint * r); solve that for `target`.
    r = target * extent / (EXTENT - 2 * joint * target)
    wires = [rod(p[0], p[1], r, 12) if len(p) == 2 else sweep(p, r, 12) for p in layout.lines]
    wires += [ring.place(torus(ring.radius, r, 48, 12)) for ring in layout.rings]
    wire_mat = M.metal(rng) if rng.uniform() < 0.6 else M.plastic(rng)
    if layout.kind in ("rings", "curves") and rng.uniform() < 0.5:  # each wire its own material
        parts += [Part(f"wire{i}", w, random_material(rng)) for i, w in enumerate(wires)]
    else:
        parts.append(Part("wire", merge(wires), wire_mat))
    if layout.joints:
        jr = r * rng.uniform(1.2, joint)
        parts.append(Part("wire_joints", merge([translate(sphere(jr, 12, 6), p) for p in layout.joints]),
                          M.metal(rng) if rng.uniform() < 0.5 else wire_mat))
    return parts


ZEROVERSE_FAMILIES = {"primitive_stack": primitive_stack, "cut_block": cut_block, "wireframe": wireframe}
"""Family name -> builder, the Zeroverse-style families (not in the classic `FAMILIES`)."""

__all__ = ["PRIMITIVES", "WIRE_RADIUS_MIN", "ZEROVERSE_FAMILIES", "block_and_cutters", "cut_block",
           "displaced_box", "displaced_primitive", "displaced_revolve", "height_field", "primitive_stack",
           "solid", "to_geom", "weld", "wire_layout", "wireframe", "Ring", "WireLayout"]
