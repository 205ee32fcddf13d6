"""Export-chain timings (issue 3): `pixal3d convert` on a 100k-face textured mesh, and voxels -> GLB.

    python bench/export_bench.py [--resolution 256] [--faces 100000] [--texture-size 2048] [--threads N]

1. convert: a 100,000-face textured mesh (a bumpy lat-long sphere with UVs and a 1024^2 base-colour texture,
   written to a temporary GLB) -> `convert_file` at R (read, normalise, voxelise, mesh, clean, simplify to FACES,
   bake, write). Target: <= 20 s at R = 256 on the 2-core dev CPU.
2. export: a voxel set whose dual-grid mesh has ~200,000 faces -> `voxels_to_glb` with FACES and 2048^2 textures.
   Target: <= 15 s.

Each run is timed once end to end (wall and process CPU seconds); the stage breakdown comes from the library's own
log records. The figures go into docs/benchmarks.md by hand, with the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from pixal3d.geometry.dual_grid import mesh_to_voxels, normalize_to_unit_cube
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.geometry.export import convert_file, voxels_to_glb


class StageLog(logging.Handler):
    """Keeps the export chain's timing messages (INFO from export/gltf, DEBUG 'bake stage' from bake)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " s" in message or "wrote" in message:
            self.lines.append(f"{record.name.rsplit('.', 1)[-1]}: {message}")


def bumpy_sphere(faces: int = 100_000, radius: float = 0.4) -> trimesh.Trimesh:
    """A lat-long sphere of about `faces` triangles with radial bumps, UVs and a 1024^2 base-colour texture."""
    n_lon = int(round(np.sqrt(faces)))
    n_lat = faces // (2 * n_lon) + 1
    lon = np.linspace(0, 2 * np.pi, n_lon + 1)
    lat = np.linspace(0.02, np.pi - 0.02, n_lat + 1)
    lo, la = np.meshgrid(lon, lat, indexing="ij")  # (n_lon + 1, n_lat + 1); the seam column is duplicated
    r = radius * (1 + 0.05 * np.sin(9 * lo) * np.sin(7 * la))
    xyz = np.stack([r * np.sin(la) * np.cos(lo), r * np.cos(la), r * np.sin(la) * np.sin(lo)], -1).reshape(
        -1, 3
    )
    uv = np.stack([lo / (2 * np.pi), 1 - la / np.pi], -1).reshape(-1, 2)
    idx = np.arange((n_lon + 1) * (n_lat + 1)).reshape(n_lon + 1, n_lat + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    yy, xx = np.mgrid[:1024, :1024]
    image = np.stack([(xx // 64 % 2) * 180 + 40, (yy // 64 % 2) * 150 + 60, 120 + 0 * xx], -1).astype(
        np.uint8
    )
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=0.7
    )
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(xyz, tris, visual=visual, process=False)


def timed(label: str, fn, log: StageLog) -> float:
    log.lines.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\n### {label}\n\nwall {wall:.1f} s, process CPU {cpu:.1f} s\n")
    for line in log.lines:
        print(f"- {line}")
    return wall


def machine() -> str:
    names = (
        [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ]
        if Path("/proc/cpuinfo").is_file()
        else []
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{names[0] if names else platform.processor()} ({len(os.sched_getaffinity(0))} cores), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, 1-min load average {load:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--texture-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    log = StageLog()
    logging.getLogger("pixal3d").addHandler(log)
    logging.getLogger("pixal3d").setLevel(logging.DEBUG)
    print(f"Machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        source = bumpy_sphere(100_000)
        src = Path(tmp) / "source.glb"
        source.export(src)
        timed(
            f"convert: {len(source.faces):,}-face textured GLB, R = {args.resolution}, faces {args.faces:,}, "
            f"{args.texture_size}^2",
            lambda: convert_file(
                src, Path(tmp) / "converted.glb", args.resolution, args.faces, args.texture_size
            ),
            log,
        )

        # ~100k voxels -> a ~200k-face dual-grid mesh. A surface crosses about 1.5 * area * R^2 voxels (measured
        # on this sphere: oblique faces cross more voxels than their area).
        radius = float(np.sqrt(100_000 / (1.5 * args.resolution**2 * 4 * np.pi)))
        sphere = normalize_to_unit_cube(bumpy_sphere(200_000, radius), margin=0.5 - radius)
        voxels = mesh_to_voxels(sphere, args.resolution)
        fine_faces = len(voxels_to_mesh(voxels).faces)
        timed(
            f"export: {len(voxels):,} voxels ({fine_faces:,}-face dual-grid mesh) -> GLB, faces {args.faces:,}, "
            f"{args.texture_size}^2",
            lambda: voxels_to_glb(voxels, Path(tmp) / "exported.glb", args.faces, args.texture_size),
            log,
        )
        sizes = {p.name: p.stat().st_size / 2**20 for p in Path(tmp).glob("*.glb")}
        print("\nGLB sizes (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(sizes.items())))


if __name__ == "__main__":
    main()
