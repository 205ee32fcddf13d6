"""Render the demo's extra example inputs from the project's own procedural objects and renderer.

    python scripts/make_demo_examples.py   # writes examples/chair.png and examples/mug.png

Each is an RGBA PNG (transparent background, so the demo needs no background removal) of a seeded procedural
object (`pixal3d.data.procedural`) seen from a 3/4 view by `pixal3d.render`; nothing comes from outside.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from pixal3d.camera import Camera
from pixal3d.data.procedural import generate
from pixal3d.render import aim_camera, mesh_from_trimesh, render_mesh

OUT = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = {"chair": (3, "chair"), "mug": (7, "mug")}
"""File stem -> (procedural seed, family)."""


def render_example(seed: int, family: str, size: int = 320) -> Image.Image:
    """The object of `seed` from 30 degrees azimuth and 25 degrees elevation, 40 degree FoV, RGBA."""
    mesh = mesh_from_trimesh(generate(seed, family=family).scene)
    azimuth, elevation, fov = math.radians(30), math.radians(25), math.radians(40)
    direction = torch.tensor([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                              math.cos(elevation) * math.cos(azimuth)], dtype=torch.float64)
    camera = Camera(fov=fov, size=size, cam_to_world=aim_camera(mesh, fov, direction, fill=0.8))
    return Image.fromarray(render_mesh(mesh, camera).rgba_uint8().numpy(), mode="RGBA")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for stem, (seed, family) in EXAMPLES.items():
        path = OUT / f"{stem}.png"
        render_example(seed, family).save(path, optimize=True)
        print(f"wrote {path}")
