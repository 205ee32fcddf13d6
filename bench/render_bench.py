"""Renderer throughput: a ~20k-face textured PBR mesh at S = 512 (issue 4).

    python bench/render_bench.py [--device cuda] [--size 512] [--supersample 2] [--repeat 5] [--raycast]

Prints a Markdown table (median of `--repeat` runs after one warm-up): the rasteriser alone (at S * supersample),
the full `render_mesh` (rasterise + G-buffer + GGX shading + downsampling), and with `--raycast` a brute-force
ray-casting baseline (every pixel ray against every triangle, Moller-Trumbore, chunked), measured at a small size
and extrapolated linearly in the number of rays, which is why the rasteriser was chosen (docs/rendering.md).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import trimesh

from pixal3d.render import Material, RenderMesh, random_lighting, rasterize, render_mesh, sample_view


def bumpy_textured_mesh(generator: torch.Generator, device: str) -> RenderMesh:
    """An icosphere (20,480 faces) with radial bumps, spherical UVs, a 1024^2 base-colour and MR texture."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.4)
    v = torch.tensor(sphere.vertices, dtype=torch.float32)
    bumps = 1 + 0.08 * torch.sin(7 * v[:, 0] / 0.4) * torch.cos(5 * v[:, 1] / 0.4)
    v = v * bumps[:, None]
    u = 0.5 + torch.atan2(v[:, 2], v[:, 0]) / (2 * math.pi)
    w = 0.5 + torch.asin((v[:, 1] / v.norm(dim=-1)).clamp(-1, 1)) / math.pi
    base = (torch.rand(1024, 1024, 4, generator=generator) * 255).to(torch.uint8)
    mr = (torch.rand(1024, 1024, 4, generator=generator) * 255).to(torch.uint8)
    material = Material(
        base_color_texture=base, metallic_roughness_texture=mr, metallic_factor=1.0, roughness_factor=1.0
    )
    mesh = RenderMesh(
        vertices=v,
        faces=torch.tensor(sphere.faces),
        materials=[material],
        uvs=torch.stack([u, w], dim=-1),
        normals=torch.tensor(sphere.vertex_normals, dtype=torch.float32),
    )
    return mesh.to(device)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def timed(fn: object, device: str, repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raycast_depth(
    origins: torch.Tensor, directions: torch.Tensor, tri: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Nearest hit distance per ray, brute force: `[R, 3]` rays against `tri [F, 3, 3]`; inf on a miss."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    out = []
    for start in range(0, origins.shape[0], chunk):
        o, d = origins[start : start + chunk, None], directions[start : start + chunk, None]  # (n, 1, 3)
        p = torch.cross(d.expand(-1, e2.shape[0], -1), e2.expand(d.shape[0], -1, -1), dim=-1)  # (n, F, 3)
        det = (e1 * p).sum(-1)
        inv = 1.0 / torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        s = o - tri[:, 0]
        a = (s * p).sum(-1) * inv
        q = torch.cross(s, e1.expand_as(s), dim=-1)
        b = (d * q).sum(-1) * inv
        t = (e2 * q).sum(-1) * inv
        hit = (a >= 0) & (b >= 0) & (a + b <= 1) & (t > 0)
        out.append(torch.where(hit, t, torch.full_like(t, float("inf"))).amin(dim=-1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--supersample", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument(
        "--raycast", action="store_true", help="also time the brute-force ray-casting baseline"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    mesh = bumpy_textured_mesh(generator, args.device)
    view = sample_view(generator, mesh, size=args.size)
    lighting = random_lighting(generator)
    hi = args.size * args.supersample
    uv, depth = view.camera.with_size(hi).project(mesh.vertices)
    screen = torch.cat([uv, depth[:, None]], dim=-1)

    t_raster = timed(lambda: rasterize(screen, mesh.faces, hi, hi), args.device, args.repeat)
    t_render = timed(
        lambda: render_mesh(mesh, view.camera, lighting, supersample=args.supersample),
        args.device,
        args.repeat,
    )
    out = render_mesh(mesh, view.camera, lighting, supersample=args.supersample)
    machine = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"machine: {machine}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(
        f"mesh: {mesh.faces.shape[0]} faces, 1024^2 textures; S = {args.size}, supersample {args.supersample}; "
        f"coverage {float(out.alpha.mean()):.2f}"
    )
    print("| step | median time | per second |")
    print("|---|---|---|")
    print(f"| rasterise {hi}x{hi} | {t_raster * 1e3:.1f} ms | {1 / t_raster:.1f} |")
    print(f"| render_mesh S={args.size} (all outputs) | {t_render * 1e3:.1f} ms | {1 / t_render:.1f} |")
    if args.raycast:
        small = 32
        origins, directions = view.camera.with_size(small).rays(device=args.device)
        tri = mesh.vertices[mesh.faces]
        t_ray = timed(
            lambda: raycast_depth(origins.reshape(-1, 3), directions.reshape(-1, 3), tri, 64),
            args.device,
            max(1, args.repeat // 2),
        )
        scale = (hi * hi) / (small * small)
        print(f"| ray cast {small}x{small} (brute force) | {t_ray * 1e3:.1f} ms | {1 / t_ray:.2f} |")
        print(
            f"| ray cast {hi}x{hi} (extrapolated x{scale:.0f}) | {t_ray * scale:.1f} s | {1 / (t_ray * scale):.3f} |"
        )


if __name__ == "__main__":
    main()
