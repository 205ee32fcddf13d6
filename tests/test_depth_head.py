"""Depth head (pixal3d.models.depth_head): output frame, ground-truth splat, loss and metrics."""

from __future__ import annotations

import math

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
