"""The arguments of `Pixal3DPipeline.__call__`: checked at once, before any work (DESIGN section 11: bad input gets one
clear error naming the problem and the fix)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pixal3d.camera import Camera
from pixal3d.errors import InputError
from pixal3d.preprocess import ImageInput


def check_call(
    image: ImageInput | Sequence[ImageInput],
    fov: float | None,
    seed: int,
    steps: int | None,
    guidance: float | None,
    resolution: int | None,
    faces: int,
    texture_size: int,
    cameras: Sequence[Camera] | None,
    generator: torch.Generator | None,
    r_hr: int,
) -> list[ImageInput]:
    """Validate every argument of a pipeline call before any work (`r_hr`: the resolution the pipeline decodes at);
    returns the views as a list. Raises `InputError`."""
    from pixal3d.geometry.export import ExportOptions

    views = list(image) if isinstance(image, (list, tuple)) else [image]
    if not views:
        raise InputError("no image given")
    for view in views:
        if isinstance(view, (str, os.PathLike)) and not Path(view).is_file():
            raise InputError(f"{os.fspath(view)}: no such image file; check the path")
    if fov is not None:
        if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not math.isfinite(fov) or fov <= 0:
            raise InputError(f"fov must be a number in (0, pi) radians, got {fov!r}")
        if fov >= math.pi:
            raise InputError(f"fov must be in (0, pi) radians, got {fov}; degrees? use math.radians({fov})")
    if cameras is not None:
        if len(cameras) != len(views) or not all(isinstance(c, Camera) for c in cameras):
            raise InputError(f"cameras must be one Camera per view: {len(views)} views, got {len(cameras)} items")
        if fov is not None:
            raise InputError("give the FoV through the cameras (cameras[0].fov), not both fov and cameras")
    elif len(views) > 1:
        raise InputError(
            f"{len(views)} images were given without cameras: multi-view input needs one Camera per view "
            "(relative to view 0); for different objects call the pipeline once per image"
        )
    if generator is None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if guidance is not None and (
        isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < 100
    ):
        raise InputError(f"guidance must be a number in [0, 100) (1 = no guidance), got {guidance!r}")
    if resolution is not None and resolution != r_hr:
        raise InputError(
            f"this pipeline decodes at resolution {r_hr} only (its shape VAE's R_hr), got {resolution!r}; "
            "omit resolution (--resolution) or load a pipeline trained at that resolution"
        )
    ExportOptions(faces=faces, texture_size=texture_size)  # the export's checks, before any work
    return views


def as_options(value: object, cls: type, name: str) -> object:
    """`True` -> `cls()`, `False` -> `cls(enabled=False)`, an instance of `cls` as it is; else `InputError`."""
    if isinstance(value, bool):
        return cls(enabled=value)
    if isinstance(value, cls):
        return value
    raise InputError(f"{name} must be True, False or a {cls.__name__}, got {value!r}")


def aliased(name: str, value: object, alias: str, alias_value: object) -> object:
    """One argument under two names (the diffusers name and ours): the one given, and never two different values."""
    if value is not None and alias_value is not None and value != alias_value:
        raise InputError(f"{name}={value!r} and {alias}={alias_value!r} name the same setting; give only {name}")
    return value if value is not None else alias_value
