"""The silhouette as a hard fact (pixal3d.silhouette): carving and covering on synthetic masks."""

from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from pixal3d.camera import Camera
from pixal3d.silhouette import (
    boxes_touch_mask,
    carve_coords,
    carve_mesh,
    cover_coords,
    fill_mesh,
    ray_hits,
    render_coverage,
    view_mask,
)

S = 32


def disk_alpha(radius: float = 7.0, centre: tuple[float, float] = (16.0, 16.0)) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    return (((u - centre[0]) ** 2 + (v - centre[1]) ** 2) < radius**2).float()


def all_coords(r: int) -> torch.Tensor:
    ijk = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return torch.cat([torch.zeros(len(ijk), 1, dtype=torch.int64), ijk], 1).to(torch.int32)


def test_carve_keeps_exactly_the_voxels_whose_footprint_meets_the_mask() -> None:
    camera = Camera(fov=math.radians(40), size=S)
    view = view_mask(disk_alpha(), camera, dilation=0)
    coords = all_coords(8)
    kept = carve_coords(coords, 8, view)
    assert 0 < len(kept) < len(coords)
    # Brute force: a voxel stays iff some mask pixel lies in its projected box (8 corners' bounding box).
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32)
    mask = view.mask.numpy()
    expected = []
    for row in coords[:, 1:].float():
        uv, _ = camera.project((row + corners) / 8 - 0.5)
        lo, hi = np.floor(uv.min(0).values.numpy()).astype(int), np.floor(uv.max(0).values.numpy()).astype(int)
        lo, hi = np.clip(lo, 0, S), np.clip(hi + 1, 0, S)
        expected.append(bool(mask[lo[1]:hi[1], lo[0]:hi[0]].any()))
    assert torch.equal(boxes_touch_mask(coords[:, 1:], 8, view), torch.tensor(expected))


def test_cover_makes_every_mask_ray_hit_a_voxel() -> None:
    camera = Camera(fov=math.radians(40), size=S)
    depth = torch.full((S // 4, S // 4), camera.eye_distance)  # the plane z = 0, at the depth head's /4
    view = view_mask(disk_alpha(), camera, dilation=1, depth=depth)
    coords = torch.tensor([[0, 4, 4, 4]], dtype=torch.int32)
    occupied = torch.zeros(16, 16, 16, dtype=torch.bool)
    occupied[4, 4, 4] = True
    assert not bool(ray_hits(occupied, view)[view.mask].all())
    covered = cover_coords(coords, 16, view)
    occupied = torch.zeros(16, 16, 16, dtype=torch.bool)
    occupied[covered[:, 1].long(), covered[:, 2].long(), covered[:, 3].long()] = True
    assert bool(ray_hits(occupied, view)[view.mask].all())  # every mask pixel's ray meets the structure
    added = covered[:, 1:].long()
    assert ((added[:, 2] == 7) | (added[:, 2] == 8) | ((added == 4).all(1))).all()  # at the plane z = 0


def test_mesh_carved_to_the_mask_and_patched_where_it_sees_through() -> None:
    camera = Camera(fov=math.radians(40), size=S)
    alpha = disk_alpha(radius=9.0)
    view = view_mask(alpha, camera, dilation=1)
    # A plane z = 0 much wider than the disk, with a square hole in the middle.
    plane = trimesh.creation.box(extents=(0.9, 0.9, 0.02)).subdivide().subdivide().subdivide()
    centre = plane.triangles_center
    plane.update_faces(~((np.abs(centre[:, 0]) < 0.12) & (np.abs(centre[:, 1]) < 0.12)))  # a hole through it
    plane.remove_unreferenced_vertices()
    plane.visual.vertex_colors = np.tile([[200, 50, 50, 255]], (len(plane.vertices), 1)).astype(np.uint8)
    carved = carve_mesh(plane, view)
    assert len(carved.faces) < len(plane.faces)
    from pixal3d.silhouette import points_in_mask

    corners_in = points_in_mask(torch.as_tensor(carved.vertices, dtype=torch.float32), view).numpy()
    assert corners_in[carved.faces].any(1).all()  # no face lies wholly outside the dilated mask
    image = torch.rand(S, S, 3)
    filled = fill_mesh(carved, view, image)
    covered, _ = render_coverage(filled, camera)
    before, _ = render_coverage(carved, camera)
    mask = view.mask
    assert not bool(before[mask].all())
    interior = torch.from_numpy(
        __import__("cv2").erode(mask.numpy().astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    assert bool(covered[interior].all()) and bool(covered[mask].all())  # every mask pixel is covered now, rim too
    assert not bool((covered & ~before & ~mask).any())  # and the patch covers nothing outside the mask


def test_patch_covers_one_pixel_wide_strokes_and_nothing_else() -> None:
    """A mask of thin strokes (one-pixel lines, a lone pixel) beside a blob the mesh covers: every stroke pixel is
    covered after the fill (a patch on pixel centres has no 2 x 2 block there), and the patch stays inside the
    dilated mask (inside the mask itself with the half-pixel weld alone)."""
    camera = Camera(fov=math.radians(40), size=S)
    alpha = disk_alpha(radius=4.0, centre=(8.0, 8.0))
    alpha[4:28, 20] = 1.0  # vertical line
    for i in range(10):
        alpha[18 + i, 4 + i] = 1.0  # diagonal line (pixels touch at corners only)
    alpha[28, 28] = 1.0  # a lone pixel
    view = view_mask(alpha, camera, dilation=1)
    blob = trimesh.creation.box(extents=(0.9, 0.9, 0.02))  # covers the whole image: carve it to the blob
    blob.visual.vertex_colors = np.tile([[90, 90, 200, 255]], (len(blob.vertices), 1)).astype(np.uint8)
    blob = blob.subdivide().subdivide().subdivide().subdivide()
    keep = blob.triangles_center[:, 0] < -0.2  # the left part only: the blob's side of the image
    blob.update_faces(keep & (blob.triangles_center[:, 1] > 0.2))
    blob.remove_unreferenced_vertices()
    before, _ = render_coverage(blob, camera)
    mask = view.mask
    assert bool((before & mask).any()) and not bool(before[mask].all())
    image = torch.rand(S, S, 3)
    covered, _ = render_coverage(fill_mesh(blob, view, image), camera)
    assert bool(covered[mask].all())
    # The first pass's 1-pixel weld may move a rim by up to a pixel, inside the dilated mask; with only the
    # half-pixel weld the patch covers no pixel outside the mask at all.
    assert not bool((covered & ~before & ~view.dilated).any())
    strict, _ = render_coverage(fill_mesh(blob, view, image, pixel_tolerances=(0.5,)), camera)
    assert bool(strict[mask].all()) and not bool((strict & ~before & ~mask).any())


def test_small_pieces_are_dropped_unless_they_alone_cover_mask_pixels() -> None:
    from pixal3d.eval.topology import connected_components
    from pixal3d.silhouette import drop_fragments

    camera = Camera(fov=math.radians(40), size=S)
    view = view_mask(disk_alpha(radius=11.0), camera, dilation=1)
    body = trimesh.creation.box(extents=(0.3, 0.3, 0.3)).subdivide().subdivide().subdivide().subdivide()  # 3,072
    def piece(centre: tuple[float, float, float]) -> trimesh.Trimesh:  # 12 faces, a 0.1% piece of the whole
        return trimesh.creation.box(extents=(0.08, 0.08, 0.08)).apply_translation(centre)
    in_front = piece((0.0, 0.0, 0.32))  # seen, but in front of the body: the body covers its pixels too
    behind = piece((0.0, 0.0, -0.32))  # hidden behind the body
    alone = piece((0.22, 0.0, 0.0))  # in the mask beside the body: the only surface on its pixels
    mesh = trimesh.util.concatenate([body, in_front, behind, alone])
    mesh.visual.vertex_colors = np.tile([[10, 20, 30, 255]], (len(mesh.vertices), 1)).astype(np.uint8)
    assert connected_components(mesh.vertices, mesh.faces) == 4
    before, _ = render_coverage(mesh, camera)
    assert bool(before[view.mask].any())
    # the side piece must be the only cover of some mask pixels, or the test would not test the keep rule
    alone_only, _ = render_coverage(trimesh.util.concatenate([body, in_front, behind]), camera)
    assert bool((view.mask & before & ~alone_only).any())
    kept = drop_fragments(mesh, view, min_face_fraction=0.01, min_area_fraction=0.1)
    centres = kept.triangles_center
    assert connected_components(kept.vertices, kept.faces) == 2
    assert np.isclose(centres[:, 0], 0.22, atol=0.02).any()  # the side piece stays
    assert not (np.abs(centres[:, 2]) > 0.25).any()  # front and back pieces are gone
    after, _ = render_coverage(kept, camera)
    assert bool((after[view.mask] == before[view.mask]).all())  # the silhouette's coverage did not change
    assert len(kept.visual.vertex_colors) == len(kept.vertices)
    # nothing small: the mesh comes back as it is
    assert drop_fragments(body, view) is body
