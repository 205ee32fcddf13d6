"""Contact sheet of procedural objects: `python scripts/procedural_sheet.py [-o docs/images/procedural.png]`.

Renders seeds 0..N-1 with a tiny stand-in preview renderer (`render_preview`: a numpy z-buffer splat of densely
sampled, textured surface points with Lambert + a crude metallic/roughness highlight, orthographic 3/4 view)
until the real renderer in `pixal3d/render/` exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw

from pixal3d.data.procedural import generate


def _lookup(image: Image.Image | None, uv: np.ndarray, channels: int = 3) -> np.ndarray:
    """Nearest-texel lookup of `image` at uv [N, 2] (v up) -> [N, channels] float in [0, 1]."""
    if image is None:
        return np.ones((len(uv), channels))
    tex = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    h, w = tex.shape[:2]
    x = np.clip((uv[:, 0] % 1.0) * w, 0, w - 1).astype(np.int64)
    y = np.clip((1.0 - uv[:, 1] % 1.0) * h, 0, h - 1).astype(np.int64)
    return tex[y, x, :channels]


def _sample_part(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator):
    """Area-weighted surface samples: points [N, 3], normals [N, 3], base [N, 3], metallic [N], roughness [N]."""
    tri = mesh.vertices[mesh.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    face = rng.choice(len(area), size=count, p=area / area.sum())
    r = rng.uniform(size=(count, 2))
    flip = r.sum(1) > 1
    r[flip] = 1 - r[flip]
    bary = np.c_[1 - r.sum(1), r]
    pts = np.einsum("nk,nkd->nd", bary, tri[face])
    uv = np.einsum("nk,nkd->nd", bary, mesh.visual.uv[mesh.faces[face]])
    normal = cross[face] / np.maximum(area[face, None], 1e-12)
    mat = mesh.visual.material
    base = _lookup(mat.baseColorTexture, uv) ** 2.2  # sRGB -> linear
    metallic = np.full(count, 1.0 if mat.metallicFactor is None else mat.metallicFactor)
    rough = np.full(count, 1.0 if mat.roughnessFactor is None else mat.roughnessFactor)
    if mat.metallicRoughnessTexture is not None:
        mr = _lookup(mat.metallicRoughnessTexture, uv)
        rough, metallic = rough * mr[:, 1], metallic * mr[:, 2]
    return pts, normal, base, metallic, rough


def render_preview(scene: trimesh.Scene, size: int = 192, points: int = 250_000, seed: int = 0) -> Image.Image:
    """Orthographic 3/4-view splat render of a procedural scene inside [-0.5, 0.5]^3 -> RGB image [size, size]."""
    rng = np.random.default_rng(seed)
    meshes = list(scene.geometry.values())
    areas = np.array([m.area for m in meshes])
    counts = np.maximum((points * areas / areas.sum()).astype(int), 200)
    samples = [_sample_part(m, c, rng) for m, c in zip(meshes, counts, strict=True)]
    pts, nrm, base, metal, rough = (np.concatenate(x) for x in zip(*samples, strict=True))
    yaw, pitch = np.radians(35), np.radians(22)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    view = rx @ ry  # world -> view (camera looks down -z)
    p, n = pts @ view.T, nrm @ view.T
    n[n[:, 2] < 0] *= -1  # thin/open parts are seen from both sides
    light = np.array([-0.4, 0.7, 0.6]) / np.linalg.norm([-0.4, 0.7, 0.6])
    ndl = np.clip(n @ light, 0, 1)
    refl = 2 * n[:, 2:3] * n - np.array([0, 0, 1.0])  # reflection of the view direction
    sky = 0.35 + 0.65 * np.clip(0.5 + 0.5 * refl[:, 1], 0, 1)
    half = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])
    spec = (1 - rough) ** 2 * np.clip(n @ half, 0, 1) ** (2 / np.maximum(rough**2, 0.01))
    m = metal[:, None]
    color = base * (0.2 + 0.8 * ndl[:, None]) * (1 - m) + base * sky[:, None] * m + spec[:, None] * (0.04 + 0.96 * base * m)
    color = np.clip(color, 0, 1) ** (1 / 2.2)
    px = ((p[:, 0] / 1.15 + 0.5) * size).astype(np.int64)
    py = ((0.5 - p[:, 1] / 1.15) * size).astype(np.int64)
    ok = (px >= 0) & (px < size - 1) & (py >= 0) & (py < size - 1)
    img = np.ones((size, size, 3)) * np.linspace(0.95, 0.8, size)[:, None, None]
    # 2x2 splats, nearest surface wins: sort by (pixel, depth) and keep the first of each pixel
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]
    idx = np.concatenate([(py[ok] + dy) * size + px[ok] + dx for dx, dy in offsets])
    depth = np.tile(-p[ok, 2], len(offsets))
    col = np.tile(color[ok], (len(offsets), 1))
    order = np.lexsort((depth, idx))
    first = order[np.r_[True, np.diff(idx[order]) != 0]]
    img.reshape(-1, 3)[idx[first]] = col[first]
    return Image.fromarray((img * 255 + 0.5).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/procedural.png"))
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    rows = -(-args.count // args.cols)
    sheet = Image.new("RGB", (args.cols * args.size, rows * args.size), "white")
    draw = ImageDraw.Draw(sheet)
    t_gen = 0.0
    for seed in range(args.count):
        t = time.perf_counter()
        obj = generate(seed)
        t_gen += time.perf_counter() - t
        tile = render_preview(obj.scene, args.size, seed=seed)
        x, y = (seed % args.cols) * args.size, (seed // args.cols) * args.size
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + 3), f"{seed}: {obj.family}", fill=(30, 30, 30))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    sheet.save(tmp, format="PNG", optimize=True)
    tmp.replace(args.output)
    print(f"wrote {args.output}: {args.count} objects, {t_gen / args.count * 1000:.0f} ms/object to generate")


if __name__ == "__main__":
    main()
