"""Organic families: fruit, mushroom, potted_plant. Noise-displaced lathe shapes and swept stems; y up."""

from __future__ import annotations

import numpy as np

import pixal3d.data.procedural.materials as M
from pixal3d.data.procedural.parts import (
    Geom,
    Part,
    blob,
    cylinder,
    extrude,
    merge,
    revolve,
    rotate,
    scale,
    shell,
    smooth_noise,
    sweep,
    translate,
)


def _displace(g: Geom, amplitude: float, rng: np.random.Generator, freq: float = 1.5) -> Geom:
    """Push vertices away from the y axis by `amplitude * noise` (relative to their radius): lumpy lathes."""
    n = smooth_noise(g.vertices / max(np.abs(g.vertices).max(), 1e-9), rng, freq=freq)
    k = 1.0 + amplitude * n
    return Geom(g.vertices * np.stack([k, np.ones_like(k), k], 1), g.faces, g.uv)


def _leaf(rng: np.random.Generator, length: float) -> Geom:
    """Thin pointed leaf outline extruded by a small thickness, lying along +x in the xz plane."""
    t = np.linspace(0, np.pi, 10)
    w = length * rng.uniform(0.2, 0.4)
    upper = np.stack([length * (1 - np.cos(t)) / 2, w / 2 * np.sin(t) ** rng.uniform(0.7, 1.2)], 1)
    outline = np.concatenate([upper, upper[-2:0:-1] * [1, -1]])
    return rotate(extrude(outline, length * 0.02), "x", np.pi / 2)


def _stem(rng: np.random.Generator, base: np.ndarray, length: float, radius: float) -> Geom:
    bend = rng.normal(0, 0.3, 2) * length
    t = np.linspace(0, 1, 8)[:, None]
    path = base + np.c_[bend[0] * t**2, length * t, bend[1] * t**2]
    return sweep(path, radius * (1 - 0.4 * t[:, 0]), 8)


def fruit(rng: np.random.Generator) -> list[Part]:
    """Apple, pear or orange (lumpy lathe / blob with a stem and maybe a leaf), a banana, or cherries."""
    kind = rng.choice(["apple", "pear", "orange", "banana", "cherries"])
    green = M.make_material("stem", np.ones((8, 8, 3)) * M.hsv(rng.uniform(0.08, 0.3), 0.6, 0.35), 0.0, 0.7)
    if kind == "banana":
        a = np.linspace(-0.9, 0.9, 20)
        R = rng.uniform(0.12, 0.2)
        path = np.stack([R * np.sin(a), -R * np.cos(a), np.zeros_like(a)], 1)
        radius = R * 0.18 * np.clip(np.sin((a + 0.95) / 1.9 * np.pi) ** 0.5, 0.15, 1)
        body = sweep(path, radius, int(rng.choice([5, 6])))
        return [Part("banana", body, M.skin(rng, rng.uniform(0.12, 0.17)))]
    if kind == "cherries":
        parts = []
        r = rng.uniform(0.012, 0.02)
        top = np.array([0.0, r * 6, 0.0])
        for i, s in enumerate((-1.0, 1.0)):
            c = np.array([s * r * 1.3, 0, rng.uniform(-0.5, 0.5) * r])
            parts.append(Part(f"cherry{i}", translate(blob(r, 0.05, rng), c), M.skin(rng, rng.uniform(0.95, 1.02))))
            path = np.array([c + [0, r * 0.8, 0], (c + top) / 2 + [s * r * 0.6, r * 0.5, 0], top])
            parts.append(Part(f"stem{i}", sweep(path, r * 0.1, 6), green))
        return parts
    r = rng.uniform(0.035, 0.06)
    if kind == "orange":
        body = blob(r, rng.uniform(0.01, 0.04), rng, freq=2.0)
        body = Geom(body.vertices * [1, rng.uniform(0.85, 1.0), 1], body.faces, body.uv)
        mat = M.skin(rng, rng.uniform(0.06, 0.12))
        return [Part("fruit", translate(body, (0, r, 0)), mat), Part("stem", _stem(rng, np.array([0, 1.9 * r, 0]), r * 0.1, r * 0.08), green)]
    a = np.linspace(0, np.pi, 16)
    if kind == "apple":
        rad = r * np.sin(a) * rng.uniform(1.05, 1.2)
        y = -r * np.cos(a) * rng.uniform(0.75, 0.9)
        y[0] += r * 0.12
        y[-1] -= r * 0.15  # dimples where stem and calyx sit
    else:  # pear: a wide bottom bulb narrowing into a neck
        knots_y = np.array([0.0, 0.08, 0.3, 0.55, 0.75, 0.92, 1.0]) * r * rng.uniform(2.4, 3.2)
        knots_r = np.array([0.0, 0.75, 1.0, 0.72, 0.45, 0.35, 0.0]) * r
        y = np.interp(np.linspace(0, 1, 16) ** 1.1, np.linspace(0, 1, 7), knots_y)
        rad = np.interp(y, knots_y, knots_r)
    prof = np.stack([rad, y - y.min()], 1)
    body = _displace(revolve(prof, 40), rng.uniform(0.02, 0.06), rng)
    hue = rng.choice([rng.uniform(0.97, 1.03), rng.uniform(0.14, 0.3)])
    top = float(prof[:, 1].max())
    parts = [Part("fruit", body, M.skin(rng, hue)), Part("stem", _stem(rng, np.array([0, top - r * 0.2, 0]), r * 0.4, r * 0.05), green)]
    if rng.uniform() < 0.6:
        leaf = translate(rotate(_leaf(rng, r * rng.uniform(0.8, 1.4)), "z", rng.uniform(0.1, 0.6)), (0, top, 0))
        parts.append(Part("leaf", rotate(leaf, "y", rng.uniform(0, 2 * np.pi)), M.skin(rng, rng.uniform(0.22, 0.33))))
    return parts


def mushroom(rng: np.random.Generator) -> list[Part]:
    """A cluster of 1-4 mushrooms: lathe stems and domed caps (spotted or mottled) on a mossy mound."""
    n = int(rng.integers(1, 5))
    spotted = rng.uniform() < 0.5
    cap_mat = M.plastic(rng, M.hsv(rng.uniform(-0.02, 0.03), 0.85, 0.8), "dots") if spotted else M.skin(rng, rng.uniform(0.05, 0.1))
    stem_mat = M.make_material("stem", M.fbm(rng, 64, cells=3)[..., None] * 0.15 + M.hsv(0.1, 0.15, 0.85), 0.0, 0.7)
    parts = []
    for i in range(n):
        h, cr = rng.uniform(0.06, 0.2), rng.uniform(0.04, 0.1)
        pos = np.array([0.0, 0.0, 0.0]) if i == 0 else np.r_[rng.uniform(-0.12, 0.12), 0, rng.uniform(-0.12, 0.12)]
        sr = cr * rng.uniform(0.2, 0.35)
        stem = revolve(np.array([(0, 0), (sr * 1.3, 0), (sr, h * 0.3), (sr * 0.85, h), (0, h)]), 20)
        a = np.linspace(0, np.pi / 2, 10)
        dome = rng.uniform(0.4, 1.0)
        cap_prof = np.concatenate([[(0.0, -cr * 0.15), (sr, -cr * 0.15)], np.stack([cr * np.cos(a), cr * dome * np.sin(a)], 1)])
        cap = translate(_displace(revolve(cap_prof, 36), 0.05, rng), (0, h, 0))
        tilt = rng.normal(0, 0.15)
        parts += [Part(f"stem{i}", translate(rotate(stem, "z", tilt), pos), stem_mat),
                  Part(f"cap{i}", translate(rotate(cap, "z", tilt), pos), cap_mat)]
    if rng.uniform() < 0.6:
        mound = translate(scale(blob(0.2, 0.1, rng), (1, 0.25, 1)), (0, -0.01, 0))
        parts.append(Part("moss", mound, M.skin(rng, rng.uniform(0.22, 0.32))))
    return parts


def potted_plant(rng: np.random.Generator) -> list[Part]:
    """A hollow pot with soil and a cactus (swept columns and arms), leafy stems, or a round topiary."""
    pr, ph = rng.uniform(0.06, 0.12), rng.uniform(0.08, 0.18)
    pot_prof = np.array([(0.0, 0.0), (pr * 0.75, 0.0), (pr * 0.75, 0.0), (pr, ph), (pr * 1.08, ph), (pr * 1.08, ph * 1.1)])
    parts = [Part("pot", shell(pot_prof, 0.006, 40), M.ceramic(rng) if rng.uniform() < 0.6 else M.stone(rng))]
    soil = cylinder(pr * 0.98, 0.005, 32)
    parts.append(Part("soil", translate(soil, (0, ph * 0.9, 0)), M.stone(rng)))
    kind = rng.choice(["cactus", "leaves", "topiary"])
    green = M.skin(rng, rng.uniform(0.22, 0.38))
    base = np.array([0, ph * 0.9, 0])
    if kind == "cactus":
        h, cr = rng.uniform(0.15, 0.4), pr * rng.uniform(0.3, 0.6)
        t = np.linspace(0, 1, 10)
        col = sweep(base + np.c_[0 * t, h * t, 0 * t], cr * np.sqrt(np.clip(1.05 - t**4, 0.05, 1)), int(rng.choice([8, 12, 16])))
        geoms = [col]
        for _ in range(int(rng.integers(0, 4))):
            s, y0 = rng.choice([-1.0, 1.0]), h * rng.uniform(0.25, 0.6)
            reach, up = cr * rng.uniform(1.5, 2.5), h * rng.uniform(0.15, 0.35)
            ang = rng.uniform(0, 2 * np.pi)
            d = np.array([np.cos(ang), 0, np.sin(ang)]) * s
            path = np.array([base + [0, y0, 0], base + [0, y0, 0] + d * reach, base + [0, y0 + up, 0] + d * reach * 1.05])
            geoms.append(sweep(path, cr * 0.45, 10))
        parts.append(Part("cactus", merge(geoms), green))
    elif kind == "leaves":
        for i in range(int(rng.integers(3, 9))):
            ang = rng.uniform(0, 2 * np.pi)
            stem_l = rng.uniform(0.1, 0.3)
            stem = _stem(rng, base, stem_l, 0.004)
            tip = stem.vertices[-1]
            leaf = rotate(rotate(_leaf(rng, rng.uniform(0.06, 0.14)), "z", rng.uniform(-0.5, 0.4)), "y", ang)
            parts += [Part(f"stem{i}", stem, green), Part(f"leaf{i}", translate(leaf, tip), green)]
    else:
        trunk_h = rng.uniform(0.1, 0.25)
        parts.append(Part("trunk", translate(cylinder(0.008, trunk_h, 12), base), M.wood(rng)))
        ball = blob(rng.uniform(0.07, 0.14), 0.12, rng, freq=2.5)
        parts.append(Part("crown", translate(ball, base + [0, trunk_h, 0]), green))
    return parts
