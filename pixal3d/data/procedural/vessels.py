"""Lathe-profile families: mug, vase, bottle. Profiles are (radius, height) in metres-ish, y up."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

import pixal3d.data.procedural.materials as M
from pixal3d.data.procedural.parts import Part, cylinder, revolve, rotate, shell, sweep, torus, translate


def _smooth_profile(rng: np.random.Generator, height: float, radius: float, knots: int,
                    wobble: float, samples: int = 24) -> np.ndarray:
    """Random smooth outer profile [samples, 2] from the bottom rim to the top rim."""
    y = np.linspace(0, height, knots)
    r = radius * np.exp(np.cumsum(rng.normal(0, wobble, knots)))
    r = np.clip(r, radius * 0.25, radius * 2.0)
    ys = np.linspace(0, height, samples)
    return np.stack([np.clip(CubicSpline(y, r, bc_type="natural")(ys), radius * 0.2, None), ys], 1)


def _body_material(rng: np.random.Generator):
    roll = rng.uniform()
    if roll < 0.5:
        return M.ceramic(rng)
    if roll < 0.7:
        return M.decal(rng)
    return M.metal(rng) if roll < 0.85 else M.plastic(rng)


def mug(rng: np.random.Generator) -> list[Part]:
    """Thick-walled cup with a floor (concave inside) and a torus or D-shaped swept handle (a through-hole)."""
    r, h = rng.uniform(0.035, 0.06), rng.uniform(0.06, 0.12)
    rb = r * rng.uniform(0.75, 1.05)
    bulge = r * rng.uniform(-0.05, 0.12)
    prof = np.array([(0.0, 0.0), (rb, 0.0), (rb, 0.0), ((rb + r) / 2 + bulge, h / 2), (r, h)])
    body_mat = _body_material(rng)
    body = shell(prof, rng.uniform(0.003, 0.007), 48)
    handle_mat = body_mat if rng.uniform() < 0.7 else M.ceramic(rng)
    hr = rng.uniform(0.004, 0.008)
    if rng.uniform() < 0.6:
        major = h * rng.uniform(0.22, 0.35)
        ring = rotate(torus(major, hr, 40, 12), "x", np.pi / 2)  # ring in the xy plane
        handle = translate(ring, (max(r, rb) + major * 0.55, h * rng.uniform(0.45, 0.55), 0))
    else:
        x0, reach = max(r, rb) - 0.002, h * rng.uniform(0.25, 0.45)
        t = np.linspace(0, np.pi, 16)
        path = np.stack([x0 + reach * np.sin(t), h * (0.5 + 0.35 * np.cos(t)), np.zeros_like(t)], 1)
        handle = sweep(path, hr, 10)
    return [Part("body", body, body_mat), Part("handle", handle, handle_mat)]


def vase(rng: np.random.Generator) -> list[Part]:
    """Open thin-walled vase from a random smooth profile; sometimes two loop handles and a foot ring."""
    h = rng.uniform(0.15, 0.45)
    r = h * rng.uniform(0.15, 0.4)
    outer = _smooth_profile(rng, h, r, int(rng.integers(4, 7)), rng.uniform(0.1, 0.35))
    prof = np.concatenate([[(0.0, 0.0)], outer])
    mat = M.ceramic(rng) if rng.uniform() < 0.6 else (M.stone(rng) if rng.uniform() < 0.5 else M.metal(rng))
    parts = [Part("body", shell(prof, rng.uniform(0.003, 0.008), 56), mat)]
    if rng.uniform() < 0.35:
        k = int(rng.integers(len(outer) // 2, len(outer) - 2))
        rad, y = outer[k]
        major = h * rng.uniform(0.06, 0.12)
        ring = rotate(torus(major, major * 0.18, 32, 10, angle=np.pi * 1.3), "x", np.pi / 2)
        for s in (-1.0, 1.0):
            g = rotate(ring, "z", -np.pi * 0.65) if s > 0 else rotate(ring, "z", np.pi * 0.35)
            parts.append(Part(f"handle_{'lr'[int(s > 0)]}", translate(g, (s * (rad + major * 0.3), y, 0)), mat))
    if rng.uniform() < 0.4:
        foot = cylinder(outer[0, 0] * rng.uniform(0.9, 1.2), h * 0.04, 48)
        parts.append(Part("foot", translate(foot, (0, -h * 0.04, 0)), M.metal(rng) if rng.uniform() < 0.5 else mat))
    return parts


def bottle(rng: np.random.Generator) -> list[Part]:
    """Solid lathe body (wine/soda bottle or jar) with a cap and a label band carrying a decal or stripes."""
    kind = rng.choice(["wine", "soda", "jar"])
    r = rng.uniform(0.03, 0.06)
    h = r * (rng.uniform(4, 7) if kind != "jar" else rng.uniform(1.5, 2.5))
    rn = r * (rng.uniform(0.25, 0.45) if kind != "jar" else rng.uniform(0.8, 0.95))
    shoulder = h * rng.uniform(0.55, 0.75)
    neck = h * rng.uniform(1.25, 1.5)  # top of the neck (unused by jars)
    pts = [(0.0, 0.0), (r * 0.97, 0.0), (r, r * 0.05)]
    if kind == "soda":
        for y in np.linspace(r * 0.1, shoulder, 6)[1:]:
            pts += [(r * 0.94, y - shoulder * 0.06), (r, y)]
    else:
        pts.append((r, shoulder))
    if kind == "jar":
        pts += [(rn, h), (rn, h)]
        top = h
    else:
        a = np.linspace(0, np.pi / 2, 6)[1:]
        mid = (shoulder + neck) / 2
        pts += [(rn + (r - rn) * np.cos(t), shoulder + (mid - shoulder) * np.sin(t)) for t in a]
        pts += [(rn, neck)]
        top = neck
    pts.append((0.0, top))
    body_mat = M.glass(rng) if rng.uniform() < 0.5 else M.plastic(rng, pattern="plain")
    parts = [Part("body", revolve(np.array(pts), 48), body_mat)]
    cap_h = r * rng.uniform(0.15, 0.4) if kind == "jar" else rn * rng.uniform(1.0, 2.5)
    cap = cylinder(rn * 1.08, cap_h, 32)
    parts.append(Part("cap", translate(cap, (0, top - cap_h * 0.3, 0)), M.metal(rng) if rng.uniform() < 0.6 else M.plastic(rng)))
    if rng.uniform() < 0.8:
        y0 = shoulder * rng.uniform(0.2, 0.4)
        y1 = y0 + shoulder * rng.uniform(0.25, 0.5)
        band = revolve(np.array([(r * 1.004, y0), (r * 1.004, y1)]), 48)
        label = M.decal(rng) if rng.uniform() < 0.6 else M.plastic(rng, pattern=str(rng.choice(["stripes", "bands", "checks"])))
        parts.append(Part("label", band, label))
    return parts
