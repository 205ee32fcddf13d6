"""Toy families: car, airplane, robot. Vehicles point their nose along +x (their side faces the +z front)."""

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
    revolve,
    rod,
    rotate,
    sphere,
    torus,
    translate,
)


def _paint(rng: np.random.Generator):
    """Car-body paint: glossy plastic, a metal, or a two-colour pattern."""
    roll = rng.uniform()
    if roll < 0.55:
        return M.plastic(rng, pattern="plain")
    return M.metal(rng) if roll < 0.8 else M.plastic(rng, pattern=str(rng.choice(["stripes", "checks"])))


def _wheel(rng: np.random.Generator, radius: float, width: float, tyre, hub) -> list[tuple[str, Geom, object]]:
    """A wheel whose axle is the z axis: torus or cylinder tyre plus a hub cylinder."""
    if rng.uniform() < 0.5:
        t = rotate(torus(radius * 0.72, radius * 0.28, 28, 10), "x", np.pi / 2)
    else:
        t = translate(rotate(cylinder(radius, width, 28), "x", np.pi / 2), (0, 0, -width / 2))
    h = translate(rotate(cylinder(radius * 0.5, width * 1.1, 20), "x", np.pi / 2), (0, 0, -width * 0.55))
    return [("tyre", t, tyre), ("hub", h, hub)]


def car(rng: np.random.Generator) -> list[Part]:
    """Extruded side-profile body, glass cabin with a roof, 2-3 axles of wheels, lights; car, van or truck."""
    kind = rng.choice(["car", "car", "van", "truck"])
    L = rng.uniform(0.35, 0.5)
    W, wr = L * rng.uniform(0.38, 0.5), L * rng.uniform(0.09, 0.14)
    c, h1 = wr * 0.6, wr * rng.uniform(1.6, 2.2)
    paint = _paint(rng)
    body = extrude(np.array([(0, c), (L, c), (L, h1), (L * 0.02, h1)]), W)
    parts = [Part("body", translate(body, (0, 0, -W / 2)), paint)]
    h2 = h1 + L * rng.uniform(0.12, 0.2)
    if kind == "car":
        x0, x1 = L * rng.uniform(0.15, 0.3), L * rng.uniform(0.6, 0.75)
        cab = np.array([(x0 - L * 0.08, h1), (x1 + L * 0.1, h1), (x1, h2), (x0, h2)])
    elif kind == "van":
        x1 = L * rng.uniform(0.8, 0.9)
        cab = np.array([(L * 0.03, h1), (x1 + L * 0.08, h1), (x1, h2), (L * 0.03, h2)])
    else:
        x0 = L * rng.uniform(0.7, 0.78)
        cab = np.array([(x0, h1), (L * 0.98, h1), (L * 0.94, h2), (x0, h2)])
        cargo_h = h2 - h1 + L * rng.uniform(0.0, 0.08)
        cargo = translate(box((x0 * 0.95, cargo_h, W)), (x0 * 0.5, h1 + cargo_h / 2, 0))
        parts.append(Part("cargo", cargo, M.plastic(rng) if rng.uniform() < 0.5 else M.wood(rng)))
    glass = M.glass(rng)
    parts.append(Part("cabin", translate(extrude(cab, W * 0.86), (0, 0, -W * 0.43)), glass))
    roof_x = (cab[2, 0] + cab[3, 0]) / 2
    roof = translate(box((cab[2, 0] - cab[3, 0] + 0.004, L * 0.012, W * 0.9)), (roof_x, h2, 0))
    parts.append(Part("roof", roof, paint))
    tyre, hub = M.rubber(rng), M.metal(rng)
    axles = np.linspace(L * 0.18, L * 0.82, 3 if kind == "truck" and rng.uniform() < 0.6 else 2)
    for i, x in enumerate(axles):
        for s in (-1.0, 1.0):
            for name, g, mat in _wheel(rng, wr, W * 0.18, tyre, hub):
                parts.append(Part(f"{name}{i}{'lr'[int(s > 0)]}", translate(g, (x, wr, s * W * 0.46)), mat))
    lamp = M.make_material("headlight", np.ones((8, 8, 3)) * [1.0, 0.95, 0.7], 0.0, 0.1)
    lights = [translate(sphere(wr * 0.22, 12, 8), (L, (c + h1) * 0.6, s * W * 0.32)) for s in (-1, 1)]
    parts.append(Part("lights", merge(lights), lamp))
    if rng.uniform() < 0.6:
        bumper = [translate(box((L * 0.03, wr * 0.3, W * 1.02)), (x, c + wr * 0.2, 0)) for x in (0.0, L)]
        parts.append(Part("bumpers", merge(bumper), M.metal(rng, "chrome") if rng.uniform() < 0.5 else M.rubber(rng)))
    return parts


def _planform(root: float, tip: float, span: float, sweep: float) -> np.ndarray:
    """Trapezoid wing outline in (x, span) with the root chord on span = 0, leading edge at +x."""
    return np.array([(root / 2, 0.0), (root / 2 - sweep, span), (root / 2 - sweep - tip, span), (-root / 2, 0.0)])


def airplane(rng: np.random.Generator) -> list[Part]:
    """Lathe fuselage along x, swept wings, tailplane and fin; jet engines or a nose propeller."""
    L, R = rng.uniform(0.5, 0.9), rng.uniform(0.03, 0.06)
    t = np.linspace(0, 1, 14)
    nose, tail = rng.uniform(0.1, 0.25), rng.uniform(0.25, 0.4)
    r = R * np.clip(np.minimum(np.sqrt(np.clip(t / nose, 0, 1)), (1 - t) / tail + 0.15), 0.1, 1)
    prof = np.concatenate([[(0.0, 0.0)], np.stack([r, t * L], 1), [(0.0, L)]])
    body = rotate(revolve(prof, 32), "z", -np.pi / 2)  # y axis -> +x, nose at x = L
    skin = _paint(rng)
    wing_mat = skin if rng.uniform() < 0.6 else M.plastic(rng)
    parts = [Part("fuselage", body, skin)]
    root, span = L * rng.uniform(0.15, 0.3), L * rng.uniform(0.35, 0.6)
    sweep = root * rng.uniform(0.0, 1.2)
    th = R * 0.25
    wing_x = L * rng.uniform(0.45, 0.6)
    wy = R * rng.uniform(-0.6, 0.5)
    for s in (-1.0, 1.0):
        wing = extrude(_planform(root, root * rng.uniform(0.3, 0.6), span, sweep) * [1, s], th)
        wing = rotate(wing, "x", np.pi / 2)  # (x, span) plane -> (x, z), thickness along -y
        parts.append(Part(f"wing{'lr'[int(s > 0)]}", translate(wing, (wing_x, wy + th / 2, 0)), wing_mat))
        tailplane = rotate(extrude(_planform(root * 0.45, root * 0.25, span * 0.35, sweep * 0.4) * [1, s], th * 0.7), "x", np.pi / 2)
        parts.append(Part(f"tailplane{'lr'[int(s > 0)]}", translate(tailplane, (L * 0.08, R * 0.3, 0)), wing_mat))
    fin = extrude(np.array([(L * 0.2, 0), (L * 0.04, R * 3.5), (-L * 0.03, R * 3.5), (-L * 0.02, 0)]), th * 0.7)
    parts.append(Part("fin", translate(fin, (L * 0.02, R * 0.5, -th * 0.35)), wing_mat))
    metal = M.metal(rng)
    if rng.uniform() < 0.5:
        er = R * rng.uniform(0.3, 0.5)
        for s in (-1.0, 1.0):
            eng = rotate(cylinder(er, root * 0.8, 20, radius_top=er * 0.8), "z", -np.pi / 2)
            parts.append(Part(f"engine{'lr'[int(s > 0)]}", translate(eng, (wing_x - root * 0.2, wy - er, s * span * 0.4)), metal))
    else:
        spinner = rotate(cone(R * 0.35, R * 0.6, 16), "z", -np.pi / 2)
        blades = [rotate(box((R * 0.05, R * 3.2, R * 0.3)), "x", a) for a in
                  np.linspace(0, np.pi, int(rng.integers(2, 5)), endpoint=False)]
        parts.append(Part("propeller", translate(merge([spinner] + blades), (L, 0, 0)), metal))
    return parts


def robot(rng: np.random.Generator) -> list[Part]:
    """Figure from parts: torso, neck and head with eyes and antennae, jointed arms with claws (open tori),
    legs with feet or a wheeled base, and a chest panel decal."""
    shell_mat = _paint(rng)
    joint_mat = M.metal(rng)
    tw, th, td = rng.uniform(0.2, 0.35), rng.uniform(0.2, 0.4), rng.uniform(0.12, 0.25)
    legs_h = rng.uniform(0.15, 0.35)
    parts: list[Part] = []
    if rng.uniform() < 0.65:
        legs, feet = [], []
        for s in (-1, 1):
            x = s * tw * 0.25
            legs.append(rod((x, 0.03, 0), (x, legs_h, 0), tw * rng.uniform(0.07, 0.12), int(rng.choice([4, 12]))))
            feet.append(translate(box((tw * 0.3, 0.03, td * 0.9)), (x, 0.015, 0.02)))
        parts += [Part("legs", merge(legs), joint_mat), Part("feet", merge(feet), shell_mat)]
    else:
        base = translate(box((tw * 1.1, legs_h * 0.4, td * 1.3)), (0, legs_h * 0.6, 0))
        parts.append(Part("base", base, shell_mat))
        for s in (-1.0, 1.0):
            for name, g, mat in _wheel(rng, legs_h * 0.4, tw * 0.15, M.rubber(rng), joint_mat):
                g = translate(rotate(g, "y", np.pi / 2), (s * tw * 0.6, legs_h * 0.4, 0))  # axle along x
                parts.append(Part(f"{name}{'lr'[int(s > 0)]}", g, mat))
    ty = legs_h + th / 2
    torso = box((tw, th, td)) if rng.uniform() < 0.6 else translate(cylinder(tw / 2, th, 32), (0, -th / 2, 0))
    parts.append(Part("torso", translate(torso, (0, ty, 0)), shell_mat))
    front = float(torso.vertices[:, 2].max())
    panel = translate(box((tw * 0.5, th * 0.4, 0.01)), (0, ty + th * 0.05, front))
    parts.append(Part("panel", panel, M.decal(rng)))
    neck = rng.uniform(0.01, 0.05)
    parts.append(Part("neck", translate(cylinder(tw * 0.12, neck + 0.01, 16), (0, ty + th / 2 - 0.005, 0)), joint_mat))
    hs = tw * rng.uniform(0.5, 0.85)
    hy = ty + th / 2 + neck + hs / 2
    head = box((hs, hs * rng.uniform(0.7, 1.1), hs * 0.9)) if rng.uniform() < 0.6 else sphere(hs / 2, 24, 12)
    parts.append(Part("head", translate(head, (0, hy, 0)), shell_mat if rng.uniform() < 0.6 else M.metal(rng)))
    eye = M.make_material("eyes", np.ones((8, 8, 3)) * M.random_color(rng, value=(0.8, 1.0)), 0.0, 0.05)
    eyes = [translate(sphere(hs * rng.uniform(0.08, 0.15), 16, 8), (s * hs * 0.22, hy + hs * 0.1, hs * 0.45)) for s in (-1, 1)]
    parts.append(Part("eyes", merge(eyes), eye))
    if rng.uniform() < 0.7:
        ants = []
        for s in ((-1, 1) if rng.uniform() < 0.5 else (0,)):
            tip = np.array([s * hs * 0.3, hy + hs * rng.uniform(0.8, 1.3), 0])
            ants += [rod((s * hs * 0.3, hy + hs * 0.3, 0), tip, 0.004, 8), translate(sphere(0.012, 12, 6), tip)]
        parts.append(Part("antennae", merge(ants), joint_mat))
    al = th * rng.uniform(0.8, 1.3)
    for s in (-1.0, 1.0):
        shoulder = np.array([s * (tw / 2 + 0.02), ty + th * 0.35, 0])
        elbow = shoulder + [s * al * rng.uniform(0.0, 0.35), -al * 0.5, al * rng.uniform(-0.1, 0.3)]
        hand = elbow + [s * al * rng.uniform(-0.1, 0.2), -al * rng.uniform(0.1, 0.5), al * rng.uniform(0.0, 0.4)]
        ar = tw * 0.06
        arm = merge([rod(shoulder, elbow, ar, 10), rod(elbow, hand, ar * 0.85, 10)])
        joints = merge([translate(sphere(ar * 1.5, 16, 8), shoulder), translate(sphere(ar * 1.3, 16, 8), elbow)])
        claw = translate(rotate(torus(ar * 1.6, ar * 0.4, 20, 8, angle=np.pi * 1.5), "y", rng.uniform(0, np.pi)), hand)
        side = "lr"[int(s > 0)]
        parts += [Part(f"arm{side}", arm, shell_mat), Part(f"joints{side}", joints, joint_mat),
                  Part(f"claw{side}", claw, joint_mat)]
    return parts
