"""Hand-tool families: hammer, wrench, screwdriver. Tools stand upright (long axis along y), metres-ish."""

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
    extrude_ring,
    merge,
    revolve,
    rotate,
    translate,
)


def _arc(radius: float, a0: float, a1: float, n: int) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def _handle_profile(rng: np.random.Generator, length: float, radius: float) -> np.ndarray:
    """(r, y) profile of a grip from y = 0 to y = length, flared at the bottom and rounded at both ends."""
    k = rng.uniform(0.9, 1.3)
    pts = [(0.0, 0.0), (radius * k * 0.8, 0.0), (radius * k, length * 0.04), (radius * k, length * 0.12),
           (radius * 0.85, length * 0.3), (radius, length * rng.uniform(0.6, 0.85)), (radius * 0.8, length),
           (0.0, length)]
    return np.array(pts)


def hammer(rng: np.random.Generator) -> list[Part]:
    """Handle (lathe, wood or grip) and a head: claw hammer, sledge or mallet."""
    L, r = rng.uniform(0.25, 0.4), rng.uniform(0.012, 0.02)
    handle_mat = M.wood(rng) if rng.uniform() < 0.6 else M.plastic(rng)
    parts = [Part("handle", revolve(_handle_profile(rng, L, r), 24), handle_mat)]
    if rng.uniform() < 0.4:
        parts.append(Part("grip", revolve(np.array([(r * 1.15, 0.0), (r * 1.1, L * 0.35)]), 24), M.rubber(rng)))
    kind = rng.choice(["claw", "sledge", "mallet"])
    hw = r * rng.uniform(1.6, 2.4)
    head_mat = M.wood(rng) if kind == "mallet" and rng.uniform() < 0.5 else M.metal(rng)
    if kind == "mallet":
        hr, hl = hw * rng.uniform(1.2, 1.8), L * rng.uniform(0.35, 0.5)
        head = translate(rotate(cylinder(hr, hl, 32), "z", -np.pi / 2), (-hl / 2, L - hr * 0.9, 0))
        parts.append(Part("head", head, head_mat))
        return parts
    hl = L * rng.uniform(0.3, 0.45)
    body = translate(box((hl * 0.5, hw * 2, hw * 1.6)), (0, L - hw * 0.8, 0))
    face_r = hw * rng.uniform(0.75, 1.0)
    face = translate(rotate(cylinder(face_r, hl * 0.35, 24), "z", -np.pi / 2), (hl * 0.2, L - hw * 0.8, 0))
    geoms = [body, face]
    if kind == "claw":
        outer = _arc(hl * 0.6, np.pi / 2, np.pi * 0.95, 8) + [0, -hl * 0.6]
        inner = _arc(hl * 0.45, np.pi * 0.93, np.pi / 2, 8) + [0, -hl * 0.6]
        claw = extrude(np.concatenate([outer, inner]) + [0, hw * 0.9], hw * 0.6)
        for z in (-hw * 0.75, hw * 0.15):
            geoms.append(translate(claw, (-hl * 0.2, L - hw * 0.8, z)))
    else:
        back = rotate(cylinder(face_r, hl * 0.35, 24), "z", np.pi / 2)
        geoms.append(translate(back, (-hl * 0.2, L - hw * 0.8, 0)))
    parts.append(Part("head", merge(geoms), head_mat))
    return parts


def _open_jaw(radius: float, slot: float) -> np.ndarray:
    """C-shaped polygon [N, 2] of an open-end wrench jaw: a disc with a slot of half-width `slot` opening
    towards +y, ending in a round bottom."""
    top = np.sqrt(radius**2 - slot**2)
    a = np.arcsin(slot / radius)
    outer = _arc(radius, np.pi / 2 + a, np.pi / 2 + 2 * np.pi - a, 24)
    inner = np.concatenate([[(slot, top)], _arc(slot, 0.0, -np.pi, 9), [(-slot, top)]])
    return np.concatenate([outer, inner[:-1]])


def _ring_end(rng: np.random.Generator, radius: float, hole: float, depth: float) -> Geom:
    """Box-end: a disc with a hexagonal (or 12-point) hole: genus 1."""
    n = 24
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    outer = radius * np.stack([np.cos(t), np.sin(t)], 1)
    k = 6 if rng.uniform() < 0.6 else 12
    # regular k-gon sampled at the outer loop's angles so the two loops pair up point by point
    sector = (t % (2 * np.pi / k)) - np.pi / k
    rad = hole * np.cos(np.pi / k) / np.cos(sector)
    return extrude_ring(outer, rad[:, None] * outer / radius, depth)


def wrench(rng: np.random.Generator) -> list[Part]:
    """Flat wrench standing in the xy plane: stadium handle, ring and/or open ends (holes), maybe a grip."""
    L, w, t = rng.uniform(0.15, 0.3), rng.uniform(0.02, 0.04), rng.uniform(0.006, 0.012)
    mat = M.metal(rng, str(rng.choice(["steel", "chrome", "iron", "aluminium"])))
    half = L / 2
    stadium = np.concatenate([_arc(w / 2, 0, np.pi, 8) + [0, half], _arc(w / 2, np.pi, 2 * np.pi, 8) - [0, half]])
    handle = extrude(stadium, t)
    geoms = [translate(handle, (0, 0, -t / 2))]
    ends = rng.choice(["ring-open", "ring-ring", "open-open"])
    for sign, kind in zip((1.0, -1.0), ends.split("-"), strict=True):
        R = w * rng.uniform(1.1, 1.6)
        if kind == "ring":
            g = _ring_end(rng, R, R * rng.uniform(0.45, 0.6), t * 1.2)
        else:
            g = extrude(_open_jaw(R, R * rng.uniform(0.35, 0.55)), t)
            g = rotate(g, "z", rng.uniform(-0.3, 0.3) + (0 if sign > 0 else np.pi))
        geoms.append(translate(g, (0, sign * (half + R * 0.6), -t * 0.6)))
    parts = [Part("wrench", merge(geoms[:1]), mat)]
    parts += [Part(f"end{i}", g, mat) for i, g in enumerate(geoms[1:])]
    if rng.uniform() < 0.3:
        grip = translate(box((w * 1.2, L * 0.45, t * 1.4)), (0, -L * 0.05, 0))
        parts.append(Part("grip", grip, M.rubber(rng) if rng.uniform() < 0.5 else M.plastic(rng)))
    return parts


def screwdriver(rng: np.random.Generator) -> list[Part]:
    """Lathe handle (banded plastic or wood), metal shaft, flat or cross tip; stands tip-down."""
    hl, hr = rng.uniform(0.08, 0.13), rng.uniform(0.012, 0.02)
    sl, sr = rng.uniform(0.06, 0.2), hr * rng.uniform(0.18, 0.3)
    handle_mat = M.wood(rng) if rng.uniform() < 0.3 else M.plastic(rng, pattern=str(rng.choice(["plain", "bands", "stripes"])))
    handle = translate(revolve(_handle_profile(rng, hl, hr), 20), (0, sl, 0))
    metal = M.metal(rng, str(rng.choice(["steel", "chrome"])))
    tip_l = sr * rng.uniform(2.5, 4)
    shaft = translate(cylinder(sr, sl - tip_l + 0.01, 16), (0, tip_l, 0))
    if rng.uniform() < 0.5:
        tip = translate(box((sr * 2, tip_l, sr * 0.6)), (0, tip_l / 2, 0))
    else:
        tip = translate(rotate(cone(sr, tip_l, 4), "x", np.pi), (0, tip_l, 0))
    ferrule = translate(cylinder(hr * 0.6, hl * 0.08, 20), (0, sl - hl * 0.04, 0))
    return [Part("handle", handle, handle_mat), Part("shaft", merge([shaft, tip, ferrule]), metal)]
