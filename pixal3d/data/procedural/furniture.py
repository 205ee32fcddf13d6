"""Furniture families: chair, table, shelf, lamp. Units are metres-ish before normalisation; y up, front +z."""

from __future__ import annotations

import numpy as np

import pixal3d.data.procedural.materials as M
from pixal3d.data.procedural.parts import (
    Geom,
    Part,
    box,
    cylinder,
    merge,
    rod,
    rotate,
    shell,
    sphere,
    translate,
)


def _frame_material(rng: np.random.Generator):
    return M.wood(rng) if rng.uniform() < 0.55 else M.metal(rng)


def _legs(rng: np.random.Generator, half_w: float, half_d: float, top: float, radius: float,
          splay: float) -> list[Geom]:
    """Four legs from the floor to height `top` at the corners (x = +-half_w, z = +-half_d)."""
    sides = int(rng.choice([4, 8, 12]))
    legs = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            upper = np.array([sx * half_w, top, sz * half_d])
            lower = upper + [sx * splay, -top, sz * splay]
            legs.append(rod(lower, upper, radius, sides))
    return legs


def chair(rng: np.random.Generator) -> list[Part]:
    """Four legs, a seat, and a back (solid, slats, ladder or open frame), sometimes arms and a cushion."""
    w, h, t = rng.uniform(0.4, 0.6), rng.uniform(0.38, 0.5), rng.uniform(0.025, 0.06)
    d = w * rng.uniform(0.85, 1.15)
    frame = _frame_material(rng)
    seat_mat = frame if rng.uniform() < 0.5 else M.plastic(rng)
    r = rng.uniform(0.012, 0.03)
    hw, hd = w / 2 - 1.5 * r, d / 2 - 1.5 * r
    parts = [Part("seat", translate(box((w, t, d)), (0, h, 0)), seat_mat)]
    parts.append(Part("legs", merge(_legs(rng, hw, hd, h - t / 2, r, rng.uniform(0, 0.04))), frame))
    if rng.uniform() < 0.4:
        y = h * rng.uniform(0.2, 0.4)
        bars = [rod((sx * hw, y, -hd), (sx * hw, y, hd), r * 0.6) for sx in (-1, 1)]
        parts.append(Part("stretchers", merge(bars), frame))
    bh = rng.uniform(0.3, 0.55)
    top = h + t / 2 + bh
    posts = [rod((sx * hw, h, -hd), (sx * hw, top, -hd), r, 8) for sx in (-1, 1)]
    style = rng.choice(["solid", "slats", "ladder", "frame"])
    back: list[Geom] = []
    rail = rng.uniform(0.04, 0.1)
    if style == "solid":
        back.append(translate(box((w, bh, t * 0.8)), (0, h + t / 2 + bh / 2, -hd)))
    else:
        back.append(translate(box((2 * hw, rail, r * 2)), (0, top - rail / 2, -hd)))
        n = int(rng.integers(2, 7))
        if style == "slats":
            for x in np.linspace(-hw, hw, n + 2)[1:-1]:
                back.append(rod((x, h + t / 2, -hd), (x, top - rail, -hd), r * 0.7, 4))
        elif style == "ladder":
            for y in np.linspace(h + t / 2, top - rail, n + 1)[1:]:
                back.append(translate(box((2 * hw, rail * 0.5, r * 1.5)), (0, y - rail, -hd)))
        else:
            back.append(translate(box((2 * hw, rail, r * 2)), (0, h + t / 2 + rail, -hd)))
    back_mat = seat_mat if style == "solid" else frame
    parts += [Part("back_posts", merge(posts), frame), Part("back", merge(back), back_mat)]
    if rng.uniform() < 0.3:
        ay = h + rng.uniform(0.18, 0.25)
        arms = [translate(box((r * 3, r * 1.5, d)), (sx * hw, ay, 0)) for sx in (-1, 1)]
        arms += [rod((sx * hw, h, hd), (sx * hw, ay, hd), r * 0.8, 8) for sx in (-1, 1)]
        parts.append(Part("arms", merge(arms), frame))
    if rng.uniform() < 0.35:
        ct = rng.uniform(0.03, 0.07)
        parts.append(Part("cushion", translate(box((w * 0.92, ct, d * 0.9)), (0, h + t / 2 + ct / 2, 0.01)),
                          M.fabric(rng)))
    return parts


def table(rng: np.random.Generator) -> list[Part]:
    """A rectangular or round top on four legs, a pedestal or two trestles; maybe an apron and a shelf."""
    w, h, t = rng.uniform(0.6, 1.6), rng.uniform(0.4, 0.8), rng.uniform(0.025, 0.06)
    d = w * rng.uniform(0.5, 1.0)
    round_top = rng.uniform() < 0.3
    top_mat = M.wood(rng) if rng.uniform() < 0.6 else M.any_surface(rng)
    frame = top_mat if rng.uniform() < 0.5 else _frame_material(rng)
    if round_top:
        d = w
        top = translate(cylinder(w / 2, t, 48), (0, h - t, 0))
    else:
        top = translate(box((w, t, d)), (0, h - t / 2, 0))
    parts = [Part("top", top, top_mat)]
    style = "pedestal" if round_top and rng.uniform() < 0.6 else rng.choice(["legs", "legs", "trestle"])
    r = rng.uniform(0.015, 0.04)
    inset = 0.7 if round_top else rng.uniform(0.85, 0.95)
    hw, hd = inset * w / 2 - r, inset * d / 2 - r
    if style == "pedestal":
        col = cylinder(rng.uniform(0.03, 0.07), h - t, 24)
        foot = cylinder(w * rng.uniform(0.2, 0.3), rng.uniform(0.02, 0.05), 32, radius_top=w * 0.12)
        parts.append(Part("pedestal", merge([col, foot]), frame))
    elif style == "trestle":
        ends = [translate(box((r * 2, h - t, d * 0.8)), (sx * hw, (h - t) / 2, 0)) for sx in (-1, 1)]
        ends.append(translate(box((2 * hw, r * 3, r * 2)), (0, (h - t) * 0.3, 0)))
        parts.append(Part("trestles", merge(ends), frame))
    else:
        parts.append(Part("legs", merge(_legs(rng, hw, hd, h - t, r, 0.0)), frame))
        if rng.uniform() < 0.5 and not round_top:
            a = rng.uniform(0.05, 0.12)
            apron = [translate(box((2 * hw, a, r)), (0, h - t - a / 2, sz * hd)) for sz in (-1, 1)]
            apron += [translate(box((r, a, 2 * hd)), (sx * hw, h - t - a / 2, 0)) for sx in (-1, 1)]
            parts.append(Part("apron", merge(apron), frame))
        if rng.uniform() < 0.3:
            parts.append(Part("shelf", translate(box((2 * hw, t * 0.7, 2 * hd)), (0, h * 0.25, 0)), top_mat))
    return parts


def _books(rng: np.random.Generator, x0: float, x1: float, y: float, depth: float, max_h: float) -> list[Geom]:
    books, x = [], x0 + rng.uniform(0, 0.3) * (x1 - x0)
    stop = x1 - rng.uniform(0, 0.4) * (x1 - x0)
    while True:
        bw, bh = rng.uniform(0.015, 0.05), max_h * rng.uniform(0.6, 0.95)
        if x + bw > stop:
            return books
        books.append(translate(box((bw, bh, depth * rng.uniform(0.6, 0.9))), (x + bw / 2, y + bh / 2, 0)))
        x += bw + rng.uniform(0, 0.004)


def shelf(rng: np.random.Generator) -> list[Part]:
    """Bookcase: two sides, top, bottom, 1-5 inner shelves (open bays), optional back, divider and books."""
    w, h, d, t = rng.uniform(0.5, 1.2), rng.uniform(0.6, 1.8), rng.uniform(0.22, 0.4), rng.uniform(0.015, 0.035)
    mat = M.wood(rng) if rng.uniform() < 0.6 else M.plastic(rng, pattern="plain")
    n = int(rng.integers(1, 6))
    levels = np.linspace(t / 2, h - t / 2, n + 2)
    boards = [translate(box((w, t, d)), (0, y, 0)) for y in levels]
    boards += [translate(box((t, h, d)), (sx * (w / 2 + t / 2), h / 2, 0)) for sx in (-1, 1)]
    parts = [Part("carcass", merge(boards), mat)]
    if rng.uniform() < 0.6:
        back_mat = mat if rng.uniform() < 0.5 else M.plastic(rng)
        parts.append(Part("back", translate(box((w, h, t * 0.4)), (0, h / 2, -d / 2)), back_mat))
    divide = rng.uniform() < 0.3
    if divide:
        parts.append(Part("divider", translate(box((t, h - t, d)), (0, h / 2, 0)), mat))
    if rng.uniform() < 0.75:
        book_mats = [M.plastic(rng, pattern=str(rng.choice(["plain", "bands"]))) for _ in range(3)]
        books: list[list[Geom]] = [[], [], []]
        for y0, y1 in zip(levels[:-1], levels[1:], strict=True):
            spans = [(-w / 2, 0.0), (0.0, w / 2)] if divide else [(-w / 2, w / 2)]
            for a, b in spans:
                for g in _books(rng, a + t, b - t, y0 + t / 2, d, y1 - y0 - t):
                    books[int(rng.integers(3))].append(g)
        parts += [Part(f"books{i}", merge(b), m) for i, (b, m) in enumerate(zip(books, book_mats, strict=True)) if b]
    return parts


def lamp(rng: np.random.Generator) -> list[Part]:
    """A table/floor lamp (stem + tubular shade + bulb) or a desk lamp (bent swept arm + bell shade)."""
    base_mat = M.metal(rng) if rng.uniform() < 0.6 else M.ceramic(rng)
    br = rng.uniform(0.07, 0.15)
    bh = rng.uniform(0.02, 0.06)
    base = cylinder(br, bh, 40, radius_top=br * rng.uniform(0.6, 1.0))
    parts = [Part("base", base, base_mat)]
    bulb_mat = M.make_material("bulb", np.ones((8, 8, 3)) * [1.0, 0.97, 0.85], 0.0, 0.1)
    if rng.uniform() < 0.55:
        stem_h = rng.uniform(0.3, 1.2)
        stem = cylinder(rng.uniform(0.008, 0.02), stem_h, 16)
        parts.append(Part("stem", translate(stem, (0, bh, 0)), base_mat))
        r0, r1 = rng.uniform(0.1, 0.22), rng.uniform(0.05, 0.18)
        sh = rng.uniform(0.12, 0.3)
        y0 = bh + stem_h - sh * rng.uniform(0.3, 0.6)
        shade = shell(np.array([(r0, 0.0), (r1, sh)]), rng.uniform(0.004, 0.01), 48)
        parts.append(Part("shade", translate(shade, (0, y0, 0)), M.fabric(rng) if rng.uniform() < 0.6 else M.plastic(rng)))
        parts.append(Part("bulb", translate(sphere(min(r0, r1) * 0.4), (0, bh + stem_h, 0)), bulb_mat))
        return parts
    a1, a2 = rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.4)
    tilt = rng.uniform(-0.35, 0.1)
    joint = np.array([0, bh + a1, -0.05])
    head = joint + [0, a2 * np.sin(tilt), a2 * np.cos(tilt)]
    r = rng.uniform(0.008, 0.016)
    arm_mat = base_mat if rng.uniform() < 0.5 else M.plastic(rng)
    parts.append(Part("arm", merge([rod((0, bh, 0), joint, r), rod(joint, head, r)]), arm_mat))
    parts.append(Part("joints", merge([translate(sphere(r * 2), joint), translate(sphere(r * 1.6), head)]), base_mat))
    sr, sl = rng.uniform(0.06, 0.12), rng.uniform(0.08, 0.16)
    prof = np.array([(sr, 0.0), (sr * 0.9, sl * 0.5), (sr * 0.35, sl), (sr * 0.12, sl)])
    a = -rng.uniform(0.3, 0.9)  # tilt the top backwards so the opening faces down and forwards
    bell = rotate(shell(prof, 0.005, 40), "x", a)
    bell = translate(bell, head - np.array([0, sl * np.cos(a), sl * np.sin(a)]))
    parts.append(Part("shade", bell, M.metal(rng) if rng.uniform() < 0.5 else M.plastic(rng, pattern="plain")))
    bulb_at = head - np.array([0, sl * 0.6 * np.cos(a), sl * 0.6 * np.sin(a)])
    parts.append(Part("bulb", translate(sphere(sr * 0.3), bulb_at), bulb_mat))
    return parts
