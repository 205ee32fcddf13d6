"""Draw the README's example input: an opaque 'photo' of a shaded red ball on a soft grey studio background.

Made entirely by this script (no external images), so the project can ship it:
    python scripts/make_examples.py   # writes examples/ball.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "examples"


def studio_ball(width: int = 480, height: int = 360, seed: int = 0) -> np.ndarray:
    """`[H, W, 3] uint8`: a Lambert + specular shaded sphere with a contact shadow on a gradient backdrop."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    backdrop = 215 - 35 * (yy / height) + rng.normal(0, 2.0, (height, width))
    img = np.repeat(backdrop[..., None], 3, axis=2)
    cx, cy, r = 0.55 * width, 0.48 * height, 0.28 * height
    shadow = np.exp(-(((xx - cx) / (1.1 * r)) ** 2 + ((yy - (cy + 0.95 * r)) / (0.18 * r)) ** 2))
    img *= (1 - 0.25 * shadow)[..., None]
    nx, ny = (xx - cx) / r, (yy - cy) / r
    inside = nx**2 + ny**2 < 1
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    light = np.array([-0.5, -0.6, 0.63])
    light /= np.linalg.norm(light)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    half = light + np.array([0, 0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1) ** 60
    albedo = np.array([200.0, 35.0, 30.0])
    ball = albedo * (0.15 + 0.85 * lambert[..., None]) + 255 * 0.6 * spec[..., None]
    img[inside] = ball[inside]
    return np.clip(img, 0, 255).round().astype(np.uint8)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    Image.fromarray(studio_ball()).save(OUT / "ball.png", optimize=True)
    print(f"wrote {OUT / 'ball.png'}")
