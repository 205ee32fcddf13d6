"""pixal3d: pixel-aligned 3D asset generation from a single image.

Public surface only; everything else is imported from its own module. `Camera`, `Pixal3DPipeline` and `Asset`
load on first use (PEP 562): they pull in torch (and the pipeline every model and the geometry stack), and
`pixal3d --help` / `--version` must stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pixal3d.errors import InputError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pixal3d.asset import Asset
    from pixal3d.camera import Camera
    from pixal3d.pipeline import Pixal3DPipeline

__all__ = ["Asset", "Camera", "InputError", "Pixal3DPipeline", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Camera":
        from pixal3d.camera import Camera

        return Camera
    if name == "Pixal3DPipeline":
        from pixal3d.pipeline import Pixal3DPipeline

        return Pixal3DPipeline
    if name == "Asset":
        from pixal3d.asset import Asset

        return Asset
    raise AttributeError(f"module 'pixal3d' has no attribute {name!r}")
