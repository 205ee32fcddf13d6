"""Geometric parts with real UVs: boxes, lathe/revolve profiles (cylinders, cones, spheres, tori), extrusions,
sweeps, noise-displaced blobs, and the rigid transforms that place them.

A part is a `Geom`: plain numpy arrays (vertices [V, 3] float64, faces [F, 3] int64, uv [V, 2] float64 in
[0, 1]), built at the origin in object units, y up, and moved with `translate` / `rotate` / `scale`. Seams are
duplicated vertices so that every vertex has one UV; merging vertices by position alone closes them again
(a revolved torus then has Euler number 0). UVs come from each primitive's own parametrisation (revolve:
angle x arc length; sweep: around x along; box: one [0, 1]^2 square per face); `project_uv` gives box,
cylindrical or spherical projections for any other mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from trimesh.visual.material import PBRMaterial


@dataclass(frozen=True)
class Geom:
    """One triangle mesh with per-vertex UVs."""

    vertices: np.ndarray
    """[V, 3] float64, object units, y up."""
    faces: np.ndarray
    """[F, 3] int64, counter-clockwise seen from outside."""
    uv: np.ndarray
    """[V, 2] float64 in [0, 1]; v = 0 is the bottom row of the texture (glTF flips it on export)."""


# ------------------------------------------------------------------------------------------- transforms
def translate(g: Geom, offset: np.ndarray | tuple[float, float, float]) -> Geom:
    """Move `g` by `offset` [3]."""
    return Geom(g.vertices + np.asarray(offset, dtype=np.float64), g.faces, g.uv)


def scale(g: Geom, factors: float | tuple[float, float, float]) -> Geom:
    """Scale `g` about the origin by a scalar or per-axis factors; negative products flip the winding back."""
    f = np.broadcast_to(np.asarray(factors, dtype=np.float64), (3,))
    faces = g.faces[:, ::-1] if np.prod(f) < 0 else g.faces
    return Geom(g.vertices * f, np.ascontiguousarray(faces), g.uv)


def rotation(axis: Literal["x", "y", "z"], angle: float) -> np.ndarray:
    """[3, 3] right-handed rotation by `angle` radians about a coordinate axis."""
    c, s = np.cos(angle), np.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rotate(g: Geom, axis: Literal["x", "y", "z"], angle: float) -> Geom:
    """Rotate `g` about the origin by `angle` radians around a coordinate axis."""
    return Geom(g.vertices @ rotation(axis, angle).T, g.faces, g.uv)


def merge(geoms: list[Geom]) -> Geom:
    """Concatenate several geoms into one (no vertex welding)."""
    offsets = np.cumsum([0] + [len(g.vertices) for g in geoms[:-1]])
    return Geom(
        np.concatenate([g.vertices for g in geoms]),
        np.concatenate([g.faces + o for g, o in zip(geoms, offsets, strict=True)]),
        np.concatenate([g.uv for g in geoms]),
    )


def _drop_degenerate(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> Geom:
    tri = vertices[faces]
    area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return Geom(vertices, faces[area2 > 1e-12], uv)


def _grid_faces(rows: int, cols: int) -> np.ndarray:
    """Two triangles per cell of a (rows x cols) vertex grid stored row-major: [2 (rows-1)(cols-1), 3]."""
    i, j = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (i * cols + j).ravel()
    b, c, d = a + cols, a + cols + 1, a + 1
    return np.concatenate([np.stack([a, d, c], 1), np.stack([a, c, b], 1)]).astype(np.int64)


# ------------------------------------------------------------------------------------------- primitives
def box(extents: tuple[float, float, float]) -> Geom:
    """Axis-aligned box centred at the origin; each face carries the whole [0, 1]^2 UV square."""
    h = np.asarray(extents, dtype=np.float64) / 2
    verts, uvs, faces = [], [], []
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u_ax, v_ax = [a for a in range(3) if a != axis]
            quad = np.zeros((4, 3))
            quad[:, axis] = sign * h[axis]
            quad[:, u_ax] = (corners[:, 0] * 2 - 1) * h[u_ax]
            quad[:, v_ax] = (corners[:, 1] * 2 - 1) * h[v_ax]
            n = len(verts) * 4
            tris = [[n, n + 1, n + 2], [n, n + 2, n + 3]]
            if np.cross(quad[1] - quad[0], quad[2] - quad[0])[axis] * sign < 0:  # make it face outwards
                tris = [t[::-1] for t in tris]
            verts.append(quad)
            uvs.append(corners)
            faces += tris
    return Geom(np.concatenate(verts), np.array(faces, dtype=np.int64), np.concatenate(uvs))


def revolve(profile: np.ndarray, segments: int = 32, closed: bool = False, angle: float = 2 * np.pi) -> Geom:
    """Lathe: rotate a profile of (radius, height) points about the y axis.

    Args:
        profile: [P, 2] (r >= 0, y), ordered so that the surface's outside is on the right when walking
            along it with r pointing right and y up (bottom-to-top along the outer wall).
        segments: number of angular steps.
        closed: also join the last profile point back to the first (tori, rings).
        angle: sweep angle in radians (< 2 pi gives an open sector).

    Returns:
        The surface; u = angle / sweep, v = arc length along the profile / total.
    """
    prof = np.asarray(profile, dtype=np.float64)
    if closed:
        prof = np.concatenate([prof, prof[:1]])
    seg_len = np.linalg.norm(np.diff(prof, axis=0), axis=1)
    v = np.concatenate([[0.0], np.cumsum(seg_len)]) / max(seg_len.sum(), 1e-12)
    theta = np.linspace(0.0, angle, segments + 1)
    r, y = prof[:, 0:1], prof[:, 1:2]
    # theta runs from +z towards +x so that the walking direction x theta is the outward normal
    verts = np.stack([r * np.sin(theta), np.broadcast_to(y, r.shape[:1] + theta.shape), r * np.cos(theta)], -1)
    uu, vv = np.meshgrid(theta / angle, v)
    faces = _grid_faces(len(prof), segments + 1)
    return _drop_degenerate(verts.reshape(-1, 3), faces, np.stack([uu, vv], -1).reshape(-1, 2))


def cylinder(radius: float, height: float, segments: int = 32, radius_top: float | None = None) -> Geom:
    """Capped cylinder (or truncated cone with `radius_top`) from y = 0 to y = height."""
    rt = radius if radius_top is None else radius_top
    prof = [(0, 0), (radius, 0), (radius, 0), (rt, height), (rt, height), (0, height)]
    return revolve(np.array(prof), segments)


def cone(radius: float, height: float, segments: int = 32) -> Geom:
    """Capped cone, base at y = 0, apex at y = height."""
    return revolve(np.array([(0, 0), (radius, 0), (radius, 0), (0, height)]), segments)


def sphere(radius: float, segments: int = 32, rings: int = 16) -> Geom:
    """UV sphere centred at the origin."""
    a = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    return revolve(np.stack([radius * np.cos(a), radius * np.sin(a)], 1), segments)


def torus(major: float, minor: float, segments: int = 32, sides: int = 12, angle: float = 2 * np.pi) -> Geom:
    """Torus around the y axis (genus 1 once the seams are welded); `angle` < 2 pi gives an open arc."""
    a = np.linspace(-np.pi / 2, 3 * np.pi / 2, sides, endpoint=False)
    prof = np.stack([major + minor * np.cos(a), minor * np.sin(a)], 1)
    return revolve(prof, segments, closed=True, angle=angle)


# ------------------------------------------------------------------------------------------- extrusions
def _triangulate(poly: np.ndarray) -> np.ndarray:
    """Ear-clipping triangulation of a simple counter-clockwise polygon [N, 2] -> [N-2, 3] indices."""
    idx = list(range(len(poly)))
    tris: list[list[int]] = []

    def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    guard = 0
    while len(idx) > 3 and guard < 10 * len(poly) ** 2:
        guard += 1
        n = len(idx)
        for k in range(n):
            i0, i1, i2 = idx[k - 1], idx[k], idx[(k + 1) % n]
            a, b, c = poly[i0], poly[i1], poly[i2]
            if cross(a, b, c) <= 1e-12:
                continue
            others = [poly[j] for j in idx if j not in (i0, i1, i2)]
            if any(cross(a, b, p) >= 0 and cross(b, c, p) >= 0 and cross(c, a, p) >= 0 for p in others):
                continue
            tris.append([i0, i1, i2])
            idx.pop(k)
            break
        else:  # numerically stuck (collinear run): clip anyway
            tris.append([idx[-1], idx[0], idx[1]])
            idx.pop(0)
    tris.append(idx[:3])
    return np.array(tris, dtype=np.int64)


def _signed_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _walls(loop: np.ndarray, depth: float, outward: bool) -> Geom:
    """Side walls of a closed 2D loop extruded from z = 0 to z = depth, one quad per edge (crisp edges)."""
    a, b = loop, np.roll(loop, -1, axis=0)
    n = len(loop)
    seg = np.linalg.norm(b - a, axis=1)
    u0 = np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / seg.sum()
    u1 = u0 + seg / seg.sum()
    z0, z1 = np.zeros(n), np.full(n, depth)
    verts = np.stack(
        [np.c_[a, z0], np.c_[b, z0], np.c_[b, z1], np.c_[a, z1]], axis=1
    ).reshape(-1, 3)
    uv = np.stack([np.c_[u0, z0], np.c_[u1, z0], np.c_[u1, z0 + 1], np.c_[u0, z0 + 1]], axis=1).reshape(-1, 2)
    base = np.arange(n)[:, None] * 4
    faces = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    if not outward:
        faces = faces[:, ::-1]
    return Geom(verts, np.ascontiguousarray(faces.astype(np.int64)), uv)


def _planar_uv(xy: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (xy - lo) / np.maximum(hi - lo, 1e-12)


def extrude(polygon: np.ndarray, depth: float) -> Geom:
    """Extrude a simple 2D polygon [N, 2] (any orientation) in the xy plane from z = 0 to z = depth."""
    poly = np.asarray(polygon, dtype=np.float64)
    if _signed_area(poly) < 0:
        poly = poly[::-1].copy()
    tri = _triangulate(poly)
    lo, hi = poly.min(0), poly.max(0)
    uv = _planar_uv(poly, lo, hi)
    n = len(poly)
    bottom = Geom(np.c_[poly, np.zeros(n)], np.ascontiguousarray(tri[:, ::-1]), uv)
    top = Geom(np.c_[poly, np.full(n, depth)], tri, uv)
    return merge([bottom, top, _walls(poly, depth, outward=True)])


def extrude_ring(outer: np.ndarray, inner: np.ndarray, depth: float) -> Geom:
    """Extrude a plate with one hole (genus 1): `outer` and `inner` are loops [N, 2] with the same N,
    point k of one facing point k of the other (e.g. both sampled at the same angles)."""
    out = np.asarray(outer, dtype=np.float64)
    inn = np.asarray(inner, dtype=np.float64)
    if _signed_area(out) < 0:
        out, inn = out[::-1].copy(), inn[::-1].copy()
    n = len(out)
    lo, hi = out.min(0), out.max(0)
    loops = np.concatenate([out, inn])
    uv = _planar_uv(loops, lo, hi)
    k = np.arange(n)
    k1 = (k + 1) % n
    cap = np.concatenate([np.stack([k, k1, n + k1], 1), np.stack([k, n + k1, n + k], 1)])
    bottom = Geom(np.c_[loops, np.zeros(2 * n)], np.ascontiguousarray(cap[:, ::-1]), uv)
    top = Geom(np.c_[loops, np.full(2 * n, depth)], cap, uv)
    return merge([bottom, top, _walls(out, depth, outward=True), _walls(inn, depth, outward=False)])


# ------------------------------------------------------------------------------------------- sweeps, blobs
def sweep(path: np.ndarray, radius: float | np.ndarray, sides: int = 12, caps: bool = True) -> Geom:
    """Tube of circular cross-section swept along a polyline (parallel-transport frames).

    Args:
        path: [K, 3] points, K >= 2.
        radius: scalar or [K] radius per path point.
        sides: vertices around the tube.
        caps: close both ends with flat fans.
    """
    p = np.asarray(path, dtype=np.float64)
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(p),))
    t = np.gradient(p, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(t[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    normal = np.cross(t[0], ref)
    normal /= np.linalg.norm(normal)
    normals = [normal]
    for k in range(1, len(p)):  # parallel transport: remove the component along the new tangent
        n = normals[-1] - t[k] * np.dot(normals[-1], t[k])
        normals.append(n / np.linalg.norm(n))
    nrm = np.array(normals)
    bin_ = np.cross(t, nrm)
    a = np.linspace(0.0, 2 * np.pi, sides + 1)
    ring = np.cos(a)[None, :, None] * nrm[:, None] + np.sin(a)[None, :, None] * bin_[:, None]
    verts = (p[:, None] + rad[:, None, None] * ring).reshape(-1, 3)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    uu, vv = np.meshgrid(a / (2 * np.pi), arc / max(arc[-1], 1e-12))
    tube = Geom(verts, _grid_faces(len(p), sides + 1), np.stack([uu, vv], -1).reshape(-1, 2))
    if not caps:
        return tube
    parts = [tube]
    for end, flip in ((0, True), (len(p) - 1, False)):
        rim = p[end] + rad[end] * ring[end, :-1]
        v = np.concatenate([p[end : end + 1], rim])
        k = np.arange(sides)
        f = np.stack([np.zeros(sides, np.int64), 1 + k, 1 + (k + 1) % sides], 1)
        cap_uv = 0.5 + 0.5 * np.c_[np.r_[0.0, np.cos(a[:-1])], np.r_[0.0, np.sin(a[:-1])]]
        parts.append(Geom(v, np.ascontiguousarray(f[:, ::-1] if flip else f), cap_uv))
    return merge(parts)


def rod(p0: np.ndarray | tuple, p1: np.ndarray | tuple, radius: float, sides: int = 12) -> Geom:
    """Straight capped bar from `p0` to `p1` [3]; `sides=4` gives a square section."""
    return sweep(np.array([p0, p1], dtype=np.float64), radius, sides=sides)


def shell(profile: np.ndarray, thickness: float, segments: int = 40) -> Geom:
    """Thin-walled surface of revolution: `profile` [P, 2] (r, y) walks the outside, the inside is the same
    curve shifted inwards by `thickness` (radially) and walked back; open profiles give a hollow with a rim."""
    prof = np.asarray(profile, dtype=np.float64)
    inner = prof[::-1].copy()
    inner[:, 0] = np.maximum(inner[:, 0] - thickness, 0.0)
    on_axis = prof[0, 0] == 0.0
    if on_axis:  # a floor: the inside stops `thickness` above the outside bottom
        inner[:, 1] = np.maximum(inner[:, 1], prof[0, 1] + thickness)
        inner[-1, 0] = 0.0
    return revolve(np.concatenate([prof, inner]), segments, closed=not on_axis)


def smooth_noise(points: np.ndarray, rng: np.random.Generator, octaves: int = 3, freq: float = 2.0) -> np.ndarray:
    """Smooth 3D noise in about [-1, 1] at `points` [N, 3]: a sum of random-direction sinusoids per octave."""
    out = np.zeros(len(points))
    for o in range(octaves):
        dirs = rng.normal(size=(6, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        phase = rng.uniform(0, 2 * np.pi, 6)
        out += np.sin(points @ dirs.T * (freq * 2**o * np.pi) + phase).sum(1) / (6**0.5 * 2**o)
    return out / 1.5


def blob(radius: float, amplitude: float, rng: np.random.Generator, freq: float = 1.0,
         segments: int = 40, rings: int = 24) -> Geom:
    """Noise-displaced sphere (fruit, rocks): radius * (1 + amplitude * noise) along the sphere normal."""
    g = sphere(1.0, segments, rings)
    d = 1.0 + amplitude * smooth_noise(g.vertices, rng, freq=freq)
    return Geom(g.vertices * (radius * d)[:, None], g.faces, g.uv)


# ------------------------------------------------------------------------------------------- projections
def project_uv(g: Geom, mode: Literal["box", "cylinder", "sphere"]) -> Geom:
    """Replace the UVs of `g` by a projection over its bounding box.

    `box` unwelds every face and projects it along its dominant normal axis (triplanar); `cylinder` uses the
    angle about y and the height; `sphere` uses longitude and latitude about the bounding-box centre.
    """
    v = g.vertices
    lo, hi = v.min(0), v.max(0)
    ext = np.maximum(hi - lo, 1e-12)
    if mode == "box":
        tri = v[g.faces]  # (F, 3, 3)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        axis = np.abs(normal).argmax(1)
        keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # (F, 2) the two axes spanning each face's plane
        local = (tri - lo) / ext
        uv = np.take_along_axis(local, np.broadcast_to(keep[:, None, :], (len(tri), 3, 2)), axis=2)
        faces = np.arange(3 * len(tri), dtype=np.int64).reshape(-1, 3)
        return Geom(tri.reshape(-1, 3), faces, uv.reshape(-1, 2))
    c = (lo + hi) / 2
    ang = (np.arctan2(v[:, 0] - c[0], v[:, 2] - c[2]) / (2 * np.pi)) % 1.0
    if mode == "cylinder":
        return Geom(v, g.faces, np.stack([ang, (v[:, 1] - lo[1]) / ext[1]], 1))
    d = v - c
    lat = np.arcsin(np.clip(d[:, 1] / np.maximum(np.linalg.norm(d, axis=1), 1e-12), -1, 1))
    return Geom(v, g.faces, np.stack([ang, lat / np.pi + 0.5], 1))


# ------------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Part:
    """One named, textured piece of an object: geometry with UVs and its glTF PBR material."""

    name: str
    geom: Geom
    material: PBRMaterial
