"""Architecture and prop families: house, sign, crate. Fronts face +z; metres-ish before normalisation."""

from __future__ import annotations

import numpy as np

import pixal3d.data.procedural.materials as M
from pixal3d.data.procedural.parts import (
    Geom,
    Part,
    box,
    cone,
    cylinder,
    extrude,
    merge,
    rod,
    rotate,
    scale,
    shell,
    torus,
    translate,
)


def _wall_material(rng: np.random.Generator):
    roll = rng.uniform()
    if roll < 0.35:
        return M.brick(rng)
    if roll < 0.55:
        return M.stone(rng)
    return M.wood(rng) if roll < 0.7 else M.plastic(rng, M.random_color(rng, (0.05, 0.5), (0.7, 0.95)), "plain")


def _roof_material(rng: np.random.Generator):
    dark = M.random_color(rng, (0.3, 0.7), (0.25, 0.55))
    roll = rng.uniform()
    if roll < 0.5:
        return M.plastic(rng, dark, pattern="bands")
    return M.metal(rng, "iron") if roll < 0.7 else M.stone(rng)


def house(rng: np.random.Generator) -> list[Part]:
    """Walls (1-3 floors), gable / hip / flat roof, a door, a grid of framed windows, maybe a chimney."""
    W, D = rng.uniform(0.6, 1.2), rng.uniform(0.5, 1.0)
    floors = int(rng.integers(1, 4))
    fh = rng.uniform(0.28, 0.38)
    H = floors * fh
    parts = [Part("walls", translate(box((W, H, D)), (0, H / 2, 0)), _wall_material(rng))]
    roof_mat = _roof_material(rng)
    o = rng.uniform(0.02, 0.08)
    rh = rng.uniform(0.15, 0.45) * W
    style = rng.choice(["gable", "gable", "hip", "flat"])
    if style == "gable":
        tri = np.array([(-W / 2 - o, 0.0), (W / 2 + o, 0.0), (0.0, rh)])
        roof = translate(extrude(tri, D + 2 * o), (0, H, -D / 2 - o))
    elif style == "hip":
        roof = translate(scale(rotate(cone(1.0, rh, 4), "y", np.pi / 4), ((W + 2 * o) / 1.414, 1, (D + 2 * o) / 1.414)), (0, H, 0))
    else:
        rh = 0.04
        ring = [translate(box((W + o, rh, o)), (0, H + rh / 2, s * (D / 2))) for s in (-1, 1)]
        ring += [translate(box((o, rh, D + o)), (s * (W / 2), H + rh / 2, 0)) for s in (-1, 1)]
        roof = merge([translate(box((W, 0.01, D)), (0, H + 0.005, 0))] + ring)
    parts.append(Part("roof", roof, roof_mat))
    trim = M.plastic(rng, M.random_color(rng, (0.0, 0.6), (0.2, 0.95)), "plain")
    dw, dh = W * rng.uniform(0.12, 0.2), fh * rng.uniform(0.6, 0.8)
    dx = W * rng.uniform(-0.3, 0.3)
    parts.append(Part("door", translate(box((dw, dh, 0.02)), (dx, dh / 2, D / 2)), M.wood(rng) if rng.uniform() < 0.6 else trim))
    cols = int(rng.integers(2, 5))
    ww, wh = W / cols * rng.uniform(0.3, 0.55), fh * rng.uniform(0.3, 0.5)
    panes, frames = [], []
    for f in range(floors):
        for x in (np.arange(cols) + 0.5) / cols * W - W / 2:
            if f == 0 and abs(x - dx) < (dw + ww) / 2 + 0.01:
                continue
            y = f * fh + fh * 0.55
            for z, sx in ((D / 2, 1.0), (-D / 2, -1.0)):
                panes.append(translate(box((ww, wh, 0.012)), (x, y, z)))
                frames.append(translate(box((ww * 1.2, 0.015, 0.03)), (x, y - wh / 2, z + sx * 0.005)))
    if panes:
        parts += [Part("windows", merge(panes), M.glass(rng)), Part("sills", merge(frames), trim)]
    if style != "flat" and rng.uniform() < 0.5:
        cw = W * 0.08
        chim = translate(box((cw, rh * 0.9, cw)), (W * rng.uniform(0.15, 0.3), H + rh * 0.55, D * rng.uniform(-0.2, 0.2)))
        parts.append(Part("chimney", chim, M.brick(rng)))
    return parts


def _board_outline(rng: np.random.Generator, size: float) -> np.ndarray:
    """Sign board outline [N, 2] centred at the origin: rectangle, disc, octagon, triangle, diamond or arrow."""
    kind = rng.choice(["rect", "disc", "octagon", "triangle", "diamond", "arrow"])
    if kind == "rect":
        a = rng.uniform(0.5, 1.0)
        return size / 2 * np.array([(-1, -a), (1, -a), (1, a), (-1, a)])
    if kind in ("disc", "octagon", "triangle", "diamond"):
        n = {"disc": 32, "octagon": 8, "triangle": 3, "diamond": 4}[str(kind)]
        start = {"disc": 0.0, "octagon": np.pi / 8, "triangle": np.pi / 2, "diamond": 0.0}[str(kind)]
        t = start + np.linspace(0, 2 * np.pi, n, endpoint=False)
        return size / 2 * np.stack([np.cos(t), np.sin(t)], 1)
    return size / 2 * np.array([(-1, -0.3), (0.4, -0.3), (0.4, -0.6), (1, 0), (0.4, 0.6), (0.4, 0.3), (-1, 0.3)])


def sign(rng: np.random.Generator) -> list[Part]:
    """Road / shop sign: one or two posts (or a hanging bracket) and an extruded board with a decal face."""
    size = rng.uniform(0.3, 0.6)
    outline = _board_outline(rng, size)
    t = rng.uniform(0.01, 0.03)
    board = extrude(outline, t)  # decal on the +z cap: planar UVs map the texture upright
    post_mat = M.metal(rng) if rng.uniform() < 0.7 else M.wood(rng)
    H = rng.uniform(0.6, 1.4)
    top = H - outline[:, 1].max()
    parts = [Part("board", translate(board, (0, top + 0.0, 0)), M.decal(rng))]
    style = rng.choice(["post", "posts", "bracket"])
    pr = rng.uniform(0.01, 0.025)
    if style == "post":
        posts = [rod((0, 0, -pr - 0.001), (0, top + outline[:, 1].min() * 0.2, -pr - 0.001), pr, 12)]
    elif style == "posts":
        x = np.abs(outline[:, 0]).max() * 0.7
        posts = [rod((s * x, 0, -pr), (s * x, H, -pr), pr, 4 if rng.uniform() < 0.5 else 12) for s in (-1, 1)]
    else:
        arm_y = H + 0.05
        posts = [rod((-size, 0, -pr), (-size, arm_y + 0.05, -pr), pr), rod((-size, arm_y, -pr), (size * 0.5, arm_y, -pr), pr * 0.6)]
        for x in (-size * 0.3, size * 0.3):
            posts.append(rod((x, arm_y, -pr), (x, top + outline[:, 1].max() * 0.9, t / 2), 0.003, 6))
    parts.append(Part("posts", merge(posts), post_mat))
    if rng.uniform() < 0.5:
        foot = translate(box((0.15, 0.05, 0.15)) if rng.uniform() < 0.5 else cylinder(0.1, 0.05, 24), (0, 0.0, 0))
        parts.append(Part("foot", foot, M.stone(rng)))
    return parts


def _open_box(w: float, h: float, d: float, t: float) -> Geom:
    """Floor and four walls (open top): a concave container."""
    walls = [translate(box((w, t, d)), (0, t / 2, 0))]
    walls += [translate(box((w, h, t)), (0, h / 2, s * (d / 2 - t / 2))) for s in (-1, 1)]
    walls += [translate(box((t, h, d - 2 * t)), (s * (w / 2 - t / 2), h / 2, 0)) for s in (-1, 1)]
    return merge(walls)


def crate(rng: np.random.Generator) -> list[Part]:
    """Container with a lid: a slatted crate, a chest with its lid open at some angle, or a round tin."""
    kind = rng.choice(["crate", "chest", "tin"])
    w, h, d = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.5), rng.uniform(0.25, 0.5)
    t = rng.uniform(0.01, 0.025)
    if kind == "tin":
        r = w / 2
        body = shell(np.array([(0.0, 0.0), (r, 0.0), (r, 0.0), (r, h)]), t * 0.4, 48)
        mat = M.metal(rng) if rng.uniform() < 0.5 else M.decal(rng)
        lid = cylinder(r * 1.03, h * 0.12, 48)
        tilt = rng.uniform(0, 0.6) if rng.uniform() < 0.5 else 0.0
        lid = translate(rotate(translate(lid, (r, 0, 0)), "z", tilt), (-r, h, 0))
        return [Part("tin", body, mat), Part("lid", lid, mat if rng.uniform() < 0.5 else M.metal(rng))]
    mat = M.wood(rng) if kind == "crate" or rng.uniform() < 0.6 else M.plastic(rng)
    parts = [Part("box", _open_box(w, h, d, t), mat)]
    lid_t = t * 1.5
    if kind == "chest":
        angle = rng.uniform(0.0, 1.9)  # hinge along x at the top back edge
        lid = translate(box((w * 1.02, lid_t, d * 1.02)), (0, lid_t / 2, d * 0.51))
        lid = translate(rotate(lid, "x", -angle), (0, h, -d / 2))
        parts.append(Part("lid", lid, mat))
        bands = [translate(box((w * 0.06, h * 1.01, d * 1.02)), (s * w * 0.3, h / 2, 0)) for s in (-1, 1)]
        metal = M.metal(rng, str(rng.choice(["brass", "iron", "steel"])))
        handles = [translate(rotate(torus(h * 0.12, 0.006, 24, 8), "z", np.pi / 2), (s * (w / 2 + 0.01), h * 0.65, 0)) for s in (-1, 1)]
        parts += [Part("bands", merge(bands), metal), Part("handles", merge(handles), metal)]
    else:
        slats = []
        for y in np.linspace(h * 0.2, h * 0.8, int(rng.integers(2, 4))):
            slats += [translate(box((w * 1.04, h * 0.1, t)), (0, y, s * (d / 2 + t / 2))) for s in (-1, 1)]
        posts = [translate(box((t * 2, h, t * 2)), (sx * (w / 2), h / 2, sz * (d / 2))) for sx in (-1, 1) for sz in (-1, 1)]
        parts.append(Part("slats", merge(slats + posts), M.wood(rng)))
        if rng.uniform() < 0.5:
            lid = translate(box((w * 1.02, lid_t, d * 1.02)), (rng.uniform(-0.3, 0.3) * w, h + lid_t / 2, 0))
            parts.append(Part("lid", lid, mat))
    return parts
