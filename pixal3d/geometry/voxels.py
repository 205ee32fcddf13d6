"""`SparseVoxels`: the asset representation (DESIGN section 4), shared by decoding, training targets and export.

A voxel set at resolution `R` in the volume cube `[-0.5, 0.5]^3` (volume frame: +x right, +y up, +z towards
the input camera; DESIGN section 2). Voxel `(i, j, k)` covers `[-0.5 + i/R, -0.5 + (i+1)/R)` per axis.

Fields (all on one device):
- `coords [N, 3] int32 (i, j, k)`: voxels the surface passes through, unique.
- `vertex [N, 3] float32 in [0, 1]^3`: the dual vertex inside each voxel, in voxel-local units;
  its volume position is `-0.5 + (coords + vertex) / R`.
- `edges [N, 3] int8 in {-1, 0, +1}`: whether the voxel's primal edge along +x / +y / +z, starting at its min
  corner (grid corner `(i, j, k)`), crosses the surface; +1 when the surface normal at the crossing points
  along the +axis, -1 when against it.
- `attrs [N, 6] float32 in [0, 1]` or None: base colour in sRGB (3), metallic, roughness, alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ATTR_NAMES = ("base_r", "base_g", "base_b", "metallic", "roughness", "alpha")


@dataclass(eq=False)
class SparseVoxels:
    """A sparse PBR voxel set at one resolution; see the module docstring for every field's format."""

    coords: torch.Tensor
    vertex: torch.Tensor
    edges: torch.Tensor
    attrs: torch.Tensor | None
    resolution: int

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def positions(self) -> torch.Tensor:
        """Dual vertices in the volume frame: `[N, 3] float32`."""
        return -0.5 + (self.coords.float() + self.vertex.float()) / self.resolution

    def to(self, device: torch.device | str) -> SparseVoxels:
        return SparseVoxels(
            coords=self.coords.to(device),
            vertex=self.vertex.to(device),
            edges=self.edges.to(device),
            attrs=None if self.attrs is None else self.attrs.to(device),
            resolution=self.resolution,
        )
