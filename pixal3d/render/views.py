"""Training-view cameras: aim so that the object's 2D bounding box is centred and fills the frame with a margin.

DESIGN section 2: training samples must look like preprocessed user images, which are centred square crops of a
centred pinhole. So a training camera is *aimed* (rotated about its centre) until the projected bounding box of
the object is centred on the principal point, and moved along its axis until the box's longer side is `fill`
of the image (so a margin of `(1 - fill) / 2` remains on each side at the longer side). Both are solved jointly
by a few fixed-point iterations on the projected vertices (no principal-point offset remains).

Frame: the mesh's own frame, +y up (the environment's up); angles in radians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pixal3d.camera import Camera, look_at
from pixal3d.errors import InputError
from pixal3d.render.mesh import RenderMesh


@dataclass(frozen=True, eq=False)
class View:
    """A sampled training view.

    Attributes:
        camera: FoV, image side and `cam_to_world` pose in the mesh frame.
        aim_depth: depth along the optical axis of the object's bounding-box centre (for `view_alignment`).
        fill: the longer side of the object's 2D bounding box as a fraction of the image side.
    """

    camera: Camera
    aim_depth: float
    fill: float


def _points(mesh: RenderMesh | torch.Tensor) -> torch.Tensor:
    points = mesh.vertices[mesh.faces.flatten()] if isinstance(mesh, RenderMesh) else mesh
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise InputError(f"expected a RenderMesh or points [N, 3], got shape {tuple(points.shape)}")
    return points.detach().to("cpu", torch.float64)


def _image_box(
    points: torch.Tensor, eye: torch.Tensor, rot: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    """Centre `[2]` (x right, y up) and half-size of the points' bbox on the `z = -1` plane; min depth."""
    pc = (points - eye) @ rot  # world -> camera axes (rot has the camera axes as columns)
    depth = -pc[:, 2]
    plane = pc[:, :2] / depth.clamp(min=1e-9)[:, None]
    lo, hi = plane.amin(dim=0), plane.amax(dim=0)
    return (lo + hi) / 2, float((hi - lo).max()) / 2, float(depth.min())


def aim_camera(
    mesh: RenderMesh | torch.Tensor,
    fov: float,
    direction: torch.Tensor,
    fill: float = 0.85,
    *,
    iterations: int = 12,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Camera-to-world `[4, 4] float64` looking at the mesh from `direction`, its 2D bbox centred and `fill` wide.

    Args:
        mesh: a `RenderMesh` (its used vertices) or points `[N, 3]`.
        fov: horizontal (= vertical, square images) field of view in radians.
        direction: `[3]` from the object towards the camera (any length), mesh frame.
        fill: longer bbox side / image side, in (0, 1); 0.8-0.9 leaves a 5-10 % margin.
        iterations: fixed-point steps (each re-aims and re-distances once); 3-5 usually reach `tolerance`.
        tolerance: stop when the bbox centre and size errors (tangent-plane units / relative) are below it.
    """
    if not 0.0 < fill < 1.0:
        raise InputError(f"fill must be in (0, 1), got {fill}")
    if not (0.0 < fov < math.pi):
        raise InputError(f"fov must be in (0, pi) radians, got {fov}; degrees? use math.radians({fov})")
    points = _points(mesh)
    direction = torch.as_tensor(direction, dtype=torch.float64).flatten()
    if direction.numel() != 3 or not torch.isfinite(direction).all() or direction.norm() == 0:
        raise InputError(f"direction must be a non-zero [3] vector, got {direction.tolist()}")
    lo, hi = points.amin(dim=0), points.amax(dim=0)
    centre = (lo + hi) / 2
    radius = float((points - centre).norm(dim=-1).max()) or 1.0
    target = fill * math.tan(fov / 2)
    eye = centre + direction / direction.norm() * radius / math.sin(fov / 2) / fill
    c2w = look_at(eye, centre)
    for _ in range(iterations):
        rot = c2w[:3, :3]
        box_centre, half, _ = _image_box(points, eye, rot)
        if float(box_centre.abs().max()) < tolerance and abs(half / target - 1) < tolerance:
            break
        # Re-aim through the bbox centre, then move along the new axis so the size scales by half/target.
        forward = rot @ torch.cat([box_centre, torch.tensor([-1.0], dtype=torch.float64)])
        forward = forward / forward.norm()
        depth = float((centre - eye) @ forward)
        new_depth = depth * half / target
        eye = eye + forward * (depth - new_depth)
        if (eye - centre).norm() < 1.05 * radius:  # never inside the bounding sphere
            eye = centre + (eye - centre) / (eye - centre).norm() * 1.05 * radius
        c2w = look_at(eye, eye + forward)
    return c2w


def aim_depth(mesh: RenderMesh | torch.Tensor, cam_to_world: torch.Tensor) -> float:
    """Depth along the optical axis (`-z_cam`) of the mesh's bounding-box centre."""
    points = _points(mesh)
    c2w = torch.as_tensor(cam_to_world, dtype=torch.float64)
    centre = (points.amin(dim=0) + points.amax(dim=0)) / 2
    return float(-(centre - c2w[:3, 3]) @ c2w[:3, 2])


def sample_view(
    generator: torch.Generator,
    mesh: RenderMesh | torch.Tensor,
    size: int = 512,
    *,
    fov_range: tuple[float, float] = (math.radians(10), math.radians(70)),
    fill_range: tuple[float, float] = (0.8, 0.9),
    elevation_range: tuple[float, float] = (math.radians(-30), math.radians(60)),
) -> View:
    """Draw a training view: FoV, direction (uniform over the sphere band of `elevation_range`) and fill.

    Args:
        generator: CPU `torch.Generator`; the same state gives the same view.
        mesh: the object (mesh frame, +y up).
        size: image side of the returned camera.
        fov_range: FoV bounds in radians (uniform in between).
        fill_range: bounds of the bbox's longer side as a fraction of the image (uniform in between).
        elevation_range: camera elevation bounds in radians above the object's horizontal plane.
    """
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    fov = fov_range[0] + (fov_range[1] - fov_range[0]) * u[0]
    fill = fill_range[0] + (fill_range[1] - fill_range[0]) * u[1]
    azimuth = 2 * math.pi * u[2]
    s_lo, s_hi = math.sin(elevation_range[0]), math.sin(elevation_range[1])
    elevation = math.asin(s_lo + (s_hi - s_lo) * u[3])
    direction = torch.tensor(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )
    c2w = aim_camera(mesh, fov, direction, fill)
    return View(
        camera=Camera(fov=fov, size=size, cam_to_world=c2w), aim_depth=aim_depth(mesh, c2w), fill=fill
    )
