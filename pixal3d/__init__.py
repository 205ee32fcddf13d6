"""pixal3d: pixel-aligned 3D asset generation from a single image.

Public surface only; everything else is imported from its own module.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pixal3d.camera import Camera  # noqa: E402
from pixal3d.errors import InputError  # noqa: E402

__all__ = ["Camera", "InputError", "__version__"]
