"""The silhouette as a hard fact (DESIGN section 3, "Exact where the image speaks"): the input mask and camera give
the visual hull, and the depth map gives where the visible surface lies.

Two rules, enforced after each stage where they are cheap:
- **carve**: nothing the asset holds may project outside the (slightly dilated) input mask: structure voxels whose
  projected footprint misses the mask, fine voxels whose dual vertex does, and mesh faces whose three corners do,
  are dropped;
- **cover**: every mask pixel's ray must hit the asset: structure voxels are added where uncovered rays meet the
  depth map, and after meshing the pixels that still see through get a surface patch at the depth map's depth
  (the depth head's map shifted onto the mesh's own depth where both exist; without a depth head, the mesh's
  depth carried in from the nearest covered pixel).

Frames: volume frame and `Camera` conventions of DESIGN section 2; images `[S, S]`, row 0 at the top. The mask
is the preprocessed input's alpha > 0.5. `SilhouetteOptions(enabled=False)` turns every rule off (ablations).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from pixal3d.camera import Camera
from pixal3d.geometry.cleanup import CleanupOptions, face_pieces, position_ids
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.stages import EmptyStructureError

logger = logging.getLogger(__name__)


@dataclass
class SilhouetteOptions:
    """How the input silhouette constrains the asset (`Pixal3DPipeline(..., silhouette=...)`)."""

    enabled: bool = True
    """Carve and cover at every stage; False gives the unconstrained cascade."""
    dilation: int = 2
    """Pixels the mask is grown by before carving (tolerates the voxel grid's own quantisation)."""
    fill_mesh: bool = True
    """Patch the mesh where mask pixels still see through it (needs `enabled`)."""
    drop_fragments: bool = True
    """Drop the small pieces carving leaves (fewer faces and less area than the export's floater thresholds) unless
    one of them is the only surface some mask pixel sees (needs `enabled`): the export keeps every piece of a
    constrained asset, since a plain floater removal reopened the silhouette."""


@dataclass(eq=False)
class ViewMask:
    """The input view's silhouette and depth, ready for carving and covering.

    Attributes:
        camera: the input camera (its `size` is the mask's side S).
        mask: `[S, S] bool`, the object's pixels.
        dilated: `[S, S] bool`, `mask` grown by the dilation.
        depth: `[S, S] float32` depth along the view axis of the visible surface (NaN where unknown), or None.
    """

    camera: Camera
    mask: torch.Tensor
    dilated: torch.Tensor
    depth: torch.Tensor | None = None

    def __post_init__(self) -> None:
        s = self.camera.size
        # Summed-area table of the dilated mask, `[S + 1, S + 1]`: any mask pixel in a box in O(1).
        table = torch.zeros(s + 1, s + 1, dtype=torch.int64)
        table[1:, 1:] = self.dilated.long().cumsum(0).cumsum(1)
        self._table = table


def view_mask(alpha: torch.Tensor, camera: Camera, dilation: int = 2, depth: torch.Tensor | None = None) -> ViewMask:
    """Build a `ViewMask` from the input's alpha `[S, S]` in [0, 1] and an optional depth map `[h, w]`.

    A depth map of another side (the depth head's `S/4`) is resized bilinearly to `S`; pixels outside the mask get
    NaN.
    """
    s = camera.size
    if alpha.shape != (s, s):
        raise ValueError(f"alpha must be [{s}, {s}] for a camera of size {s}, got {tuple(alpha.shape)}")
    mask = alpha.detach().float().cpu() > 0.5
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
    dilated = torch.from_numpy(cv2.dilate(mask.numpy().astype(np.uint8), kernel) > 0) if dilation > 0 else mask
    if depth is not None:
        d = depth.detach().float().cpu()[None, None]
        if d.shape[-1] != s:
            d = F.interpolate(d, size=(s, s), mode="bilinear", align_corners=False)
        depth = torch.where(mask, d[0, 0], torch.full_like(d[0, 0], float("nan")))
    return ViewMask(camera=camera, mask=mask, dilated=dilated, depth=depth)


# ------------------------------------------------------------------------------------------------ carve
def points_in_mask(points: torch.Tensor, view: ViewMask) -> torch.Tensor:
    """`[N] bool`: volume-frame `points [N, 3]` that project inside the dilated mask (and in front of the camera)."""
    uv, depth = view.camera.project(points.detach().float().cpu())
    px = torch.floor(uv).long()
    s = view.camera.size
    inside = (depth > 0) & (px >= 0).all(1) & (px < s).all(1)
    hit = torch.zeros(len(points), dtype=torch.bool)
    hit[inside] = view.dilated[px[inside, 1], px[inside, 0]]
    return hit


def boxes_touch_mask(coords: torch.Tensor, resolution: int, view: ViewMask) -> torch.Tensor:
    """`[N] bool`: voxels `coords [N, 3]` (i, j, k) whose projected bounding box holds a dilated-mask pixel."""
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32)
    points = (coords.cpu().float()[:, None, :] + corners) / resolution - 0.5  # (N, 8, 3) voxel corners
    uv, depth = view.camera.project(points.reshape(-1, 3))
    uv = uv.view(-1, 8, 2)
    s = view.camera.size
    lo = torch.floor(uv.min(1).values).long().clamp(0, s)
    hi = torch.floor(uv.max(1).values).long().clamp(-1, s - 1) + 1  # exclusive
    t = view._table
    count = t[hi[:, 1], hi[:, 0]] - t[lo[:, 1], hi[:, 0]] - t[hi[:, 1], lo[:, 0]] + t[lo[:, 1], lo[:, 0]]
    in_front = (depth.view(-1, 8) > 0).any(1)
    return (count > 0) & (hi > lo).all(1) & in_front


def carve_coords(coords: torch.Tensor, resolution: int, view: ViewMask) -> torch.Tensor:
    """Structure voxels `[N, 4] (b, i, j, k)` without those whose footprint misses the mask (same order)."""
    keep = boxes_touch_mask(coords[:, 1:], resolution, view).to(coords.device)
    return coords[keep]


def carve_voxels(voxels: SparseVoxels, view: ViewMask) -> SparseVoxels:
    """Fine voxels without those whose dual vertex projects outside the dilated mask."""
    keep = points_in_mask(voxels.positions(), view).to(voxels.coords.device)
    if bool(keep.all()):
        return voxels
    attrs = voxels.attrs[keep] if voxels.attrs is not None else None
    return SparseVoxels(voxels.coords[keep], voxels.vertex[keep], voxels.edges[keep], attrs, voxels.resolution)


# ------------------------------------------------------------------------------------------------ cover
def ray_hits(occupied: torch.Tensor, view: ViewMask, step: float = 0.5) -> torch.Tensor:
    """`[S, S] bool`: mask pixels whose centre ray meets an occupied voxel of the grid `occupied [R, R, R]` (x, y, z).

    Rays are marched through the cube in steps of `step` voxels (exact for any voxel the ray crosses by more than
    a step).
    """
    r = occupied.shape[0]
    camera, s = view.camera, view.camera.size
    rows, cols = torch.nonzero(view.mask, as_tuple=True)
    uv = torch.stack([cols.float() + 0.5, rows.float() + 0.5], dim=1)
    near = max(camera.eye_distance - 0.9, 1e-3)
    far = camera.eye_distance + 0.9
    steps = torch.arange(near, far, step / r)
    hits = torch.zeros(len(uv), dtype=torch.bool)
    for chunk in range(0, len(steps), 64):
        t = steps[chunk : chunk + 64]
        points = camera.unproject(uv[:, None, :].expand(-1, len(t), 2), t[None, :].expand(len(uv), -1))
        ijk = torch.floor((points + 0.5) * r).long()
        ok = ((ijk >= 0) & (ijk < r)).all(-1)
        ijk = ijk.clamp(0, r - 1)
        hits |= (occupied[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & ok).any(1)
    out = torch.zeros(s, s, dtype=torch.bool)
    out[rows, cols] = hits
    return out


def cover_coords(coords: torch.Tensor, resolution: int, view: ViewMask) -> torch.Tensor:
    """Add structure voxels where uncovered mask rays meet the depth map; `coords [N, 4]`, key-sorted result."""
    if view.depth is None or len(coords) == 0:
        return coords
    occupied = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    c = coords[:, 1:].long().cpu()
    occupied[c[:, 0], c[:, 1], c[:, 2]] = True
    missing = view.mask & ~ray_hits(occupied, view) & torch.isfinite(view.depth)
    if not bool(missing.any()):
        return coords
    rows, cols = torch.nonzero(missing, as_tuple=True)
    uv = torch.stack([cols.float() + 0.5, rows.float() + 0.5], dim=1)
    points = view.camera.unproject(uv, view.depth[rows, cols])
    ijk = torch.floor((points + 0.5) * resolution).long()
    ijk = ijk[((ijk >= 0) & (ijk < resolution)).all(1)]
    occupied[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    added = int(occupied.sum()) - len(coords)
    logger.info("silhouette: %d uncovered mask pixels, %d structure voxels added at the depth map", len(rows), added)
    out = torch.nonzero(occupied).to(torch.int32)  # raster order = key order
    batch = torch.zeros(len(out), 1, dtype=torch.int32)
    return torch.cat([batch, out], dim=1).to(coords.device)


KEEP_FRAGMENTS = CleanupOptions(min_face_fraction=0.0, min_area_fraction=0.0)
"""Export clean-up of a silhouette-constrained asset: no floater removal (see `Asset.cleanup`)."""


def constrain_structure(coords: torch.Tensor, resolution: int, view: ViewMask) -> torch.Tensor:
    """Stage 1's voxels carved to the silhouette and covering it ; `[N, 4]`, key-sorted."""
    carved = carve_coords(coords, resolution, view)
    covered = cover_coords(carved, resolution, view)
    if len(covered) == 0:
        raise EmptyStructureError(
            "no stage-1 voxel projects into the input's silhouette and there is no depth map to place one; "
            "check the image's alpha, or pass silhouette=False (command line: --no-silhouette)"
        )
    logger.info("silhouette: %d structure voxels -> %d carved -> %d covered", len(coords), len(carved), len(covered))
    return covered


def constrain_mesh(mesh: trimesh.Trimesh, view: ViewMask, image: torch.Tensor,
                   options: SilhouetteOptions) -> trimesh.Trimesh:
    """The mesh carved to the silhouette and, with `options.fill_mesh`, patched where mask pixels see through it.

    `image` is the preprocessed input `[4, S, S]` (its colours start the patch's vertex colours).
    """
    mesh = carve_mesh(mesh, view)
    if options.fill_mesh:
        rgba = image.permute(1, 2, 0).float()
        mesh = fill_mesh(mesh, view, rgba[..., :3] / rgba[..., 3:].clamp_min(1e-3))
    if options.drop_fragments:
        mesh = drop_fragments(mesh, view)
    return mesh


def drop_fragments(mesh: trimesh.Trimesh, view: ViewMask, min_face_fraction: float = 0.001,
                   min_area_fraction: float = 0.001) -> trimesh.Trimesh:
    """The mesh without its small pieces, except those that alone cover some mask pixel.

    A piece is small as for the export's floater removal (`geometry.cleanup.remove_small_components`): fewer than
    `min_face_fraction` of the faces and less than `min_area_fraction` of the area; the largest piece always stays.
    The mesh without the small pieces is rendered at the input camera, then the small pieces alone: a small piece
    stays when it is the nearest small surface on a mask pixel that the rest leaves uncovered, so the silhouette's
    coverage does not change. Vertex data (colours, `pbr`) is kept.
    """
    from pixal3d.render.raster import rasterize

    faces = np.asarray(mesh.faces)
    if len(faces) < 2:
        return mesh
    labels = face_pieces(position_ids(np.asarray(mesh.vertices), 1e-6)[faces])
    pieces = int(labels.max()) + 1
    count = np.bincount(labels, minlength=pieces)
    area = np.bincount(labels, weights=mesh.area_faces, minlength=pieces)
    small = (count < min_face_fraction * len(faces)) & (area < min_area_fraction * max(area.sum(), 1e-30))
    small[np.argmax(count)] = False
    if not small.any():
        return mesh
    in_small = small[labels]
    rest = trimesh.Trimesh(mesh.vertices, faces[~in_small], process=False)
    covered, _ = render_coverage(rest, view.camera)
    needed = view.mask & ~covered
    keep_piece = ~small
    if bool(needed.any()):
        small_faces = np.nonzero(in_small)[0]
        vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
        uv, depth = view.camera.project(vertices)
        tri = torch.as_tensor(faces[small_faces], dtype=torch.int64)
        frags = rasterize(torch.cat([uv, depth[:, None]], dim=1), torch.cat([tri, tri[:, [0, 2, 1]]]),
                          view.camera.size, view.camera.size)
        hit = frags.face_id.cpu()[needed]
        hit = hit[hit >= 0] % len(small_faces)  # both windings were drawn
        keep_piece[np.unique(labels[small_faces[hit.numpy()]])] = True
    keep = keep_piece[labels]
    if keep.all():
        return mesh
    logger.info("silhouette: %d small pieces, %d dropped (they cover no mask pixel alone)", int(small.sum()),
                int((small & ~keep_piece).sum()))
    out = mesh.copy()
    out.update_faces(keep)
    out.remove_unreferenced_vertices()
    return out


def render_coverage(mesh: trimesh.Trimesh, camera: Camera,
                    device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(covered [S, S] bool, depth [S, S] float32)` on the CPU: the mesh's pixels at the camera (one sample per pixel
    centre), rasterised on `device` (None: the CPU)."""
    from pixal3d.render.raster import rasterize

    vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=device)
    if len(faces) == 0:
        s = camera.size
        return torch.zeros(s, s, dtype=torch.bool), torch.zeros(s, s)
    uv, depth = camera.project(vertices)
    screen = torch.cat([uv, depth[:, None]], dim=1)
    # Both windings: the rasteriser culls back faces, and a generated surface may be seen from either side.
    frags = rasterize(screen, torch.cat([faces, faces[:, [0, 2, 1]]]), camera.size, camera.size)
    return (frags.face_id >= 0).cpu(), frags.depth.float().cpu()


def carve_mesh(mesh: trimesh.Trimesh, view: ViewMask) -> trimesh.Trimesh:
    """The mesh without faces whose three corners all project outside the dilated mask (vertex data kept)."""
    inside = points_in_mask(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32), view).numpy()
    keep = inside[np.asarray(mesh.faces)].any(axis=1)
    if keep.all():
        return mesh
    out = mesh.copy()
    out.update_faces(keep)
    out.remove_unreferenced_vertices()
    return out


def fill_mesh(mesh: trimesh.Trimesh, view: ViewMask, image: torch.Tensor,
              pixel_tolerances: tuple[float, ...] = (1.0, 0.5)) -> trimesh.Trimesh:
    """Patch the mask pixels the mesh does not cover with a surface at the depth map's depth.

    The patch covers the uncovered pixels grown by one pixel (so it overlaps the mesh's rim) within the mask: each
    such pixel's whole square, two triangles facing the camera, on vertices at the pixel corners shared with its
    neighbours. Every patched pixel's centre lies inside its own square, so every mask pixel is covered afterwards,
    one pixel wide lines included, and no pixel outside the region is. Its depth: the depth map shifted by the
    median of (mesh depth - depth map) over the covered mask pixels, or without a depth map, the mesh depth of the
    nearest covered pixel. Vertex colours come from `image [S, S, 3]` (sRGB in [0, 1]); PBR attributes (`pbr`) of
    the patch take the mesh's median metallic / roughness.

    One pass per entry of `pixel_tolerances`, each patching what the last left uncovered and welding its rim onto
    mesh vertices within that many pixels (`_append`): a looser first weld joins more patches to the surface
    (fewer pieces) but may uncover a few rim pixels, which the stricter last pass (at most half a pixel, so it keeps
    what it covers) patches again.
    """
    for tolerance in pixel_tolerances:
        covered, mesh_depth = render_coverage(mesh, view.camera)
        holes = view.mask & ~covered
        if not bool(holes.any()):
            break
        depth = _fill_depth(view, covered, mesh_depth)
        grown = torch.from_numpy(cv2.dilate(holes.numpy().astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        region = grown & view.mask & torch.isfinite(depth)
        patch = _pixel_patch(region, depth, view.camera, image)
        if patch is None:
            break
        logger.info("silhouette: %d mask pixels uncovered, patched with %d faces", int(holes.sum()), len(patch.faces))
        mesh = _append(mesh, patch, view.camera, pixel_tolerance=tolerance)
    return mesh


def _fill_depth(view: ViewMask, covered: torch.Tensor, mesh_depth: torch.Tensor) -> torch.Tensor:
    """`[S, S]` depth for the patch (NaN where none), see `fill_mesh`."""
    both = covered & view.mask
    if view.depth is not None:
        both_valid = both & torch.isfinite(view.depth)
        shift = float((mesh_depth - view.depth)[both_valid].median()) if bool(both_valid.any()) else 0.0
        return view.depth + shift
    if not bool(both.any()):
        return torch.full_like(mesh_depth, float("nan"))
    # The mesh depth carried to every pixel from its nearest covered one: the bake's seam dilation does exactly that.
    from pixal3d.geometry.bake import fill_empty_texels

    return torch.from_numpy(fill_empty_texels(mesh_depth.numpy()[..., None], both.numpy())[..., 0])


def _corner_mean(values: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel corner `[S + 1, S + 1, ...]`: the sum of `weight x values` over the (up to 4) pixels around it,
    and the sum of `weight` (`values [S, S, ...]`, `weight [S, S]`)."""
    w = weight.view(*weight.shape, *([1] * (values.ndim - 2)))
    padded = F.pad((values * w).movedim((0, 1), (-2, -1)), (1, 1, 1, 1)).movedim((-2, -1), (0, 1))
    total = padded[:-1, :-1] + padded[:-1, 1:] + padded[1:, :-1] + padded[1:, 1:]
    wp = F.pad(weight, (1, 1, 1, 1))
    return total, wp[:-1, :-1] + wp[:-1, 1:] + wp[1:, :-1] + wp[1:, 1:]


def _pixel_patch(region: torch.Tensor, depth: torch.Tensor, camera: Camera,
                 image: torch.Tensor) -> trimesh.Trimesh | None:
    """Mesh of the squares of the `region [S, S] bool` pixels at `depth` (two triangles each, facing the camera),
    on vertices at pixel corners: corner `(i, j)` is image point `(u, v) = (j, i)`, at the mean depth and colour
    of the region pixels around it."""
    s = camera.size
    rows, cols = torch.nonzero(region, as_tuple=True)
    if len(rows) == 0:
        return None
    weight = region.float()
    depth_sum, count = _corner_mean(torch.where(region, depth, torch.zeros_like(depth)), weight)
    color_sum, _ = _corner_mean(image.float().clamp(0, 1), weight)
    cr, cc = torch.nonzero(count > 0, as_tuple=True)
    index = torch.full((s + 1, s + 1), -1, dtype=torch.int64)
    index[cr, cc] = torch.arange(len(cr))
    vertices = camera.unproject(torch.stack([cc.float(), cr.float()], dim=1), depth_sum[cr, cc] / count[cr, cc])
    a, b = index[rows, cols], index[rows, cols + 1]  # top-left, top-right corner of each pixel
    c, d = index[rows + 1, cols], index[rows + 1, cols + 1]  # bottom-left, bottom-right
    # The asset lives in the volume cube: pixels with a corner outside it are left out.
    inside = (vertices.abs() < 0.5).all(1)
    ok = inside[a] & inside[b] & inside[c] & inside[d]
    a, b, c, d = a[ok], b[ok], c[ok], d[ok]
    if len(a) == 0:
        return None
    # Counter-clockwise seen from the camera (image rows grow downwards, so a -> c -> b turns anticlockwise).
    faces = torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)])
    colors = (color_sum[cr, cc] / count[cr, cc][:, None]).numpy()
    rgba = np.concatenate([colors, np.ones((len(cr), 1))], axis=1)
    patch = trimesh.Trimesh(vertices.numpy(), faces.numpy(), vertex_colors=(rgba * 255).round().astype(np.uint8),
                            process=False)
    patch.remove_unreferenced_vertices()  # corners of the pixels left out may lie outside the volume cube
    return patch


def _append(mesh: trimesh.Trimesh, patch: trimesh.Trimesh, camera: Camera, weld: float = 0.03,
            pixel_tolerance: float = 0.5) -> trimesh.Trimesh:
    """`mesh` + `patch` as one mesh, keeping vertex colours and the `pbr [V, 6]` vertex attribute.

    Each of the patch's rim vertices is welded onto the nearest mesh vertex within `weld` (volume units) whose image
    point at `camera` lies within `pixel_tolerance` pixels of its own, so each patch joins the surface it mends
    (the export's clean-up would otherwise drop small patches as floaters) without moving its outline in the
    image: the patch keeps covering what it covered.
    """
    import scipy.spatial

    patch_faces = np.asarray(patch.faces) + len(mesh.vertices)
    if len(mesh.vertices):
        edges = np.sort(patch_faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        unique, counts = np.unique(edges, axis=0, return_counts=True)
        rim = np.unique(unique[counts == 1])  # vertices on the patch's boundary
        mesh_vertices = np.asarray(mesh.vertices)
        rim_points = np.asarray(patch.vertices)[rim - len(mesh.vertices)]
        k = min(8, len(mesh_vertices))
        distance, nearest = scipy.spatial.cKDTree(mesh_vertices).query(rim_points, k=k, distance_upper_bound=weld)
        distance, nearest = distance.reshape(len(rim), k), nearest.reshape(len(rim), k)
        found = np.isfinite(distance)  # (R, k) candidates within `weld`, nearest first
        candidates = torch.as_tensor(mesh_vertices[np.where(found, nearest, 0)].reshape(-1, 3), dtype=torch.float32)
        uv_candidates, _ = camera.project(candidates)
        uv_rim, _ = camera.project(torch.as_tensor(rim_points, dtype=torch.float32))
        shift = (uv_candidates.view(len(rim), k, 2) - uv_rim[:, None]).norm(dim=-1).numpy()
        ok = found & (shift < pixel_tolerance)
        weldable = ok.any(axis=1)
        first = ok.argmax(axis=1)  # the nearest candidate that keeps the image point
        remap = np.arange(len(mesh.vertices) + len(patch.vertices))
        remap[rim[weldable]] = nearest[weldable, first[weldable]]
        patch_faces = remap[patch_faces]
        corners = np.sort(patch_faces, axis=1)
        patch_faces = patch_faces[(corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2])]
    vertices = np.concatenate([np.asarray(mesh.vertices), np.asarray(patch.vertices)])
    faces = np.concatenate([np.asarray(mesh.faces), patch_faces])
    colors = np.concatenate([np.asarray(mesh.visual.vertex_colors), np.asarray(patch.visual.vertex_colors)])
    out = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
    pbr = mesh.vertex_attributes.get("pbr")
    if pbr is not None:
        pbr = np.asarray(pbr, dtype=np.float32)
        fill = np.zeros((len(patch.vertices), pbr.shape[1]), dtype=np.float32)
        fill[:, :3] = np.asarray(patch.visual.vertex_colors)[:, :3] / 255.0
        fill[:, 3:] = np.median(pbr[:, 3:], axis=0) if len(pbr) else (0.0, 0.5, 1.0)[: pbr.shape[1] - 3]
        out.vertex_attributes["pbr"] = np.concatenate([pbr, fill])
    return out
