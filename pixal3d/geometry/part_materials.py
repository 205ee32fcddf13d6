"""The voxeliser's material lookup: the PBR attributes of surface points on the parts of several placed meshes.

`mesh_to_voxels` flattens each item (a scene under a transform) into parts `(name, geometry, vertices, faces,
flipped)` and numbers all faces over all items; `part_materials` reads each part's `MaterialTables` (once per
geometry and winding when a cache is given) and `PartMaterials.sample` evaluates the points of any faces, on the
CPU one call per part and chunk (exact bytes), on a GPU all materials in one fused call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import trimesh

from pixal3d.geometry.materials import (
    FusedMaterials,
    MaterialTables,
    fuse_materials,
    material_tables,
    sample_material,
    sample_materials,
)
from pixal3d.transfer import to_device


def _part_tables(
    placed: list[tuple[str, trimesh.Trimesh, np.ndarray, np.ndarray, bool]],
    device: torch.device,
    cache: dict[tuple[str, bool], MaterialTables] | None,
) -> list[MaterialTables]:
    """Material tables of each part; read once per (geometry, flipped) when a `cache` dict is given."""
    tables = []
    for name, geometry, _, _, flipped in placed:
        key = (name, flipped)
        table = cache.get(key) if cache is not None else None
        if table is None:
            table = material_tables(geometry, device)
            if flipped:  # the transform reversed the faces; attributes follow the corners
                table = replace(table, faces=table.faces.flip(1).contiguous())
            if cache is not None:
                cache[key] = table
        tables.append(table)
    return tables


@dataclass
class PartMaterials:
    """Material tables of every (item, part) and how `sample` evaluates them.

    `sample_material` raises sRGB values to a power; the CPU's vectorised `pow` rounds the tail elements of a call
    differently from the body, so on the CPU each call gets exactly the points a single-item call would give it
    (one part within one group: same bytes). On a GPU every element gets the same `powf` wherever it sits, so all
    tables of all items are fused (`fuse_materials`) and every point is evaluated by one `sample_materials` call
    (a fixed number of kernels and no host sync, however many items and materials; the values may differ from the
    CPU path's in the last bits).
    """

    tables: list[MaterialTables]  # distinct tables (items of one asset share theirs)
    part_offsets: torch.Tensor  # [P + 1] int64: first face (numbered over all items) of each part of every item
    part_table: torch.Tensor  # [P] int64: index into `tables` of each part
    group_first_run: torch.Tensor  # [G] int64: run of group g's part p is `group_first_run[g] + p` (global p)
    group_run_tables: list[int]  # index into `tables` of each unfused run
    fused: bool
    fused_tables: FusedMaterials | None = None  # built on the first fused `sample`

    def sample(self, face: torch.Tensor, bary: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Attributes `[M, 6]` at faces `[M]` (numbered over all items), barycentrics `[M, 3]`, in groups `[M]`."""
        part = torch.searchsorted(self.part_offsets, face, right=True) - 1
        local = face - self.part_offsets[part]
        if self.fused:
            if self.fused_tables is None:
                self.fused_tables = fuse_materials(self.tables)
            return sample_materials(self.fused_tables, self.part_table[part], local, bary)
        run = self.group_first_run[group] + part
        # A stable sort by run and one count (a single host sync) give each run a contiguous block holding exactly
        # what a boolean mask would select, in order.
        order = torch.argsort(run, stable=True)
        counts = torch.bincount(run, minlength=len(self.group_run_tables)).tolist()
        local, bary = local[order], bary[order]
        out, start = [], 0
        for key, count in enumerate(counts):
            if count:
                block = slice(start, start + count)
                out.append(sample_material(self.tables[self.group_run_tables[key]], local[block], bary[block]))
            start += count
        out = torch.cat(out) if out else torch.zeros(0, 6, device=face.device)
        return torch.zeros_like(out).index_copy_(0, order, out)


def part_materials(
    placed: list[list[tuple[str, trimesh.Trimesh, np.ndarray, np.ndarray, bool]]],
    face_offsets: list[np.ndarray],
    group_view: list[int],
    device: torch.device,
    caches: list[dict[tuple[str, bool], MaterialTables]],
) -> PartMaterials:
    """`PartMaterials` of the items' parts (`placed`, per-item part `face_offsets` from `_concatenate`), for the
    groups of `_batch` (`group_view`: the item of each group); `caches[v]` is item v's material cache."""
    per_item = [_part_tables(p, device, cache) for p, cache in zip(placed, caches, strict=True)]
    ids: dict[int, int] = {}
    tables = []
    for table in (t for item in per_item for t in item):
        if id(table) not in ids:
            ids[id(table)] = len(tables)
            tables.append(table)
    part_table = [ids[id(t)] for item in per_item for t in item]
    item_faces = np.cumsum([0] + [int(o[-1]) for o in face_offsets])
    part_offsets = np.concatenate([item_faces[v] + o[:-1] for v, o in enumerate(face_offsets)] + [item_faces[-1:]])
    first_part = np.cumsum([0] + [len(item) for item in per_item])
    # Unfused runs: each group's parts in order, so a run is one part of one group.
    group_parts = [len(per_item[v]) for v in group_view]
    first_run = np.cumsum([0] + group_parts)[:-1] - first_part[group_view]
    group_run_tables = [part_table[first_part[v] + p] for v in group_view for p in range(len(per_item[v]))]
    return PartMaterials(tables, to_device(part_offsets, device), to_device(part_table, device),
                         to_device(first_run, device), group_run_tables, fused=device.type != "cpu")
