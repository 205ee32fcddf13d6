"""Drawing and aligning views (DESIGN section 2): a random camera aimed at the asset, its render, the *same*
`preprocess_image` as user images, and the transform into the crop camera's volume frame.

Aim depth and scale: see `pixal3d.data.samples` (the sample definition); a view with no scale that fits the asset
into the cube is re-drawn, at most `MAX_REDRAWS` times (`ViewDoesNotFitError` after that).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from pixal3d.camera import Camera, fov_of_crop, view_alignment
from pixal3d.errors import InputError
from pixal3d.preprocess import preprocess_image
from pixal3d.render import RenderMesh, random_lighting, render_meshes, sample_view
from pixal3d.timing import timed
from pixal3d.transfer import to_host

logger = logging.getLogger(__name__)


MAX_REDRAWS = 32
"""Views drawn per sample before giving up (an asset no view fits in the cube is a bad asset)."""


class ViewDoesNotFitError(InputError):
    """No drawn view put the whole asset inside the volume cube."""


def fit_scale(points_cam: torch.Tensor, distance: float, limit: float) -> float | None:
    """The volume scale for camera-frame points, or None when no scale fits them in `[-limit, limit]^3`.

    A point `p` (camera frame, `-z` forward) lands at `s * p + (0, 0, d)`; each axis bounds `s` by a linear
    inequality, so the feasible scales form an interval. The preferred scale puts the middle of the depth
    range on the origin; it is clamped into the interval.

    Args:
        points_cam: `[N, 3] float64` asset points in the (OpenGL) camera frame.
        distance: `d`, the canonical camera's distance.
        limit: half-side of the allowed box (0.5 minus a margin).
    """
    depth = -points_cam[:, 2]
    if float(depth.min()) <= 0:
        return None
    lo = (distance - limit) / float(depth.min())
    hi = (distance + limit) / float(depth.max())
    lateral = float(points_cam[:, :2].abs().max())
    if lateral > 0:
        hi = min(hi, limit / lateral)
    if lo > hi:
        return None
    preferred = distance / (0.5 * float(depth.min() + depth.max()))
    return min(max(preferred, lo), hi)


def used_points(mesh: RenderMesh) -> torch.Tensor:
    """The vertices some face uses, `[N, 3] float64` on the CPU (what views are aimed and fitted at)."""
    return mesh.vertices[torch.unique(mesh.faces.flatten())].detach().to("cpu", torch.float64)


@dataclass(eq=False)
class AlignedView:
    """A drawn view whose asset fits the cube: everything of a `Sample` but the voxels (`align_view`).

    Attributes:
        image, fov, distance, view, redraws, center_offset: as in `Sample`.
        to_volume: `[4, 4] float64` asset frame -> volume frame.
        scale: asset-frame length -> volume length.
    """

    image: torch.Tensor
    fov: float
    distance: float
    scale: float
    to_volume: torch.Tensor
    view: int
    redraws: int
    center_offset: tuple[float, float]


RENDER_BATCH_CUDA = 16
"""Views rendered in one pass by `align_views` on a GPU (one `render_meshes` call: about 13 host syncs and ~800
kernel launches shared; about 0.3 GiB of peak memory per view at S = 512). The CPU renders one view per pass,
so its samples stay bit for bit those of one render per view."""


@dataclass(eq=False)
class ViewRequest:
    """One view to draw and align (`align_views`).

    Attributes:
        mesh: the asset converted by `mesh_from_trimesh` (its device is where the render runs).
        generator: the view's generator (`view_generator(asset_id, view)`); its draws decide the view.
        asset_id, view: for the aligned view and log messages.
        points: `[N, 3] float64` CPU copy of the mesh's used vertices (`used_points`), shared by its views.
    """

    mesh: RenderMesh
    generator: torch.Generator
    asset_id: str
    view: int
    points: torch.Tensor


def align_views(
    requests: list[ViewRequest],
    image_size: int = 512,
    resolution: int = 256,
    *,
    max_redraws: int = MAX_REDRAWS,
    render_batch: int | None = None,
    timings: dict[str, float] | None = None,
) -> list[AlignedView | ViewDoesNotFitError]:
    """Draw, render, preprocess and align views (the module docstring's steps before voxelisation).

    Works in rounds: every pending view draws its camera and lighting from its own generator, the round's views
    are rendered `render_batch` at a time in one `render_meshes` pass, and each is preprocessed and fitted; a
    view whose asset leaves the cube draws again in the next round. A view's draws come from its generator in
    the same order as when it is aligned alone, so its result does not depend on the other requests (on the
    CPU, bit for bit).

    Args:
        requests: the views.
        image_size, resolution, max_redraws, timings: as `make_sample`.
        render_batch: views per render pass; None: one on the CPU, `RENDER_BATCH_CUDA` on a GPU.

    Returns:
        Per request, its `AlignedView`, or the `ViewDoesNotFitError` when no view within `max_redraws` fitted.
    """
    limit = 0.5 - 0.5 / resolution
    results: list[AlignedView | ViewDoesNotFitError | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    for attempt in range(max_redraws):
        if not pending:
            break
        drawn = {}
        for n in pending:
            device = requests[n].mesh.device
            with timed(timings, "view", device):
                view = sample_view(requests[n].generator, requests[n].points, size=image_size)
                drawn[n] = (view, random_lighting(requests[n].generator))
        redraw = []
        for group in _render_groups(requests, pending, render_batch):
            device = requests[group[0]].mesh.device
            with timed(timings, "render", device):
                outputs = render_meshes([(requests[n].mesh, drawn[n][0].camera, drawn[n][1]) for n in group],
                                        gbuffers=False)
                rgba = torch.stack([out.rgba for out in outputs])
                rgba = to_host([[(rgba.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)]])[0][0].numpy()
            for n, image in zip(group, rgba, strict=True):
                aligned = _align(requests[n], drawn[n][0].camera, image, image_size, limit, attempt, timings)
                if aligned is None:
                    redraw.append(n)
                else:
                    results[n] = aligned
        pending = redraw
    for n in pending:
        request = requests[n]
        results[n] = ViewDoesNotFitError(
            f"{request.asset_id} view {request.view}: no view out of {max_redraws} fits the asset in the volume "
            "cube; the asset may be degenerate (e.g. a long thin rod) or not normalised"
        )
    return results


def _render_groups(requests: list[ViewRequest], pending: list[int], render_batch: int | None) -> list[list[int]]:
    """`pending` cut into render passes: consecutive views on one device, at most `render_batch` per pass."""
    groups: list[list[int]] = []
    for n in pending:
        device = requests[n].mesh.device
        size = render_batch or (1 if device.type == "cpu" else RENDER_BATCH_CUDA)
        if groups and len(groups[-1]) < size and requests[groups[-1][0]].mesh.device == device:
            groups[-1].append(n)
        else:
            groups.append([n])
    return groups


def _align(
    request: ViewRequest,
    camera: Camera,
    rgba: np.ndarray,
    image_size: int,
    limit: float,
    attempt: int,
    timings: dict[str, float] | None,
) -> AlignedView | None:
    """Preprocess one rendered view and fit the asset into the cube; None when it does not fit (re-draw)."""
    with timed(timings, "preprocess"):
        pre = preprocess_image(rgba, size=image_size, background="none")
    with timed(timings, "align"):
        x0, y0, side = pre.crop
        fov = fov_of_crop(camera.fov, image_size, side)
        d = 0.5 / math.tan(fov / 2)
        c2w = camera.c2w()
        points_cam = (request.points - c2w[:3, 3]) @ c2w[:3, :3]  # asset -> camera axes
        scale = fit_scale(points_cam, d, limit)
        if scale is None:
            logger.debug("%s view %d: draw %d leaves the cube (fov %.1f deg); re-drawing",
                         request.asset_id, request.view, attempt, math.degrees(fov))
            return None
        alignment = view_alignment(c2w, fov, d / scale, size=image_size)
    return AlignedView(
        image=torch.from_numpy(np.asarray(pre.image, dtype=np.uint8).copy()),
        fov=fov,
        distance=d,
        scale=alignment.scale,
        to_volume=alignment.to_volume,
        view=request.view,
        redraws=attempt,
        center_offset=(x0 + side / 2 - image_size / 2, y0 + side / 2 - image_size / 2),
    )


def align_view(
    mesh: RenderMesh,
    generator: torch.Generator,
    image_size: int = 512,
    resolution: int = 256,
    *,
    asset_id: str = "asset",
    view: int = 0,
    max_redraws: int = MAX_REDRAWS,
    points: torch.Tensor | None = None,
    timings: dict[str, float] | None = None,
) -> AlignedView:
    """Draw, render, preprocess and align one view: `align_views` of one request.

    Args:
        mesh: the asset converted by `mesh_from_trimesh` (its device is where the render runs).
        generator, image_size, resolution, asset_id, view, max_redraws, timings: as `make_sample`.
        points: `[N, 3] float64` CPU copy of the mesh's used vertices, when several views share it; None: read here.

    Raises:
        ViewDoesNotFitError: no view within `max_redraws` fitted the cube.
    """
    if points is None:
        with timed(timings, "view", mesh.device):
            points = used_points(mesh)
    result = align_views([ViewRequest(mesh, generator, asset_id, view, points)], image_size, resolution,
                         max_redraws=max_redraws, timings=timings)[0]
    if isinstance(result, ViewDoesNotFitError):
        raise result
    return result
