"""Cameras and frames: the one convention every part of pixal3d uses (DESIGN section 2).

Volume frame: the asset lives in the cube `[-0.5, 0.5]^3`, axes of the input camera, OpenGL style:
`+x` image right, `+y` image up, `+z` towards the camera (glTF's frame too).

Camera: pinhole, square image of side `S` pixels, horizontal field of view `fov` in radians. The canonical
(input) camera sits at `(0, 0, d)` looking down `-z` with `+y` up; default `d = 0.5 / tan(fov / 2)`, so the
cube's mid-plane spans the image width. Focal length in pixels `f = (S / 2) / tan(fov / 2)`.

Pixels: `u` (right) and `v` (down) are continuous coordinates whose origin is the top-left corner of the
top-left pixel; pixel `i` covers `[i, i + 1)`, its centre is `i + 0.5`. For `grid_sample` with
`align_corners=False` the normalised coordinate is `2 u / S - 1`.

Voxel grid of resolution `R`: voxel `(i, j, k)` covers `[-0.5 + i/R, -0.5 + (i+1)/R)` per axis (x, y, z order);
its centre is `-0.5 + (i + 0.5) / R`.

All maths runs in float32 (or float64 if the inputs are float64), whatever the model dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pixal3d.errors import InputError
from pixal3d.transfer import to_device


def default_distance(fov: float | torch.Tensor) -> float | torch.Tensor:
    """Camera distance `d = 0.5 / tan(fov / 2)` at which the cube's mid-plane spans the image width."""
    if isinstance(fov, torch.Tensor):
        return 0.5 / torch.tan(fov / 2)
    return 0.5 / math.tan(fov / 2)


def focal_length(fov: float, size: int) -> float:
    """Focal length in pixels, `f = (S / 2) / tan(fov / 2)`."""
    return (size / 2) / math.tan(fov / 2)


def fov_of_crop(fov: float, image_width: float, crop_side: float) -> float:
    """Horizontal FoV (radians) of a centred square crop of side `crop_side` px from an image `image_width` px
    wide taken with horizontal FoV `fov`: `2 atan(tan(fov / 2) * crop_side / image_width)`.

    The crop must be centred on the principal point (DESIGN section 2: training renders are re-aimed so it is).
    """
    return 2.0 * math.atan(math.tan(fov / 2) * crop_side / image_width)


def _check_fov(fov: float) -> None:
    if not (isinstance(fov, (int, float)) and math.isfinite(fov) and 0.0 < fov < math.pi):
        hint = f"; degrees? use math.radians({fov})" if isinstance(fov, (int, float)) and fov >= math.pi else ""
        raise InputError(f"fov must be in (0, pi) radians, got {fov!r}{hint}")


def translation(offset: tuple[float, float, float]) -> torch.Tensor:
    """`[4, 4] float64` homogeneous translation matrix."""
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 3] = torch.tensor(offset, dtype=torch.float64)
    return m


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-world `[4, 4] float64` of an OpenGL camera at `eye [3]` looking at `target [3]` (`-z` forward).

    `up [3]` defaults to `+y`; when the view direction is parallel to it, `+z` is used instead.
    """
    eye = torch.as_tensor(eye, dtype=torch.float64)
    target = torch.as_tensor(target, dtype=torch.float64)
    up = torch.as_tensor([0.0, 1.0, 0.0] if up is None else up, dtype=torch.float64)
    back = eye - target
    back = back / back.norm()
    if torch.cross(up, back, dim=0).norm() < 1e-6:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    right = torch.cross(up, back, dim=0)
    right = right / right.norm()
    true_up = torch.cross(back, right, dim=0)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a `[4, 4]` affine matrix to `points [..., 3]`; returns `[..., 3]` in the points' dtype."""
    m = to_device(matrix.to(dtype=points.dtype), points.device)
    return points @ m[:3, :3].T + m[:3, 3]


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera in the volume frame.

    Attributes:
        fov: horizontal field of view in radians, in (0, pi).
        size: image side `S` in pixels (square images).
        distance: distance of the canonical camera from the volume origin; None means `0.5 / tan(fov / 2)`.
            Ignored when `cam_to_world` is given.
        cam_to_world: optional `[4, 4]` pose (stored as float64) (OpenGL camera axes) of an extra view, relative to the
            volume frame of view 0; None means the canonical camera at `(0, 0, distance)` looking down `-z`.
    """

    fov: float
    size: int = 512
    distance: float | None = None
    cam_to_world: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_fov(self.fov)
        if not (isinstance(self.size, int) and self.size > 0):
            raise InputError(f"camera size must be a positive int of pixels, got {self.size!r}")
        if self.distance is not None and not (math.isfinite(self.distance) and self.distance > 0):
            raise InputError(f"camera distance must be positive and finite, got {self.distance!r}")
        if self.cam_to_world is not None:
            c2w = torch.as_tensor(self.cam_to_world).detach().to("cpu", torch.float64)
            if c2w.shape != (4, 4) or not torch.isfinite(c2w).all():
                raise InputError(f"cam_to_world must be a finite [4, 4] matrix, got shape {tuple(c2w.shape)}")
            object.__setattr__(self, "cam_to_world", c2w)

    @classmethod
    def from_degrees(cls, fov_degrees: float, size: int = 512, **kwargs: object) -> Camera:
        """Build from a FoV in degrees (CLI and HTTP edges)."""
        return cls(fov=math.radians(fov_degrees), size=size, **kwargs)

    # ------------------------------------------------------------------------------------------ intrinsics
    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return focal_length(self.fov, self.size)

    @property
    def eye_distance(self) -> float:
        """The canonical camera's distance `d` from the origin."""
        return self.distance if self.distance is not None else float(default_distance(self.fov))

    def with_size(self, size: int) -> Camera:
        """The same camera rendering an image of side `size` (same FoV, same pose)."""
        return Camera(fov=self.fov, size=size, distance=self.distance, cam_to_world=self.cam_to_world)

    # ------------------------------------------------------------------------------------------ extrinsics
    def c2w(self) -> torch.Tensor:
        """Camera-to-world (volume frame) `[4, 4] float64`."""
        if self.cam_to_world is not None:
            return self.cam_to_world
        return translation((0.0, 0.0, self.eye_distance))

    def w2c(self) -> torch.Tensor:
        """World (volume frame)-to-camera `[4, 4] float64`."""
        return torch.linalg.inv(self.c2w())

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in the volume frame, `[3] float32`."""
        return self.c2w()[:3, 3].float()

    # ------------------------------------------------------------------------------------------ projection
    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """Volume-frame `points [..., 3]` -> camera coordinates `[..., 3]` (OpenGL: `-z` forward)."""
        dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
        return transform_points(self.w2c(), points.to(dtype))

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project volume-frame points to pixels.

        Args:
            points: `[..., 3]` float, volume frame.

        Returns:
            uv: `[..., 2]` continuous pixel coordinates (u right, v down, origin at the top-left corner), float32
                (float64 for float64 input).
            depth: `[...]` distance along the viewing axis (`-z_cam`); positive in front of the camera.
        """
        pc = self.to_camera(points)
        depth = -pc[..., 2]
        f, half = self.focal, self.size / 2
        u = f * pc[..., 0] / depth + half
        v = -f * pc[..., 1] / depth + half
        return torch.stack([u, v], dim=-1), depth

    def unproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Inverse of `project`: pixels `uv [..., 2]` at `depth [...]` -> volume-frame points `[..., 3]`."""
        dtype = torch.float64 if uv.dtype == torch.float64 else torch.float32
        uv, depth = uv.to(dtype), depth.to(dtype)
        f, half = self.focal, self.size / 2
        x = (uv[..., 0] - half) * depth / f
        y = -(uv[..., 1] - half) * depth / f
        pc = torch.stack([x, y, -depth], dim=-1)
        return transform_points(self.c2w(), pc)

    def normalized(self, uv: torch.Tensor) -> torch.Tensor:
        """Pixels `uv [..., 2]` -> `grid_sample` coordinates in [-1, 1] (`align_corners=False`)."""
        return uv * (2.0 / self.size) - 1.0

    def rays(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One ray per pixel centre.

        Returns:
            origins: `[S, S, 3]` float32, the camera centre repeated (volume frame).
            directions: `[S, S, 3]` float32 unit vectors, row `v` major (index `[row, col]`).
        """
        s = self.size
        centres = torch.arange(s, dtype=torch.float32, device=device) + 0.5
        vv, uu = torch.meshgrid(centres, centres, indexing="ij")
        f, half = self.focal, s / 2
        d_cam = torch.stack([(uu - half) / f, -(vv - half) / f, -torch.ones_like(uu)], dim=-1)
        rot = self.c2w()[:3, :3].to(device=device, dtype=torch.float32)
        directions = d_cam @ rot.T
        directions = directions / directions.norm(dim=-1, keepdim=True)
        origins = self.center.to(device).expand(s, s, 3).clone()
        return origins, directions


# ------------------------------------------------------------------------------------------------ voxel grids
def voxel_centers(
    resolution: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Centres of every voxel of an `R^3` grid: `[R, R, R, 3]`, indexed `[i, j, k]` (x, y, z)."""
    axis = coords_to_centers(torch.arange(resolution, device=device), resolution, dtype)
    gi, gj, gk = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([gi, gj, gk], dim=-1)


def coords_to_centers(coords: torch.Tensor, resolution: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer voxel coordinates `[N, 3]` (i, j, k) -> voxel centres `[N, 3]`, volume frame."""
    return -0.5 + (coords.to(dtype) + 0.5) / resolution


def points_to_coords(points: torch.Tensor, resolution: int) -> torch.Tensor:
    """Volume-frame `points [N, 3]` -> the integer voxel `(i, j, k)` holding each, `[N, 3] int64`.

    Points outside the cube give out-of-range indices; callers filter with `coords_in_grid`.
    """
    return torch.floor((points + 0.5) * resolution).long()


def coords_in_grid(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """`[N] bool`: which integer coordinates `[N, 3]` lie inside the `R^3` grid."""
    return ((coords >= 0) & (coords < resolution)).all(dim=-1)


# ------------------------------------------------------------------------------------------- view alignment
@dataclass(frozen=True, eq=False)
class ViewAlignment:
    """The similarity transform between an arbitrary world frame and the canonical view-aligned frame.

    `to_volume` maps world points seen by a camera (pose `cam_to_world`, FoV `fov`) into the volume frame in
    which that camera is the canonical one: centre `(0, 0, d)`, `d = 0.5 / tan(fov / 2)`, looking down `-z`.
    World distances are scaled by `scale = d / aim_depth`, so the point at `aim_depth` on the optical axis lands
    on the volume origin. Every point stays on the pixel where the original camera saw it.

    Attributes:
        to_volume: `[4, 4] float64` world -> volume frame (rotation * scale + translation).
        camera: the canonical `Camera` of that frame.
        scale: world-to-volume length scale.
    """

    to_volume: torch.Tensor
    camera: Camera
    scale: float

    @property
    def to_world(self) -> torch.Tensor:
        """`[4, 4] float64` volume frame -> world (the inverse similarity)."""
        return torch.linalg.inv(self.to_volume)

    def points_to_volume(self, points: torch.Tensor) -> torch.Tensor:
        """World `points [..., 3]` -> volume frame, same dtype."""
        return transform_points(self.to_volume, points)

    def points_to_world(self, points: torch.Tensor) -> torch.Tensor:
        """Volume-frame `points [..., 3]` -> world, same dtype."""
        return transform_points(self.to_world, points)

    def normals_to_volume(self, normals: torch.Tensor) -> torch.Tensor:
        """World unit `normals [..., 3]` -> volume frame (rotation only; a similarity keeps them unit)."""
        rot = self.to_volume[:3, :3] / self.scale
        return normals @ rot.to(device=normals.device, dtype=normals.dtype).T


def view_alignment(cam_to_world: torch.Tensor, fov: float, aim_depth: float, size: int = 512) -> ViewAlignment:
    """The transform taking an asset seen by any camera into the canonical view-aligned volume frame.

    Args:
        cam_to_world: `[4, 4]` pose of the camera in the world (OpenGL axes: `-z` forward, `+y` up).
        fov: the camera's horizontal FoV in radians.
        aim_depth: world distance along the optical axis of the point that becomes the volume origin
            (normally the object's depth; the asset must then fit in the cube after scaling).
        size: image side of the returned canonical camera.

    Returns:
        A `ViewAlignment` whose `camera` projects every transformed point to the same pixel the original
        camera saw it at.
    """
    _check_fov(fov)
    if not (math.isfinite(aim_depth) and aim_depth > 0):
        raise InputError(f"aim_depth must be positive (the object must be in front of the camera), got {aim_depth}")
    c2w = torch.as_tensor(cam_to_world, dtype=torch.float64)
    d = float(default_distance(fov))
    scale = d / aim_depth
    # world -> camera (rigid), scale, then move the camera to (0, 0, d): p_vol = s * W2C p + (0, 0, d).
    w2c = torch.linalg.inv(c2w)
    to_volume = torch.eye(4, dtype=torch.float64)
    to_volume[:3, :4] = scale * w2c[:3, :4]
    to_volume[2, 3] += d
    return ViewAlignment(to_volume=to_volume, camera=Camera(fov=fov, size=size), scale=scale)
