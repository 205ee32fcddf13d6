"""Contact sheet of procedural objects: `python scripts/procedural_sheet.py [-o docs/images/procedural.png]`.

`--families zeroverse -o docs/images/procedural_zeroverse.png` draws only the Zeroverse-style families (any
`FAMILY_SETS` name works; seed s shows the object `pixal3d data generate --families NAME` makes of seed s).

Renders seeds 0..N-1 with the real renderer (`pixal3d.render`): a 30-degree camera from a 3/4 view above the
front (azimuth 35 degrees, elevation 22 degrees), aimed so the object's 2D bounding box is centred and fills
85 % of the tile, the default lighting (environment + key light), composited on a light grey gradient.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pixal3d.camera import Camera
from pixal3d.data.procedural import generate
from pixal3d.render import aim_camera, mesh_from_trimesh, render_mesh

FOV = math.radians(30.0)
AZIMUTH, ELEVATION = math.radians(35.0), math.radians(22.0)


def render_tile(scene: object, size: int) -> Image.Image:
    """One object rendered at `size x size`, RGB on a light background."""
    mesh = mesh_from_trimesh(scene)
    direction = torch.tensor([
        math.cos(ELEVATION) * math.sin(AZIMUTH), math.sin(ELEVATION), math.cos(ELEVATION) * math.cos(AZIMUTH)
    ])
    camera = Camera(fov=FOV, size=size, cam_to_world=aim_camera(mesh, FOV, direction, fill=0.85))
    rgba = render_mesh(mesh, camera).rgba.numpy()
    background = np.linspace(0.95, 0.8, size)[:, None, None] * np.ones((size, size, 3))
    rgb = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * background  # premultiplied colour over the background
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/procedural.png"))
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--families", default="classic", help="family set (default classic)")
    args = parser.parse_args()
    rows = -(-args.count // args.cols)
    sheet = Image.new("RGB", (args.cols * args.size, rows * args.size), "white")
    draw = ImageDraw.Draw(sheet)
    start = time.perf_counter()
    for seed in range(args.count):
        obj = generate(seed, family_set=args.families)
        x, y = (seed % args.cols) * args.size, (seed // args.cols) * args.size
        sheet.paste(render_tile(obj.scene, args.size), (x, y))
        draw.text((x + 4, y + 3), f"{seed}: {obj.family}", fill=(30, 30, 30))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    sheet.save(tmp, format="PNG", optimize=True)
    tmp.replace(args.output)
    seconds = (time.perf_counter() - start) / args.count
    print(f"wrote {args.output}: {args.count} objects, {seconds:.2f} s/object (generate + render)")


if __name__ == "__main__":
    main()
