"""FoV head: the input camera's horizontal field of view estimated from the encoder's features (DESIGN section 2).

The global tokens `[B, T, C]` (pooled deepest features) are flattened and mapped by a small MLP to a sigmoid
scaled into `(min_degrees, max_degrees)`; the output is in radians, like every angle in the library. It is
used when the user gives no `--fov`; the training target is the crop FoV of each rendered sample.

With `conv_layers > 0` the MLP also reads a convolutional summary of the fused `/4` map and the image (pooled to
it), with two pixel-coordinate channels: stride-2 3x3 convolutions, then a `grid x grid` average pool that keeps
where in the frame each feature is. Perspective shows as position-dependent foreshortening (a box's receding edges
converge faster under a wide lens, and more so towards the frame's edges), which the pooled tokens average away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.encoder import FeatureMaps
from pixal3d.errors import InputError


@dataclass
class FovHeadConfig:
    """FoV head hyper-parameters (defaults: the shipped tiny model)."""

    feature_channels: int = 64
    """C of the encoder's global tokens (EncoderConfig.channels)."""
    tokens: int = 5
    """T, the number of global tokens (EncoderConfig.global_grid^2 + 1)."""
    hidden: int = 128
    """Hidden width of the MLP."""
    min_degrees: float = 5.0
    """Smallest FoV the head can predict, degrees."""
    max_degrees: float = 90.0
    """Largest FoV the head can predict, degrees."""
    conv_layers: int = 0
    """Stride-2 3x3 convolutions over the fused `/4` map, the image pooled to it and two coordinate channels; their
    output, average-pooled to `grid x grid`, joins the tokens at the MLP's input. 0: the tokens alone (the first
    heads' layout)."""
    conv_hidden: int = 64
    """Width of those convolutions."""
    grid: int = 4
    """Side of the pooled convolutional summary."""
    image_channels: int = 4
    """Channels of the raw image map (RGBA), read by the convolutions."""

    def __post_init__(self) -> None:
        if not 0 < self.min_degrees < self.max_degrees < 180:
            raise InputError(
                f"FoV range must satisfy 0 < min < max < 180 degrees, got ({self.min_degrees}, {self.max_degrees})"
            )
        if self.conv_layers < 0 or self.conv_hidden < 1 or self.grid < 1:
            raise InputError(f"FoV head needs conv_layers >= 0, conv_hidden >= 1 and grid >= 1, got "
                             f"{self.conv_layers}, {self.conv_hidden}, {self.grid}")


class FovHead(nn.Module):
    """Global tokens -> horizontal FoV in radians."""

    def __init__(self, config: FovHeadConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.feature_channels)
        inputs = config.tokens * config.feature_channels
        self.conv: nn.Sequential | None = None
        if config.conv_layers > 0:
            layers: list[nn.Module] = []
            channels = config.feature_channels + config.image_channels + 2
            groups = 8 if config.conv_hidden % 8 == 0 else 1
            for _ in range(config.conv_layers):
                layers += [nn.Conv2d(channels, config.conv_hidden, 3, stride=2, padding=1),
                           nn.GroupNorm(groups, config.conv_hidden), nn.GELU()]
                channels = config.conv_hidden
            self.conv = nn.Sequential(*layers)
            inputs += config.conv_hidden * config.grid**2
        self.mlp = nn.Sequential(
            nn.Linear(inputs, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, features: FeatureMaps) -> torch.Tensor:
        """`features.global_tokens [B, T, C]` -> FoV `[B]` float32 radians in (min, max)."""
        tokens = features.global_tokens
        expected = (self.config.tokens, self.config.feature_channels)
        if tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"global tokens must be [B, {expected[0]}, {expected[1]}], got {tuple(tokens.shape)}")
        x = self.norm(tokens).flatten(1)  # (B, T, C) -> (B, T*C)
        if self.conv is not None:
            x = torch.cat([x, self._summary(features).to(x.dtype)], dim=1)
        x = self.mlp(x)[:, 0]  # (B, T*C [+ C'*G*G]) -> (B,)
        lo, hi = math.radians(self.config.min_degrees), math.radians(self.config.max_degrees)
        return (lo + (hi - lo) * torch.sigmoid(x)).float()

    def _summary(self, features: FeatureMaps) -> torch.Tensor:
        """The convolutions' `[B, conv_hidden * grid^2]` summary of the fused map, the image and pixel position."""
        c = self.config
        x = features.fused_with_image(c.feature_channels, c.image_channels, "FoV head")  # (B, C + 4, h, w)
        b, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None].expand(b, 2, h, w)  # (B, 2, h, w)
        x = self.conv(torch.cat([x, coords], dim=1))  # (B, C', h / 2^L, w / 2^L)
        return F.adaptive_avg_pool2d(x, c.grid).flatten(1)  # (B, C' * grid^2)
