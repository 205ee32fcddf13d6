"""Tests for mesh <-> sparse voxels (pixal3d.geometry.dual_grid)."""

from __future__ import annotations

import pytest

from pixal3d.errors import InputError
from pixal3d.geometry import dual_grid


@pytest.mark.parametrize("resolution", [0, 32, 100, 1024, 256.0, True])
def test_resolution_out_of_range(resolution):
    with pytest.raises(InputError, match="64, 128, 256, 512"):
        dual_grid.check_resolution(resolution)
