"""The export in pure PyTorch, on the device of the caller's choice (issue 18): fine mesh -> `TexturedMesh`.

    clean.repair         merge, degenerate/duplicate faces, floaters, small holes
    clean.cluster_simplify   vertex clustering with quadric placement, to the face budget
    charts.build_atlas   axis-dominant charts, packed; vertices split along chart borders
    raster.rasterize     which face covers each texel centre
    bake.texel_values    surface values, normal map in the viewer's tangent frame
    bake.compose         quantise, dilate seams (jump flooding)

It gives the same kind of result as the CPU reference (`export.textured_mesh` with device "cpu": trimesh clean-up,
fast-simplification, xatlas, numpy bake) and runs wherever the tensors are, so the tests run it on the CPU. The
textures come back to the host as numpy arrays for the writers (`geometry.writers`), which encode them on worker
threads. Each step's wall time (CUDA synchronised) is logged at DEBUG level as "export step NAME: T s" and added
to `timings` when given.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import trimesh

from pixal3d.geometry.bake import Recolor, TexturedMesh
from pixal3d.geometry.cleanup import CleanupOptions
from pixal3d.geometry.torch_export import bake, charts, clean, raster

logger = logging.getLogger(__name__)

PADDING = 2
"""Empty texels between charts (as the CPU path's xatlas packing)."""


class StepClock:
    """Times consecutive steps, synchronising the current CUDA stream so each step's kernels are counted in it.

    Only the current stream, never the whole device: a batch exports on its own stream while the next image's
    sampling may be capturing a CUDA graph on another, and a device-wide sync would break that capture."""

    def __init__(self, device: torch.device, timings: dict[str, float] | None = None) -> None:
        self.device, self.timings = device, timings if timings is not None else {}
        self._sync()
        self._last = time.perf_counter()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def lap(self, step: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.timings[step] = self.timings.get(step, 0.0) + now - self._last
        logger.debug("export step %s: %.3f s", step, now - self._last)
        self._last = now


def export_textured(
    fine_mesh: trimesh.Trimesh,
    max_faces: int,
    texture_size: int,
    device: torch.device | str,
    cleanup: CleanupOptions | None = None,
    recolor: Recolor | None = None,
    resolution: int | None = None,
    sampler=None,
    timings: dict[str, float] | None = None,
) -> TexturedMesh:
    """Clean, simplify, unwrap and bake a fine mesh on `device`; the result is on the host.

    Args:
        fine_mesh: the detailed surface, volume frame, with `vertex_attributes["pbr"] [V, 6]` (or vertex colours).
        max_faces: face budget (checked by the caller, `export.ExportOptions`).
        texture_size: S (checked by the caller).
        device: where the work runs ("cuda", "cpu", ...).
        cleanup: floater and hole thresholds (`CleanupOptions()` when None).
        recolor: base colour from the input image at texel points (`bake.Recolor`, numpy in and out).
        resolution: the voxel resolution of the fine mesh (the fine-value grid); None: from its median edge.
        sampler: `points [M, 3] -> attrs [M, 6]` called at the texel points instead of the vertex attributes.
        timings: filled with seconds per step when given.
    """
    from pixal3d.geometry.export import vertex_attributes

    device = torch.device(device)
    clock = StepClock(device, timings)
    vertices = torch.as_tensor(np.asarray(fine_mesh.vertices), dtype=torch.float32).to(device)
    faces = torch.as_tensor(np.asarray(fine_mesh.faces), dtype=torch.int64).to(device)
    attrs = torch.as_tensor(vertex_attributes(fine_mesh)).to(device)
    clock.lap("upload")
    repaired = clean.repair((vertices, faces, attrs), cleanup)
    clock.lap("clean-up")
    simplified = len(repaired[1]) > max_faces
    v, f, a = clean.cluster_simplify(repaired, max_faces)
    clock.lap("simplify")
    fine = bake.FineSurface(None, None, 0)
    if simplified:
        fine_normals = bake.vertex_normals(repaired[0], repaired[1])
        r = resolution or _resolution_of(repaired[0], repaired[1])
        fine = bake.FineSurface.from_vertices(repaired[0], repaired[2], fine_normals, r)
        clock.lap("fine surface grid")
    vertex_map, out_faces, uvs, _ = charts.build_atlas(v, f, texture_size, PADDING)
    clock.lap("uv charts + packing")
    out_v, out_a = v[vertex_map], a[vertex_map]
    normals = bake.vertex_normals(v, f)[vertex_map]
    tangents = bake.vertex_tangents(out_v, out_faces, uvs, normals)
    face_id, bary = raster.rasterize(uvs[out_faces], texture_size)
    clock.lap("tangents + uv rasterisation")
    covered, values = bake.texel_values(out_v, out_faces, uvs, normals, tangents, out_a, fine, face_id, bary,
                                        recolor=recolor, sampler=sampler)
    clock.lap("texel values")
    image = bake.compose(texture_size, covered, values)
    clock.lap("quantise + seam dilation")
    host = image.cpu().numpy()
    result = TexturedMesh(
        vertices=out_v.cpu().numpy().astype(np.float32),
        faces=out_faces.cpu().numpy().astype(np.uint32),
        uvs=uvs.cpu().numpy().astype(np.float32),
        normals=normals.cpu().numpy().astype(np.float32),
        tangents=tangents.cpu().numpy().astype(np.float32),
        base_color=np.ascontiguousarray(host[..., 0:4]),
        metallic_roughness=np.ascontiguousarray(host[..., 4:7]),
        normal_map=np.ascontiguousarray(host[..., 7:10]),
    )
    clock.lap("download")
    logger.info("torch export on %s: %d -> %d faces, %d^2 textures (%s)", device, len(fine_mesh.faces),
                len(result.faces), texture_size, ", ".join(f"{k} {t:.2f} s" for k, t in clock.timings.items()))
    return result


def _resolution_of(vertices: torch.Tensor, faces: torch.Tensor) -> int:
    """The voxel resolution a dual-grid mesh was made at, from its median edge length (about one voxel)."""
    edge = (vertices[faces[:, 1]] - vertices[faces[:, 0]]).norm(dim=1).median()
    return int(max(8, min(1024, round(1.0 / max(float(edge), 1e-6)))))
