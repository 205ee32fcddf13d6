"""UV-space rasterisation in PyTorch: which triangle covers each texel centre, and where inside it.

Texel `(row, col)` of an `S x S` texture has its centre at `u = (col + 0.5) / S`, `v = (row + 0.5) / S` (glTF UVs,
see `pixal3d.geometry.bake`). Candidate texels are each triangle's bounding box, enumerated in chunks of about
`_CHUNK` texels so that memory stays bounded at 4096^2.
"""

from __future__ import annotations

import torch

_CHUNK = 8_000_000  # candidate texels per batch
_EPS = 1e-6


def rasterize_claims(uv: torch.Tensor, size: int, strict: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Every `(texel, face)` pair whose texel centre lies in the face.

    Args:
        uv: `[F, 3, 2]` float per-corner UVs.
        size: S.
        strict: only centres strictly inside (by more than 1e-6 in every barycentric), so that texels on an edge
            shared by two faces count for neither: a texel claimed twice then means real overlap.

    Returns:
        `texel [M] int64` flat texel index (`row * S + col`) and `face [M] int64`.
    """
    texels, faces = [], []
    for t, f, _ in _candidates(uv, size, -_EPS if not strict else _EPS):
        texels.append(t)
        faces.append(f)
    if not texels:
        empty = torch.zeros(0, dtype=torch.int64, device=uv.device)
        return empty, empty
    return torch.cat(texels), torch.cat(faces)


def rasterize(uv: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`face_id [S, S] int64` (-1: uncovered) and `bary [S, S, 3] float32` of the texel centre in that face.

    Where faces share a texel (an edge through its centre) the highest face id wins, so the result does not
    depend on the order of parallel writes.
    """
    face_id = torch.full((size * size,), -1, dtype=torch.int64, device=uv.device)
    for t, f, _ in _candidates(uv, size, -_EPS):
        face_id.scatter_reduce_(0, t, f, reduce="amax")
    covered = torch.nonzero(face_id >= 0).squeeze(1)
    bary = torch.zeros(size * size, 3, dtype=torch.float32, device=uv.device)
    if len(covered):
        col, row = covered % size, covered // size
        point = torch.stack([col, row], 1).to(uv.dtype) + 0.5
        bary[covered] = barycentric(uv[face_id[covered]] * size, point).float()
    return face_id.reshape(size, size), bary.reshape(size, size, 3)


def barycentric(tri: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """`[M, 3]` barycentric coordinates of `point [M, 2]` in triangles `tri [M, 3, 2]` (NaN for degenerate ones)."""
    tri, point = tri.double(), point.double()
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = point - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    inv = torch.where(det.abs() > 1e-18, 1.0 / torch.where(det == 0, 1.0, det), float("nan"))
    w1 = (p[:, 0] * e2[:, 1] - e2[:, 0] * p[:, 1]) * inv
    w2 = (e1[:, 0] * p[:, 1] - p[:, 0] * e1[:, 1]) * inv
    return torch.stack([1 - w1 - w2, w1, w2], dim=1)


def _candidates(uv: torch.Tensor, size: int, threshold: float):
    """Yield `(texel [M], face [M], bary [M, 3])` of texel centres with every barycentric >= `threshold`."""
    tri = uv.double() * size - 0.5  # texel coordinates with centres on integers
    lo = tri.min(dim=1).values.ceil().clamp(0, size - 1).long()
    hi = tri.max(dim=1).values.floor().clamp(0, size - 1).long()
    extent = (hi - lo + 1).clamp(min=0)
    count = extent[:, 0] * extent[:, 1]
    ends = torch.cumsum(count, 0)
    total = int(ends[-1]) if len(ends) else 0
    steps = torch.arange(1, total // _CHUNK + 1, device=uv.device) * _CHUNK
    cuts = torch.searchsorted(ends, steps, right=True)
    bounds = sorted({0, len(tri), *cuts.tolist()})
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        ids = torch.arange(start, stop, device=uv.device)
        n = count[ids]
        face = torch.repeat_interleave(ids, n)
        local = torch.arange(len(face), device=uv.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        width = extent[face, 0].clamp(min=1)
        x = lo[face, 0] + local % width
        y = lo[face, 1] + local // width
        bary = barycentric(tri[face], torch.stack([x, y], 1).double())
        inside = (bary >= threshold).all(dim=1)  # NaN (degenerate face) is never inside
        yield (y * size + x)[inside], face[inside], bary[inside]
