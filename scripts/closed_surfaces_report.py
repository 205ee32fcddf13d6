"""Measure edge flags vs corner signs on procedural assets; write the "## Closed surfaces" section of
docs/representation.md.

    python scripts/closed_surfaces_report.py [--seeds 0 1 2 3 4 5 6 7] [--resolutions 64 128] [--noise 0.1]

For each seed, `pixal3d.data.procedural.generate(seed)` is voxelised (`mesh_to_voxels`, ground-truth edge flags)
and meshed (`voxels_to_mesh`) through several representations of the crossings:

- `edge flags`: the ground-truth flags as they are (today's representation: its own round trip is exact);
- `corners`: ground-truth corner signs (`corner_targets`) -> `corner_voxels`, open voxels on their edge flags;
- `corners, fill holes`: the same, where only a missed ground-truth crossing makes a voxel open (added crossings
  are kept: they close holes smaller than a voxel);
- `corners only`: corner signs everywhere, no fallback (open parts are lost);
- `... dropped`, `... flipped`: what independent per-voxel mistakes at rate p do to each, i.e. a decoder that is
  right 1 - p of the time (open flags exact): a crossed edge flag dropped, a voxel's corner logit flipped before
  the voxels of a corner are averaged, or a voxel missing from the decoded set (an occupancy miss; the corner
  decoder adds back the voxels its crossings need).

Boundary-edge ratio = edges of one triangle / all edges, vertices merged by position; components = connected
components of that merged mesh. The section is replaced in place; the rest of the page is kept.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pixal3d.data.procedural import generate
from pixal3d.geometry.corners import corner_targets, corner_voxels
from pixal3d.geometry.dual_grid import mesh_to_voxels
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.geometry.voxels import SparseVoxels

HEADING = "## Closed surfaces: measured"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "representation.md"


def openness(mesh: trimesh.Trimesh) -> tuple[float, int]:
    """`(boundary-edge ratio, connected components)` of a triangle mesh, vertices merged by position."""
    if len(mesh.faces) == 0:
        return float("nan"), 0
    merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    edges = np.sort(merged.edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    n = len(merged.vertices)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    used = np.unique(merged.faces)
    return float((counts == 1).sum() / len(counts)), int(len(np.unique(labels[used])))


def _subset(v: SparseVoxels, keep: torch.Tensor) -> SparseVoxels:
    return SparseVoxels(v.coords[keep], v.vertex[keep], v.edges[keep], None, v.resolution)


def variants(v: SparseVoxels, noise: float, generator: torch.Generator) -> dict[str, tuple[SparseVoxels, float]]:
    """`name -> (voxels to mesh, open-voxel fraction)` for every representation of the module docstring."""
    r = v.resolution
    inside, open_strict = corner_targets(v.coords, v.edges, r)
    _, open_fill = corner_targets(v.coords, v.edges, r, fill_holes=True)
    logits = inside.float() * 2 - 1
    drop = (torch.rand(v.edges.shape, generator=generator) < noise) & (v.edges != 0)
    flip = torch.rand(logits.shape, generator=generator) < noise
    keep = torch.rand(len(v), generator=generator) >= noise
    opened = float(open_strict.float().mean())
    return {
        "edge flags": (v, 0.0),
        "corners": (corner_voxels(v, logits, open_strict), opened),
        "corners, fill holes": (corner_voxels(v, logits, open_fill), float(open_fill.float().mean())),
        "corners only": (corner_voxels(v, logits), 0.0),
        f"edge flags, {noise:g} of crossed flags dropped": (
            SparseVoxels(v.coords, v.vertex, torch.where(drop, torch.zeros_like(v.edges), v.edges), None, r), 0.0),
        f"corners, {noise:g} of voxel corners flipped": (
            corner_voxels(v, torch.where(flip, -logits, logits), open_strict), opened),
        f"edge flags, {noise:g} of voxels dropped": (_subset(v, keep), 0.0),
        f"corners, {noise:g} of voxels dropped": (corner_voxels(_subset(v, keep), logits[keep], open_strict[keep]),
                                                   opened),
    }


def recovered(truth: SparseVoxels, result: SparseVoxels) -> float:
    """Fraction of the ground truth's crossed edges that `result` crosses with the same sign."""
    r = truth.resolution
    keys = lambda c: (c[:, 0].long() * r + c[:, 1]) * r + c[:, 2]  # noqa: E731
    result_keys = keys(result.coords)
    order = torch.argsort(result_keys)
    rows = order[torch.searchsorted(result_keys[order], keys(truth.coords)).clamp_max(len(result) - 1)]
    found = result_keys[rows] == keys(truth.coords)
    edges = torch.where(found[:, None], result.edges[rows], torch.zeros_like(truth.edges))
    crossed = truth.edges != 0
    return float((edges[crossed] == truth.edges[crossed]).float().mean())


def measure(seeds: list[int], resolution: int, noise: float) -> dict[str, list[tuple[float, float, int, float]]]:
    """`variant -> per seed (recovered crossings, boundary-edge ratio, components, open fraction)`."""
    rows: dict[str, list[tuple[float, float, int, float]]] = {}
    for seed in seeds:
        start = time.perf_counter()
        v = mesh_to_voxels(generate(seed).scene, resolution, with_attributes=False)
        for name, (voxels, open_fraction) in variants(v, noise, torch.Generator().manual_seed(seed)).items():
            ratio, parts = openness(voxels_to_mesh(voxels))
            rows.setdefault(name, []).append((recovered(v, voxels), ratio, parts, open_fraction))
        print(f"R={resolution} seed {seed}: {len(v)} voxels, {time.perf_counter() - start:.1f} s", flush=True)
    return rows


def section(seeds: list[int], resolutions: list[int], noise: float) -> str:
    lines = [HEADING, "", f"Written by `scripts/closed_surfaces_report.py` (procedural seeds {seeds}; method in its "
             "docstring). Per cell: mean over the seeds (median components; min-max in brackets).", ""]
    for r in resolutions:
        rows = measure(seeds, r, noise)
        lines += [f"R = {r}:", "",
                  "| crossings from | GT crossings recovered | boundary-edge ratio | components | open voxels |",
                  "|---|---|---|---|---|"]
        for name, values in rows.items():
            rec, ratio, parts, opened = (np.array(x, dtype=float) for x in zip(*values, strict=True))
            lines.append(f"| {name} | {rec.mean():.4f} | {np.nanmean(ratio):.5f} ({np.nanmin(ratio):.5f}-"
                         f"{np.nanmax(ratio):.5f}) | {np.median(parts):.0f} ({parts.min():.0f}-{parts.max():.0f}) | "
                         f"{opened.mean():.4f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = section(args.seeds, args.resolutions, args.noise)
    page = args.out.read_text() if args.out.exists() else "# Asset representation: measured figures\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(page):
        page = pattern.sub(lambda _: text + "\n", page)
    else:
        page = page.rstrip("\n") + "\n\n" + text + "\n"
    args.out.write_text(page)


if __name__ == "__main__":
    main()
