"""Procedural PBR materials: base-colour textures (wood grain, value noise, stripes, checks, dots, bricks,
brushed metal, decals with shapes and seven-segment numbers) and glTF metallic-roughness values or maps.

Every material is a `trimesh.visual.material.PBRMaterial` whose `baseColorTexture` is an sRGB PIL image and whose
metallic/roughness come either as factors or as a `metallicRoughnessTexture` (glTF packing: G = roughness,
B = metallic, factors 1). Textures are small (64-256 px) so that one object generates in milliseconds.
All randomness comes from the `numpy.random.Generator` passed in. Colours are float RGB in [0, 1], sRGB.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw
from trimesh.visual.material import PBRMaterial

TEX = 128
"""Default texture side in pixels."""


# ------------------------------------------------------------------------------------------- colours, noise
def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> RGB [3] in [0, 1] (hue wraps)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.4, 0.9),
                 value: tuple[float, float] = (0.45, 0.95)) -> np.ndarray:
    """A random saturated colour, RGB [3]."""
    return hsv(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))


def value_noise(rng: np.random.Generator, size: int, cells: tuple[int, int] = (4, 4)) -> np.ndarray:
    """Smooth value noise [size, size] in [0, 1] with `cells` = (rows, cols) lattice cells."""
    out = []
    grid = rng.uniform(size=(cells[0] + 1, cells[1] + 1))
    for n in cells:
        x = np.linspace(0, n, size, endpoint=False)
        i = x.astype(np.int64)
        f = x - i
        out.append((i, f * f * (3 - 2 * f)))  # smoothstep keeps the lattice invisible
    (iy, fy), (ix, fx) = out
    g00, g01 = grid[iy][:, ix], grid[iy][:, ix + 1]
    g10, g11 = grid[iy + 1][:, ix], grid[iy + 1][:, ix + 1]
    top = g00 + (g01 - g00) * fx
    bot = g10 + (g11 - g10) * fx
    return top + (bot - top) * fy[:, None]


def fbm(rng: np.random.Generator, size: int = TEX, cells: int = 3, octaves: int = 4,
        stretch: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Fractal value noise [size, size] normalised to [0, 1]; `stretch` multiplies (rows, cols) cells."""
    acc = np.zeros((size, size))
    for o in range(octaves):
        c = cells * 2**o
        acc += value_noise(rng, size, (c * stretch[0], c * stretch[1])) / 2**o
    acc -= acc.min()
    return acc / max(acc.max(), 1e-9)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of colours a, b [3] by t [H, W] -> [H, W, 3]."""
    return a + (b - a) * t[..., None]


def _image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y down the rows, x across) in [0, 1), each [size, size]."""
    t = (np.arange(size) + 0.5) / size
    return np.meshgrid(t, t, indexing="ij")


# ------------------------------------------------------------------------------------------- textures
def wood_texture(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Wood grain along the texture's v axis: (rgb [S, S, 3], ring intensity [S, S] in [0, 1])."""
    y, x = _coords(size)
    warp = fbm(rng, size, cells=2, octaves=3, stretch=(1, 3))
    rings = (x * rng.uniform(4, 12) + warp * rng.uniform(1.0, 3.0)) % 1.0
    ring = np.clip(np.abs(rings - 0.5) * 2, 0, 1) ** rng.uniform(2, 6)
    streak = fbm(rng, size, cells=2, octaves=3, stretch=(1, 24))
    light = hsv(rng.uniform(0.05, 0.11), rng.uniform(0.35, 0.65), rng.uniform(0.55, 0.9))
    dark = light * rng.uniform(0.45, 0.7)
    t = np.clip(0.75 * ring + 0.35 * streak - 0.1, 0, 1)
    return _blend(light, dark, t), t


def pattern_texture(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, kind: str,
                    size: int = TEX) -> np.ndarray:
    """Two-colour pattern [S, S, 3]: stripes, checks, dots, bands (horizontal stripes) or plain noise."""
    y, x = _coords(size)
    n = int(rng.integers(2, 9))
    if kind == "stripes":
        ang = rng.choice([0.0, np.pi / 4, np.pi / 2])
        t = ((x * np.cos(ang) + y * np.sin(ang)) * n * 2) % 2 < rng.uniform(0.4, 1.4)
    elif kind == "bands":
        t = (y * n) % 1.0 < rng.uniform(0.15, 0.5)
    elif kind == "checks":
        t = ((np.floor(x * n) + np.floor(y * n)) % 2) == 0
    elif kind == "dots":
        t = np.hypot((x * n) % 1 - 0.5, (y * n) % 1 - 0.5) < rng.uniform(0.15, 0.35)
    else:
        t = fbm(rng, size, cells=int(rng.integers(2, 6))) > 0.5
    rgb = _blend(a, b, t.astype(np.float64))
    return rgb * (0.92 + 0.08 * fbm(rng, size, cells=4))[..., None]


def bricks_texture(rng: np.random.Generator, size: int = TEX) -> np.ndarray:
    """Running-bond brickwork with mortar lines [S, S, 3]."""
    y, x = _coords(size)
    rows = int(rng.integers(6, 14))
    cols = rows // 2
    r = np.floor(y * rows)
    xs = x * cols + 0.5 * (r % 2)
    mortar = (((y * rows) % 1) < 0.12) | ((xs % 1) < 0.06)
    brick = hsv(rng.uniform(0.0, 0.08), rng.uniform(0.4, 0.75), rng.uniform(0.45, 0.75))
    tone = value_noise(rng, size, (rows, cols * 2)) * 0.3 + 0.85
    rgb = brick * tone[..., None] * (0.85 + 0.15 * fbm(rng, size, cells=8))[..., None]
    rgb[mortar] = hsv(0.1, 0.08, rng.uniform(0.6, 0.85))
    return rgb


_SEGMENTS = {  # seven-segment digits: segments a..g lit
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def _draw_digit(draw: ImageDraw.ImageDraw, d: str, x: float, y: float, w: float, h: float, fill: tuple) -> None:
    t = w * 0.2
    boxes = {
        "a": (x, y, x + w, y + t), "g": (x, y + h / 2 - t / 2, x + w, y + h / 2 + t / 2), "d": (x, y + h - t, x + w, y + h),
        "f": (x, y, x + t, y + h / 2), "b": (x + w - t, y, x + w, y + h / 2),
        "e": (x, y + h / 2, x + t, y + h), "c": (x + w - t, y + h / 2, x + w, y + h),
    }
    for s in _SEGMENTS[d]:
        draw.rectangle(boxes[s], fill=fill)


def decal_texture(rng: np.random.Generator, background: np.ndarray, ink: np.ndarray,
                  kind: str, size: int = 256) -> np.ndarray:
    """A painted decal [S, S, 3] on a noisy background: circle, ring, triangle, arrow, cross or number."""
    img = _image(background * (0.9 + 0.1 * fbm(rng, size, cells=3))[..., None])
    draw = ImageDraw.Draw(img)
    fill = tuple(int(c * 255) for c in np.clip(ink, 0, 1))
    s = size
    m = s * rng.uniform(0.15, 0.25)
    border = int(rng.integers(0, 2)) * max(2, s // 24)
    if border:
        draw.rectangle((0, 0, s - 1, s - 1), outline=fill, width=border)
    if kind == "circle":
        draw.ellipse((m, m, s - m, s - m), fill=fill)
    elif kind == "ring":
        draw.ellipse((m, m, s - m, s - m), outline=fill, width=int(s * 0.08))
    elif kind == "triangle":
        draw.polygon([(s / 2, m), (s - m, s - m), (m, s - m)], fill=fill)
    elif kind == "arrow":
        draw.polygon([(m, s * 0.4), (s * 0.55, s * 0.4), (s * 0.55, m), (s - m, s / 2), (s * 0.55, s - m),
                      (s * 0.55, s * 0.6), (m, s * 0.6)], fill=fill)
    elif kind == "cross":
        draw.rectangle((s * 0.4, m, s * 0.6, s - m), fill=fill)
        draw.rectangle((m, s * 0.4, s - m, s * 0.6), fill=fill)
    else:
        digits = str(int(rng.integers(0, 100 if rng.uniform() < 0.6 else 10)))
        w, h = s * 0.22, s * 0.5
        x0 = s / 2 - (len(digits) * w * 1.35 - w * 0.35) / 2
        for i, d in enumerate(digits):
            _draw_digit(draw, d, x0 + i * w * 1.35, (s - h) / 2, w, h, fill)
    return np.asarray(img, dtype=np.float64) / 255.0


DECALS = ("circle", "ring", "triangle", "arrow", "cross", "number")


# ------------------------------------------------------------------------------------------- materials
def make_material(name: str, base: np.ndarray, metallic: float | np.ndarray,
                  roughness: float | np.ndarray) -> PBRMaterial:
    """Wrap a base-colour image [S, S, 3] and metallic/roughness (scalars -> factors, [S, S] maps -> a packed
    metallicRoughnessTexture) as a glTF PBR material."""
    kwargs: dict = {"name": name, "baseColorTexture": _image(base)}
    if np.ndim(metallic) == 0 and np.ndim(roughness) == 0:
        kwargs.update(metallicFactor=float(metallic), roughnessFactor=float(roughness))
    else:
        shape = (np.shape(metallic) if np.ndim(metallic) else np.shape(roughness))
        mr = np.ones(shape + (3,))
        mr[..., 1] = np.broadcast_to(roughness, shape)
        mr[..., 2] = np.broadcast_to(metallic, shape)
        kwargs.update(metallicRoughnessTexture=_image(mr), metallicFactor=1.0, roughnessFactor=1.0)
    return PBRMaterial(**kwargs)


def wood(rng: np.random.Generator) -> PBRMaterial:
    """Varnished or raw wood: grain texture, roughness map following the rings."""
    rgb, t = wood_texture(rng)
    return make_material("wood", rgb, 0.0, np.clip(rng.uniform(0.35, 0.7) + 0.25 * t, 0, 1))


METALS = {
    "steel": (0.62, 0.63, 0.65), "aluminium": (0.8, 0.81, 0.83), "brass": (0.83, 0.66, 0.32),
    "copper": (0.8, 0.48, 0.33), "gold": (0.95, 0.77, 0.35), "iron": (0.36, 0.36, 0.38), "chrome": (0.9, 0.9, 0.92),
}


def metal(rng: np.random.Generator, kind: str | None = None) -> PBRMaterial:
    """A metal (metallic >= 0.9): brushed or plain, sometimes with rust/paint-chip patches in the maps."""
    kind = kind or str(rng.choice(list(METALS)))
    color = np.array(METALS[kind])
    brushed = fbm(rng, TEX, cells=2, octaves=4, stretch=(16, 1)) if rng.uniform() < 0.6 else fbm(rng, TEX, cells=4)
    base = color * (0.9 + 0.1 * brushed)[..., None] * np.ones((TEX, TEX, 1))
    rough = rng.uniform(0.1, 0.45) + 0.15 * brushed
    if rng.uniform() < 0.25:  # rust patches: non-metallic and rough where the noise is high
        patch = fbm(rng, TEX, cells=3) > rng.uniform(0.6, 0.75)
        base[patch] = hsv(0.06, 0.7, 0.4) * (0.8 + 0.2 * brushed[patch, None])
        return make_material(f"metal_{kind}_rust", base, np.where(patch, 0.0, 1.0), np.where(patch, 0.9, rough))
    return make_material(f"metal_{kind}", base, rng.uniform(0.9, 1.0), float(np.clip(rough.mean(), 0, 1)))


def plastic(rng: np.random.Generator, color: np.ndarray | None = None, pattern: str | None = None) -> PBRMaterial:
    """Plastic or paint: a colour (or two-colour pattern), metallic 0, roughness 0.15-0.7."""
    a = random_color(rng) if color is None else color
    if pattern is None:
        pattern = str(rng.choice(["plain", "plain", "plain", "stripes", "checks", "dots", "noise"]))
    if pattern == "plain":
        base = a * (0.95 + 0.05 * fbm(rng, 64, cells=4))[..., None]
    else:
        b = random_color(rng) if rng.uniform() < 0.6 else hsv(0, 0, rng.choice([0.1, 0.95]))
        base = pattern_texture(rng, a, b, pattern)
    return make_material(f"plastic_{pattern}", base, 0.0, rng.uniform(0.15, 0.7))


def ceramic(rng: np.random.Generator) -> PBRMaterial:
    """Glazed ceramic: glossy, plain or banded/dotted."""
    a = random_color(rng, (0.05, 0.7), (0.6, 0.98))
    kind = str(rng.choice(["plain", "bands", "dots", "stripes", "noise"]))
    base = a * np.ones((64, 64, 3)) if kind == "plain" else pattern_texture(rng, a, random_color(rng), kind)
    return make_material(f"ceramic_{kind}", base, 0.0, rng.uniform(0.05, 0.25))


def fabric(rng: np.random.Generator) -> PBRMaterial:
    """Upholstery: checks or stripes (tartan-like), very rough."""
    base = pattern_texture(rng, random_color(rng, value=(0.3, 0.8)), random_color(rng), str(rng.choice(["checks", "stripes", "noise"])))
    weave = fbm(rng, TEX, cells=16, octaves=2)
    return make_material("fabric", base * (0.85 + 0.15 * weave)[..., None], 0.0, rng.uniform(0.8, 1.0))


def rubber(rng: np.random.Generator) -> PBRMaterial:
    """Dark rubber (tyres, grips)."""
    base = hsv(0, 0, rng.uniform(0.06, 0.18)) * (0.8 + 0.2 * fbm(rng, 64, cells=8))[..., None]
    return make_material("rubber", base, 0.0, rng.uniform(0.75, 0.95))


def stone(rng: np.random.Generator) -> PBRMaterial:
    """Stone / concrete: grey-brown fractal noise, rough."""
    n = fbm(rng, TEX, cells=int(rng.integers(2, 6)), octaves=5)
    a = hsv(rng.uniform(0.05, 0.15), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.7))
    return make_material("stone", _blend(a * 0.6, a * 1.3, n), 0.0, np.clip(0.75 + 0.2 * n, 0, 1))


def brick(rng: np.random.Generator) -> PBRMaterial:
    """Brick wall."""
    return make_material("brick", bricks_texture(rng), 0.0, rng.uniform(0.75, 0.95))


def glass(rng: np.random.Generator) -> PBRMaterial:
    """Opaque glossy 'glass' (windows, lenses): dark tinted, smooth, with a light streak."""
    y, x = _coords(64)
    streak = np.clip(1 - np.abs(x + y - 0.8) * 6, 0, 1) * 0.4
    base = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.35)) + streak[..., None]
    return make_material("glass", base, 0.0, rng.uniform(0.02, 0.1))


def skin(rng: np.random.Generator, hue: float) -> PBRMaterial:
    """Fruit-like skin around `hue`: mottled colour with fine speckles."""
    n = fbm(rng, TEX, cells=3)
    a = hsv(hue, rng.uniform(0.6, 0.95), rng.uniform(0.55, 0.9))
    b = hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.5, 0.95), rng.uniform(0.3, 0.7))
    base = _blend(a, b, n)
    speck = value_noise(rng, TEX, (48, 48)) > 0.9
    base[speck] *= 0.7
    return make_material("skin", base, 0.0, rng.uniform(0.25, 0.6))


def decal(rng: np.random.Generator, kind: str | None = None, background: np.ndarray | None = None) -> PBRMaterial:
    """Painted decal on a sign or panel: light or colourful background, contrasting ink, semi-gloss."""
    bg = random_color(rng) if background is None else background
    ink = hsv(0, 0, 0.05 if bg.mean() > 0.5 else 0.95) if rng.uniform() < 0.6 else random_color(rng)
    kind = kind or str(rng.choice(DECALS))
    return make_material(f"decal_{kind}", decal_texture(rng, bg, ink, kind), 0.0, rng.uniform(0.3, 0.6))


def any_surface(rng: np.random.Generator) -> PBRMaterial:
    """A random material from the whole set (weighted towards plastic, wood and metal)."""
    pick = rng.choice(["plastic", "plastic", "wood", "metal", "metal", "ceramic", "stone", "fabric"])
    return {"plastic": plastic, "wood": wood, "metal": metal, "ceramic": ceramic,
            "stone": stone, "fabric": fabric}[str(pick)](rng)
