"""A tiny synthetic data source: unions of spheres and rotated boxes, voxelised analytically with torch.

Used by tests and by `"data": {"kind": "synthetic"}` runs until the data engine's shard readers and on-the-fly
generator plug in through the same interface (an iterable of batches with `state_dict` / `load_state_dict`).

Objects live in the volume cube (DESIGN section 2) with a margin. The signed distance is evaluated at the grid
corners of resolution R; a voxel is active when its 8 corners do not share one sign (the surface passes through
it). Edge flags follow DESIGN section 4 (+1 when the edge goes from inside to outside, i.e. the outward normal
points along +axis); the dual vertex is the mean of the voxel's edge crossings (linear interpolation of the
distance), in voxel-local `[0, 1]^3`. Attributes: each primitive has a base colour (sRGB), metallic and roughness,
modulated by a stripe pattern; alpha is 1.

A batch is a dict of tensors (on the source's device: voxelising on the GPU keeps a GPU run fed):
- `coords [N, 4] int32 (b, i, j, k)` at R_hr, sorted by key (`pixal3d.sparse.coords_to_keys`);
- `vertex [N, 3] float32`, `edges [N, 3] int8`, `attrs [N, 6] float32` (rows of `coords`);
- `occupancy [B, 1, Rc, Rc, Rc] float32`: coarse voxels that hold a fine voxel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.training.config import DataConfig

_MARGIN = 0.05  # empty border (volume units) kept around every object


def _random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # unique QR -> uniform rotation (up to reflection)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _primitives(g: torch.Generator, max_primitives: int) -> list[dict[str, torch.Tensor | str]]:
    count = int(torch.randint(1, max_primitives + 1, (1,), generator=g))
    prims = []
    for _ in range(count):
        kind = "sphere" if float(torch.rand(1, generator=g)) < 0.5 else "box"
        if kind == "sphere":
            size = 0.12 + 0.18 * torch.rand(1, generator=g, dtype=torch.float64)
            reach = float(size)
        else:
            size = 0.06 + 0.16 * torch.rand(3, generator=g, dtype=torch.float64)
            reach = float(size.norm())
        span = max(0.5 - _MARGIN - reach, 0.0)
        prims.append({
            "kind": kind,
            "size": size,
            "center": (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * span,
            "rotation": _random_rotation(g),
            "material": torch.rand(5, generator=g),  # base colour (3), metallic, roughness
            "stripes": 4 + 12 * torch.rand(1, generator=g),
        })
    return prims


def _sdf(prim: dict, points: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside) of one primitive at `points [..., 3] float64`."""
    p = (points - prim["center"]) @ prim["rotation"]  # into the primitive's frame
    if prim["kind"] == "sphere":
        return p.norm(dim=-1) - prim["size"][0]
    q = p.abs() - prim["size"]
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


# Corner `a * 4 + b * 2 + c` of a voxel sits at offset (a, b, c); its 12 edges as (corner from, corner to, axis).
_CORNERS = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float64)
_EDGES = [(o, o + step, axis) for axis, step in ((0, 4), (1, 2), (2, 1)) for o in range(8) if not o & step]


def _dual_vertices(s: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Corner distances `s [R+1]^3` -> (coords `[N, 3]` key order, vertex `[N, 3]`, edges `[N, 3]` int8)."""
    inside = (s < 0).double()[None, None]
    any_in = F.max_pool3d(inside, 2, stride=1)[0, 0] > 0
    all_in = -F.max_pool3d(-inside, 2, stride=1)[0, 0] > 0
    coords = torch.nonzero(any_in & ~all_in)  # (N, 3): surface voxels, row-major = key order
    corners = _CORNERS.to(s.device)
    corner = coords[:, None, :] + corners.long()  # (N, 8, 3)
    sc = s[corner[..., 0], corner[..., 1], corner[..., 2]]  # (N, 8) corner distances
    total = torch.zeros(coords.shape[0], 3, dtype=torch.float64, device=s.device)
    count = torch.zeros(coords.shape[0], 1, dtype=torch.float64, device=s.device)
    for a, b, axis in _EDGES:
        s0, s1 = sc[:, a], sc[:, b]
        cross = (s0 < 0) != (s1 < 0)
        t = (s0 / torch.where(cross, s0 - s1, torch.ones_like(s0))).clamp(0, 1)
        point = corners[a].expand(coords.shape[0], 3).clone()
        point[:, axis] = t
        total += point * cross[:, None]
        count += cross[:, None]
    vertex = total / count.clamp_min(1)
    # The voxel's own edges start at its min corner (corner 0) and end at corners 4 (x), 2 (y), 1 (z).
    ends = sc[:, [4, 2, 1]] < 0
    start = (sc[:, :1] < 0).expand_as(ends)
    edges = (start & ~ends).to(torch.int8) - (~start & ends).to(torch.int8)
    return coords, vertex, edges


def synthetic_voxels(seed: int, index: int, resolution: int, max_primitives: int = 3,
                     device: torch.device | str = "cpu") -> SparseVoxels:
    """Object `index` of the synthetic set `seed` as `SparseVoxels` at `resolution` (attrs included).

    The object depends only on `(seed, index)` (drawn on the CPU); `device` only says where the voxelisation runs.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    prims = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in p.items()}
             for p in _primitives(g, max_primitives)]
    axis = torch.arange(resolution + 1, dtype=torch.float64, device=device) / resolution - 0.5
    corners = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # (R+1, R+1, R+1, 3)
    s = torch.stack([_sdf(p, corners) for p in prims]).min(dim=0).values  # union
    coords, vertex, edges = _dual_vertices(s, resolution)
    vertex = vertex.float()
    points = -0.5 + (coords.double() + vertex.double()) / resolution
    owner = torch.stack([_sdf(p, points).abs() for p in prims]).argmin(dim=0)  # primitive each voxel lies on
    materials = torch.stack([p["material"] for p in prims])[owner]  # (N, 5)
    stripes = torch.stack([p["stripes"] for p in prims])[owner]  # (N, 1)
    shade = 0.75 + 0.25 * torch.sin(stripes * math.pi * points[:, 1:2].float())
    attrs = torch.cat([materials[:, :3] * shade, materials[:, 3:], torch.ones_like(stripes)], dim=1)
    return SparseVoxels(coords=coords.int(), vertex=vertex, edges=edges, attrs=attrs.float(),
                        resolution=resolution)


def collate_voxels(samples: list[SparseVoxels], coarse_resolution: int) -> dict[str, torch.Tensor]:
    """`SparseVoxels` (each key-sorted, one resolution) -> a batch dict (see the module docstring)."""
    r = samples[0].resolution
    factor = r // coarse_resolution
    occupancy = torch.zeros(len(samples), 1, coarse_resolution, coarse_resolution, coarse_resolution,
                            device=samples[0].device)
    for b, v in enumerate(samples):
        c = v.coords.long() // factor
        occupancy[b, 0, c[:, 0], c[:, 1], c[:, 2]] = 1.0
    batch_index = torch.cat([torch.full((len(v), 1), b, dtype=torch.int32, device=v.device)
                             for b, v in enumerate(samples)])
    return {
        "coords": torch.cat([batch_index, torch.cat([v.coords for v in samples])], dim=1),
        "vertex": torch.cat([v.vertex for v in samples]),
        "edges": torch.cat([v.edges for v in samples]),
        "attrs": torch.cat([v.attrs for v in samples]),
        "occupancy": occupancy,
    }


class SyntheticSource:
    """Endless batches of synthetic objects for one rank; the position is the number of batches drawn.

    Rank `r` of `W` draws, for its `n`-th batch, objects `n * W * B + r * B + (0 .. B-1)`, so the global batch
    at every step is the same whatever the rank count (and after a resume).
    """

    def __init__(self, config: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def next_batch(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        start = (self.position * self.world_size + self.rank) * self.batch_size
        indices = range(start, start + self.batch_size)
        if cfg.num_objects:
            indices = [i % cfg.num_objects for i in indices]
        samples = [synthetic_voxels(cfg.seed, i, cfg.resolution, cfg.max_primitives, self.device) for i in indices]
        self.position += 1
        return collate_voxels(samples, cfg.coarse_resolution)
