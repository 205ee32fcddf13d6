"""FoV head: the input camera's horizontal field of view estimated from the encoder's features (DESIGN section 2).

The global tokens `[B, T, C]` (pooled deepest features) are flattened and mapped by a small MLP to a sigmoid
scaled into `(min_degrees, max_degrees)`; the output is in radians, like every angle in the library. It is
used when the user gives no `--fov`; the training target is the crop FoV of each rendered sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

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

    def __post_init__(self) -> None:
        if not 0 < self.min_degrees < self.max_degrees < 180:
            raise InputError(
                f"FoV range must satisfy 0 < min < max < 180 degrees, got ({self.min_degrees}, {self.max_degrees})"
            )


class FovHead(nn.Module):
    """Global tokens -> horizontal FoV in radians."""

    def __init__(self, config: FovHeadConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.feature_channels)
        self.mlp = nn.Sequential(
            nn.Linear(config.tokens * config.feature_channels, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, 1),
        )

    def forward(self, features: FeatureMaps) -> torch.Tensor:
        """`features.global_tokens [B, T, C]` -> FoV `[B]` float32 radians in (min, max)."""
        tokens = features.global_tokens
        expected = (self.config.tokens, self.config.feature_channels)
        if tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"global tokens must be [B, {expected[0]}, {expected[1]}], got {tuple(tokens.shape)}")
        x = self.mlp(self.norm(tokens).flatten(1))[:, 0]  # (B, T, C) -> (B, T*C) -> (B,)
        lo, hi = math.radians(self.config.min_degrees), math.radians(self.config.max_degrees)
        return (lo + (hi - lo) * torch.sigmoid(x)).float()
