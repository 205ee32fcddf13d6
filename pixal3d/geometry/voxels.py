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

On disk (`save_voxels` / `load_voxels`, documented in docs/voxel-format.md): one safetensors file with tensors
`coords`, `vertex`, `edges` and optionally `attrs`, and string metadata `format = "pixal3d.voxels"`,
`version = "1"`, `resolution`, `attr_names` (comma-separated `ATTR_NAMES`, empty when there are no attrs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from pixal3d.atomic import atomic_path
from pixal3d.errors import InputError

ATTR_NAMES = ("base_r", "base_g", "base_b", "metallic", "roughness", "alpha")
FORMAT_NAME = "pixal3d.voxels"
FORMAT_VERSION = "1"


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


def save_voxels(path: str | os.PathLike, voxels: SparseVoxels) -> None:
    """Write a voxel set to a safetensors file (format: module docstring), atomically (temp file + rename)."""
    path = Path(path)
    tensors = {
        "coords": voxels.coords.to(torch.int32).contiguous().cpu(),
        "vertex": voxels.vertex.to(torch.float32).contiguous().cpu(),
        "edges": voxels.edges.to(torch.int8).contiguous().cpu(),
    }
    if voxels.attrs is not None:
        tensors["attrs"] = voxels.attrs.to(torch.float32).contiguous().cpu()
    metadata = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "resolution": str(int(voxels.resolution)),
        "attr_names": ",".join(ATTR_NAMES) if voxels.attrs is not None else "",
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_voxels(path: str | os.PathLike, device: torch.device | str = "cpu") -> SparseVoxels:
    """Read a voxel set written by `save_voxels`; `InputError` for a missing, corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"voxel file {str(path)!r} does not exist; check the path (save with save_voxels)")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise InputError(
            f"voxel file {str(path)!r} is not a readable safetensors file ({error}); re-create it with save_voxels"
        ) from error
    if metadata.get("format") != FORMAT_NAME:
        raise InputError(
            f"{str(path)!r} is a safetensors file but not a pixal3d voxel set (format={metadata.get('format')!r})"
        )
    if metadata.get("version") != FORMAT_VERSION:
        raise InputError(
            f"{str(path)!r} has voxel format version {metadata.get('version')!r}; this pixal3d reads version "
            f"{FORMAT_VERSION}: re-create the file with this version's save_voxels"
        )
    return _voxels_from_tensors(tensors, metadata, path)


def _voxels_from_tensors(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path
) -> SparseVoxels:
    expected = {"coords": torch.int32, "vertex": torch.float32, "edges": torch.int8}
    if metadata.get("attr_names"):
        expected["attrs"] = torch.float32
    problems = [
        f"{name} ({tensors[name].dtype}, {list(tensors[name].shape)})"
        if name in tensors
        else f"{name} missing"
        for name, dtype in expected.items()
        if name not in tensors or tensors[name].dtype != dtype or tensors[name].ndim != 2
    ]
    n = tensors["coords"].shape[0] if "coords" in tensors else -1
    width = {"coords": 3, "vertex": 3, "edges": 3, "attrs": len(ATTR_NAMES)}
    problems += [
        f"{name} shape {list(tensors[name].shape)}"
        for name in expected
        if name in tensors and tensors[name].ndim == 2 and tuple(tensors[name].shape) != (n, width[name])
    ]
    if problems or metadata.get("attr_names", "") not in ("", ",".join(ATTR_NAMES)):
        raise InputError(
            f"voxel file {str(path)!r} is corrupt: {', '.join(problems) or 'unknown attr_names'}"
        )
    try:
        resolution = int(metadata["resolution"])
    except (KeyError, ValueError) as error:
        raise InputError(f"voxel file {str(path)!r} has no valid resolution in its metadata") from error
    return SparseVoxels(
        coords=tensors["coords"],
        vertex=tensors["vertex"],
        edges=tensors["edges"],
        attrs=tensors.get("attrs"),
        resolution=resolution,
    )
