"""Sparse voxel tensors: active voxels of an `R^3` grid with a feature row each (DESIGN section 5).

`SparseTensor(coords [N, 4] int32 (b, i, j, k), feats [N, C], resolution R)` holds a batch of sparse sets. Rows
are grouped by batch element (`coords[:, 0]` non-decreasing), so each element's rows are one contiguous slice
`batch_offsets[b] : batch_offsets[b + 1]` (what variable-length attention needs); inside an element the order
is free. Coordinates are unique.

The few ops the cascade needs, in pure PyTorch (no spconv / torchsparse):
- hashing: `(b, i, j, k)` -> one int64 key; a sorted key table and `searchsorted` find any coordinate;
- neighbourhood gather: the row index of each voxel's `k^3` neighbours (-1 where empty);
- `subdivide` (x2: each voxel -> 8 children at `2R`), `downsample` (children -> parent at `R / 2`, mean),
  `prune` (keep a mask);
- `SparseConv3d`: a submanifold 3D convolution (outputs on the input's voxels) built from the gather; it equals
  `nn.Conv3d(padding=k // 2)` on a dense grid that is zero outside the active voxels, read at those voxels.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


def coords_to_keys(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """`coords [N, 4] (b, i, j, k)` -> `[N] int64` keys `((b R + i) R + j) R + k`, ordered like the tuples.

    Coordinates outside `[0, R)` must be filtered first (they would alias other voxels).
    """
    c = coords.long()
    r = resolution
    return ((c[:, 0] * r + c[:, 1]) * r + c[:, 2]) * r + c[:, 3]


def keys_to_coords(keys: torch.Tensor, resolution: int) -> torch.Tensor:
    """Inverse of `coords_to_keys`: `[N] int64` -> `[N, 4] int32 (b, i, j, k)`."""
    r = resolution
    k = keys % r
    j = (keys // r) % r
    i = (keys // (r * r)) % r
    b = keys // (r * r * r)
    return torch.stack([b, i, j, k], dim=1).int()


def kernel_offsets(kernel_size: int = 3, device: torch.device | str | None = None) -> torch.Tensor:
    """`[k^3, 3] int64` neighbour offsets `(di, dj, dk)` in `nn.Conv3d` weight order (i slowest, k fastest)."""
    half = kernel_size // 2
    axis = torch.arange(-half, kernel_size - half, device=device)
    di, dj, dk = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([di, dj, dk], dim=-1).reshape(-1, 3)


@dataclass(eq=False)
class SparseTensor:
    """A batch of sparse voxel sets with one feature row per active voxel.

    Attributes:
        coords: `[N, 4] int32 (b, i, j, k)`, unique, grouped by batch index (non-decreasing `b`), `0 <= i, j, k < R`.
        feats: `[N, C]` any float dtype, on the same device as `coords`.
        resolution: grid resolution `R` of `coords`.
        batch_size: number of batch elements `B` (elements may be empty); None means `max(b) + 1`.
    """

    coords: torch.Tensor
    feats: torch.Tensor
    resolution: int
    batch_size: int | None = None
    _sorted_keys: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.coords.ndim != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4] (b, i, j, k), got {tuple(self.coords.shape)}")
        if self.coords.dtype != torch.int32:
            self.coords = self.coords.int()
        if self.feats.ndim != 2 or self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"feats must be [N={self.coords.shape[0]}, C] (one row per voxel), got {tuple(self.feats.shape)}"
            )
        b = self.coords[:, 0]
        if b.numel() > 1 and bool((b[1:] < b[:-1]).any()):
            raise ValueError("coords must be grouped by batch index (non-decreasing b); use SparseTensor.sorted()")
        if self.batch_size is None:
            self.batch_size = int(b.max()) + 1 if b.numel() else 0

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def grouped(cls, coords: torch.Tensor, feats: torch.Tensor, resolution: int, batch_size: int) -> SparseTensor:
        """Build from rows known to be valid (unique, grouped by batch index, int32), e.g. slices of valid tensors
        put back together: no checks, so no host read of the coordinates (a GPU sync)."""
        out = cls.__new__(cls)
        out.coords, out.feats, out.resolution, out.batch_size, out._sorted_keys = coords, feats, resolution, \
            batch_size, None
        return out

    @classmethod
    def sorted(cls, coords: torch.Tensor, feats: torch.Tensor, resolution: int, batch_size: int | None = None):
        """Build from rows in any order: sorts them by key (batch-major), which the constructor requires."""
        order = torch.argsort(coords_to_keys(coords, resolution))
        return cls(coords[order], feats[order], resolution, batch_size)

    @classmethod
    def from_dense(cls, grid: torch.Tensor, mask: torch.Tensor | None = None) -> SparseTensor:
        """`grid [B, C, R, R, R]` -> the voxels where `mask [B, R, R, R]` (default: any channel non-zero)."""
        if mask is None:
            mask = (grid != 0).any(dim=1)
        idx = torch.nonzero(mask)  # (N, 4) b, i, j, k in key order
        feats = grid.permute(0, 2, 3, 4, 1)[mask]  # (B, R, R, R, C) -> (N, C)
        return cls(idx.int(), feats, grid.shape[-1], grid.shape[0])

    def replace(self, feats: torch.Tensor | None = None, coords: torch.Tensor | None = None) -> SparseTensor:
        """A new tensor with new `feats` (same voxels, the key table is shared) and/or new `coords`."""
        feats = self.feats if feats is None else feats
        if coords is not None:
            return SparseTensor(coords, feats, self.resolution, self.batch_size)
        if feats.ndim != 2 or feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats must be [N={self.coords.shape[0]}, C], got {tuple(feats.shape)}")
        # Same (already validated) voxels: skip the constructor's checks, which would sync a GPU every call.
        out = copy.copy(self)
        out.feats = feats
        return out

    def to(self, *args, **kwargs) -> SparseTensor:
        """Move/cast the features like `Tensor.to`; coordinates follow the device."""
        feats = self.feats.to(*args, **kwargs)
        return SparseTensor(self.coords.to(feats.device), feats, self.resolution, self.batch_size)

    def dense(self) -> torch.Tensor:
        """`[B, C, R, R, R]`, zero at empty voxels (tests and small grids only)."""
        r = self.resolution
        out = self.feats.new_zeros(self.batch_size, r, r, r, self.feats.shape[1])
        c = self.coords.long()
        out[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = self.feats
        return out.permute(0, 4, 1, 2, 3)  # (B, R, R, R, C) -> (B, C, R, R, R)

    # ----------------------------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, int]:
        """`(N, C)`."""
        return tuple(self.feats.shape)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def batch_index(self) -> torch.Tensor:
        """`[N] int64` batch element of every row."""
        return self.coords[:, 0].long()

    @property
    def counts(self) -> torch.Tensor:
        """`[B] int64` rows per batch element."""
        return torch.bincount(self.batch_index, minlength=self.batch_size)

    @property
    def batch_offsets(self) -> torch.Tensor:
        """`[B + 1] int64`: element `b` is rows `offsets[b] : offsets[b + 1]`."""
        return F.pad(torch.cumsum(self.counts, 0), (1, 0))

    def unbind(self) -> list[torch.Tensor]:
        """Per-element feature slices `[N_b, C]`."""
        return list(torch.split(self.feats, self.counts.tolist()))

    # ----------------------------------------------------------------------------------- hashing
    def keys(self) -> torch.Tensor:
        """`[N] int64` hash key of every row (`coords_to_keys`)."""
        return coords_to_keys(self.coords, self.resolution)

    def _key_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sorted_keys is None:
            keys, order = torch.sort(self.keys())
            self._sorted_keys = (keys, order)
        return self._sorted_keys

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Row index of each query `coords [M, 4] (b, i, j, k)`, `[M] int64`, -1 where not active or outside."""
        keys, order = self._key_table()
        inside = ((coords[:, 1:] >= 0) & (coords[:, 1:] < self.resolution)).all(dim=1)
        query = coords_to_keys(coords, self.resolution)
        if keys.numel() == 0:
            return torch.full_like(query, -1)
        pos = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
        found = inside & (keys[pos] == query)
        return torch.where(found, order[pos], torch.full_like(pos, -1))

    def neighbours(self, kernel_size: int = 3) -> torch.Tensor:
        """`[N, k^3] int64`: row of each voxel's neighbour at `kernel_offsets(k)`, -1 where empty."""
        offsets = kernel_offsets(kernel_size, self.coords.device)  # (K, 3)
        c = self.coords.long()
        query = c[:, None, :].repeat(1, offsets.shape[0], 1)  # (N, K, 4)
        query[:, :, 1:] += offsets
        return self.lookup(query.reshape(-1, 4)).reshape(c.shape[0], -1)  # (N*K,) -> (N, K)

    # ----------------------------------------------------------------------------------- resolution
    def subdivide(self, feats: torch.Tensor | None = None) -> SparseTensor:
        """Each voxel -> its 8 children at `2R`; child `c` of row `n` is row `8 n + c`.

        Args:
            feats: optional `[N, 8, C']` per-child features; default repeats each parent's row.
        """
        children = kernel_offsets(2, self.coords.device) + 1  # (8, 3): offsets 0 or 1 per axis
        c = self.coords.long()
        child = c[:, None, :].repeat(1, 8, 1)  # (N, 8, 4)
        child[:, :, 1:] = child[:, :, 1:] * 2 + children
        if feats is None:
            feats = self.feats[:, None, :].expand(-1, 8, -1)
        return SparseTensor(child.reshape(-1, 4).int(), feats.reshape(-1, feats.shape[-1]),
                            self.resolution * 2, self.batch_size)  # (N, 8, C) -> (8N, C)

    def downsample(self) -> tuple[SparseTensor, torch.Tensor]:
        """Merge children into parents at `R / 2` (feature mean).

        Returns:
            The parent tensor (rows sorted by key) and `[N] int64` the parent row of every input row.
        """
        if self.resolution % 2:
            raise ValueError(f"downsample needs an even resolution, got {self.resolution}")
        parent = self.coords.long().clone()
        parent[:, 1:] //= 2
        keys, inverse = torch.unique(coords_to_keys(parent, self.resolution // 2), return_inverse=True)
        total = self.feats.new_zeros(keys.numel(), self.feats.shape[1]).index_add_(0, inverse, self.feats)
        count = torch.bincount(inverse, minlength=keys.numel()).to(self.feats.dtype)
        coarse = SparseTensor(keys_to_coords(keys, self.resolution // 2), total / count[:, None],
                              self.resolution // 2, self.batch_size)
        return coarse, inverse

    def prune(self, keep: torch.Tensor) -> SparseTensor:
        """Keep the rows where `keep [N] bool` (order preserved, so rows stay grouped by batch)."""
        if keep.shape != (self.coords.shape[0],):
            raise ValueError(f"keep must be [N={self.coords.shape[0]}] bool, got {tuple(keep.shape)}")
        return SparseTensor(self.coords[keep], self.feats[keep], self.resolution, self.batch_size)


def gather_neighbours(x: SparseTensor, neighbours: torch.Tensor) -> torch.Tensor:
    """`[N, K, C]` features of each voxel's neighbours (`SparseTensor.neighbours`), zeros where empty."""
    # Empty neighbours read row 0 and are masked to zero. Pointing them all at one shared padding row instead
    # makes the indexing backward serialise on millions of duplicate indices (about 50x slower on a GPU).
    rows = x.feats.index_select(0, neighbours.clamp_min(0).reshape(-1))  # (N*K, C)
    rows = rows.reshape(*neighbours.shape, x.feats.shape[1])  # (N*K, C) -> (N, K, C)
    return rows * (neighbours >= 0).unsqueeze(-1).to(rows.dtype)


def _padded_gather(table: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """`table [N, C]`, `neighbours [n, K]` -> `[n, K, C]`: row `neighbours[i, k]`, zeros where it is -1 (an appended
    zero row is read instead, so no mask product is made)."""
    padded = torch.cat([table, table.new_zeros(1, table.shape[1])])
    rows = torch.where(neighbours >= 0, neighbours, table.shape[0])
    return padded.index_select(0, rows.reshape(-1)).reshape(*neighbours.shape, table.shape[1])


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would give a matmul of `x` here (`x.dtype` outside autocast)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


KEEP_COLUMNS = True
"""Training: keep each convolution's gathered `[N, K * C_in]` columns from the forward for the weight gradient
(one gather fewer per layer and step; on an H200 the sparse VAEs' step was 78 % column gathers) instead of gathering
them again in the backward (a layer then holds only `[N, C_in]` between the passes: less memory, more time)."""


class _SubmanifoldConv(torch.autograd.Function):
    """`y = im2col(x) @ w` over a submanifold neighbour table, with a backward that only gathers.

    The gradient of a gather is a scatter-add (`index_add_`), which on a GPU serialises on atomics: every voxel is
    read by up to `K` = 27 neighbours. A submanifold table is symmetric: voxel `m` is neighbour `k` of voxel `n`
    exactly when `n` is neighbour `K - 1 - k` of `m` (`kernel_offsets` lists opposite offsets mirrored), so the input
    gradient is the same convolution of `grad_y` with the kernel mirrored and transposed,
    `grad_x[m] = sum_j grad_y[neighbours[m, j]] @ w_{K-1-j}^T`: one gather of `grad_y` over the table itself and one
    matmul, deterministic and atomic-free, with no `[N, K, C_in]` gradient of the columns made. The weight gradient
    uses the forward's columns (`KEEP_COLUMNS`) or gathers them again. Matmuls run in the autocast dtype, like
    `nn.Linear`.
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(feats)
        x, w = feats.to(dtype), weight.to(dtype)  # w: (K*C_in, C_out)
        with torch.autocast(feats.device.type, enabled=False):
            cols = _padded_gather(x, neighbours).flatten(1)  # (N, K*C_in)
            y = cols @ w
        kept = cols if KEEP_COLUMNS and ctx.needs_input_grad[1] else x
        ctx.save_for_backward(kept, w, neighbours)
        ctx.kept_columns = kept is cols
        ctx.dtypes = (feats.dtype, weight.dtype)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        kept, w, neighbours = ctx.saved_tensors
        feats_dtype, weight_dtype = ctx.dtypes
        grad_y = grad_y.to(w.dtype)
        k = neighbours.shape[1]
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[1]:
            cols = kept if ctx.kept_columns else _padded_gather(kept, neighbours).flatten(1)
            grad_weight = (cols.t() @ grad_y).to(weight_dtype)
        if ctx.needs_input_grad[0]:
            c_in, c_out = w.shape[0] // k, w.shape[1]
            mirrored = w.reshape(k, c_in, c_out).flip(0).transpose(1, 2).reshape(k * c_out, c_in)
            grad_feats = (_padded_gather(grad_y, neighbours).flatten(1) @ mirrored).to(feats_dtype)
        return grad_feats, grad_weight, None


GATHER_ELEMENTS = (2**25, 2**28)
"""Largest `[rows, k^3, C_in]` gather of `SparseConv3d` without gradients: (CPU, GPU) elements."""


class SparseConv3d(nn.Module):
    """Submanifold 3D convolution: outputs on the input's voxels, inputs from their `k^3` neighbourhoods.

    The weight is laid out like `nn.Conv3d` (`[C_out, C_in, k, k, k]`, axes i, j, k), so
    `SparseConv3d(x) == Conv3d(padding=k // 2)(x.dense())` at the active voxels.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (centred neighbourhood), got {kernel_size}")
        self.kernel_size = kernel_size
        # Rows per gather without gradients; None: bound the `[rows, k^3, C_in]` temporary to GATHER_ELEMENTS of
        # the device (128 MiB fp32 on a CPU, 1 GiB on a GPU, where small chunks cost a launch each).
        self.chunk_size = chunk_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Same initialisation as nn.Conv3d.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * k**3)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor, neighbours: torch.Tensor | None = None) -> SparseTensor:
        """`x [N, C_in]` -> `[N, C_out]` on the same voxels. Pass `neighbours` to reuse one gather table."""
        if neighbours is None:
            neighbours = x.neighbours(self.kernel_size)
        w = self.weight.flatten(2).permute(2, 1, 0).reshape(-1, self.weight.shape[0])  # (K*C_in, C_out)
        if torch.is_grad_enabled() and (x.feats.requires_grad or w.requires_grad):
            y = _SubmanifoldConv.apply(x.feats, w, neighbours)  # whole table: the backward gathers across rows
        else:
            out = []
            per_row = neighbours.shape[1] * x.feats.shape[1]
            chunk = self.chunk_size or max(1, GATHER_ELEMENTS[x.device.type == "cuda"] // per_row)
            for start in range(0, neighbours.shape[0], chunk):
                cols = gather_neighbours(x, neighbours[start : start + chunk])  # (n, K, C_in)
                out.append(cols.flatten(1) @ w.to(cols.dtype))  # (n, K*C_in) @ (K*C_in, C_out)
            y = torch.cat(out, dim=0) if out else x.feats.new_zeros(0, self.weight.shape[0])
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return x.replace(feats=y)
