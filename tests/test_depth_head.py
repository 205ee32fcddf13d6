"""Depth head (pixal3d.models.depth_head): output frame, ground-truth splat, loss and metrics."""

from __future__ import annotations

import math

import pytest
import torch

from pixal3d.camera import Camera
from pixal3d.encoder import FeatureMaps
from pixal3d.models.depth_head import (
    DepthHead,
    DepthHeadConfig,
    depth_loss,
    depth_metrics,
    splat_depth,
    z_to_depth,
)


def test_head_output_is_volume_z_at_quarter_resolution() -> None:
    head = DepthHead(DepthHeadConfig(feature_channels=8, hidden=8, layers=1))
    maps = [torch.rand(2, 4, 32, 32), torch.rand(2, 8, 8, 8)]
    z = head(FeatureMaps(maps=maps, global_tokens=torch.rand(2, 1, 8)))
    assert z.shape == (2, 1, 8, 8) and z.dtype == torch.float32 and z.abs().max() < 0.5
    camera = Camera(fov=math.radians(40), size=32)
    assert torch.allclose(z_to_depth(z, camera), camera.eye_distance - z)


def test_splat_of_a_plane_gives_its_z_and_the_loss_vanishes_on_it() -> None:
    camera = Camera(fov=math.radians(40), size=32)
    g = torch.linspace(-0.45, 0.45, 200)
    x, y = torch.meshgrid(g, g, indexing="ij")
    plane = torch.stack([x.reshape(-1), y.reshape(-1), torch.full((x.numel(),), 0.1)], 1)
    behind = plane.clone()
    behind[:, 2] = -0.3  # hidden by the plane: must not win the z-buffer
    points = torch.cat([plane, behind])
    z = splat_depth(points, torch.zeros(len(points), dtype=torch.int64), [camera], 8)
    covered = torch.isfinite(z)
    assert covered.float().mean() > 0.5 and torch.allclose(z[covered], torch.tensor(0.1))
    alpha = torch.ones(1, 1, 32, 32)
    assert float(depth_loss(torch.where(covered, z, 0.0), z, alpha)) == 0.0
    assert abs(float(depth_loss(torch.full_like(z, 0.2), z, alpha)) - 0.1) < 1e-6
    depth = z_to_depth(torch.where(covered, z, 0.0), camera)
    m = depth_metrics(depth * 1.3, depth, covered)
    assert abs(m["depth_absrel"] - 0.3) < 1e-6 and m["depth_delta1"] == 0.0
    assert depth_metrics(depth * 1.1, depth, covered)["depth_delta1"] == 1.0


def test_pool_depth_averages_valid_pixels_and_marks_empty_cells() -> None:
    from pixal3d.models.depth_head import finite_depth, pool_depth

    depth = torch.zeros(8, 8)
    depth[:4, :4] = 2.0
    depth[0, 4] = 3.0  # one valid pixel of the top-right cell
    pooled = pool_depth(depth, 2)
    assert pooled[0, 0] == 2.0 and pooled[0, 1] == 3.0
    assert torch.isinf(pooled[1]).all()
    filled = finite_depth(pooled)
    assert torch.equal(filled[1], torch.full((2,), 3.0)) and finite_depth(torch.full((2, 2), math.inf)) is None


def test_a_given_depth_map_replaces_the_heads_and_bad_maps_are_refused() -> None:
    from pixal3d.errors import InputError
    from pixal3d.pipeline import Pixal3DPipeline

    pipe = Pixal3DPipeline.from_config("micro")
    pipe.set_progress_bar_config(disable=True)
    image = torch.zeros(64, 64, 4)
    image[16:48, 16:48] = torch.tensor([0.8, 0.2, 0.2, 1.0])
    given = torch.zeros(64, 64)
    given[16:48, 16:48] = 2.5
    asset = pipe(image.numpy(), fov=0.7, seed=0, depth=given, steps=2)
    assert asset.depth is not None and torch.allclose(asset.depth, torch.full_like(asset.depth, 2.5))
    for bad in (torch.zeros(2, 64, 64), -given, torch.full((64, 64), math.nan), given.long(), "depth.png"):
        with pytest.raises(InputError, match="depth"):
            pipe(image.numpy(), fov=0.7, seed=0, depth=bad, steps=2)


def test_dilated_head_keeps_the_map_size_and_its_config_round_trips(tmp_path) -> None:
    from pixal3d.config import load_config, save_config

    dilated = DepthHeadConfig(feature_channels=8, hidden=8, layers=5, dilations=[1, 2, 4, 8])
    head = DepthHead(dilated)
    convs = [m for m in head.net if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c.dilation[0] for c in convs] == [1, 2, 4, 8, 1]  # cycled over the layers
    z = head(FeatureMaps(maps=[torch.rand(1, 4, 64, 64), torch.rand(1, 8, 16, 16)], global_tokens=torch.rand(1, 1, 8)))
    assert z.shape == (1, 1, 16, 16)
    assert [c.dilation[0] for c in DepthHead(DepthHeadConfig(feature_channels=8, hidden=8)).net
            if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)] == [1, 1, 1, 1]
    save_config(dilated, tmp_path / "config.json")
    assert load_config(DepthHeadConfig, tmp_path / "config.json") == dilated
    with pytest.raises(Exception, match="dilations"):
        DepthHeadConfig(dilations=[0])
