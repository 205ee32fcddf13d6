"""Stage 1 structure VAE: a dense 3D-conv VAE of the coarse occupancy grid (DESIGN section 5).

The coarse occupancy `[B, 1, R, R, R]` (R = 64 by default; 1 where a coarse voxel holds surface, volume frame of
DESIGN section 2, axes in (x, y, z) = (i, j, k) order) is encoded to a latent grid `[B, C_z, r, r, r]`
(r = 16, C_z = 8 by default) and decoded back to occupancy logits. The stage-1 flow transformer generates the
latent grid; `decode` turns it into occupancy and `active_coords` into the active coarse voxels of stage 2.

Architecture: conv stem, then per resolution level a few residual blocks (GroupNorm, SiLU, 3^3 conv) and a
stride-2 conv; a 1^3 conv to (mean, log-variance). The decoder mirrors it with nearest-neighbour upsampling.
GroupNorm (not BatchNorm) keeps every sample independent, so DDP and gradient accumulation do not change results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.errors import InputError


@dataclass
class StructureVAEConfig:
    """Sizes of the stage-1 dense occupancy VAE; defaults are the shipped tiny model."""

    resolution: int = 32
    """Side R of the coarse occupancy grid (voxels per axis)."""
    latent_resolution: int = 8
    """Side r of the latent grid; R / r must be a power of two (one stride-2 level per factor 2)."""
    latent_channels: int = 8
    """Channels C_z per latent voxel."""
    channels: tuple[int, ...] = (32, 64, 128)
    """Conv widths, finest level first; needs log2(R / r) + 1 entries."""
    num_res_blocks: int = 1
    """Residual blocks per level in the encoder and the decoder."""
    norm_groups: int = 8
    """GroupNorm groups; must divide every width in `channels`."""
    kl_weight: float = 1e-3
    """Training: weight of the KL term (per latent element, mean over the batch)."""
    dice_weight: float = 1.0
    """Training: weight of the soft Dice loss added to the voxel-wise BCE."""
    sample_posterior: bool = True
    """Training: draw z ~ N(mean, exp(logvar)); False uses z = mean (deterministic; DDP-equivalence tests)."""

    def __post_init__(self) -> None:
        ratio = self.resolution // max(self.latent_resolution, 1)
        if self.latent_resolution < 1 or ratio * self.latent_resolution != self.resolution or ratio & (ratio - 1):
            raise InputError(
                f"StructureVAEConfig: resolution / latent_resolution must be a power of two, "
                f"got {self.resolution} / {self.latent_resolution}"
            )
        self.channels = tuple(self.channels)
        if len(self.channels) != self.num_levels + 1:
            raise InputError(
                f"StructureVAEConfig: channels needs log2({ratio}) + 1 = {self.num_levels + 1} entries "
                f"(one per level), got {list(self.channels)}"
            )
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise InputError(f"StructureVAEConfig: norm_groups={self.norm_groups} must divide every width, not {bad}")

    @property
    def num_levels(self) -> int:
        """Number of stride-2 levels between R and r."""
        return int(math.log2(self.resolution // self.latent_resolution))


@dataclass
class StructureVAEOutput:
    """Training-time result of `StructureVAE.forward`."""

    logits: torch.Tensor
    """[B, 1, R, R, R] occupancy logits."""
    mean: torch.Tensor
    """[B, C_z, r, r, r] posterior mean."""
    logvar: torch.Tensor
    """[B, C_z, r, r, r] posterior log-variance."""
    latent: torch.Tensor = field(repr=False)
    """[B, C_z, r, r, r] the latent that was decoded (a posterior sample or the mean)."""


class ResBlock3d(nn.Module):
    """GroupNorm -> SiLU -> conv3^3, twice, plus a (1^3-projected) skip."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)
        nn.init.zeros_(self.conv2.weight)  # start as identity: stable early training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class StructureEncoder(nn.Module):
    """`[B, 1, R, R, R]` occupancy -> `[B, 2 C_z, r, r, r]` (mean, logvar)."""

    def __init__(self, config: StructureVAEConfig) -> None:
        super().__init__()
        ch, g = config.channels, config.norm_groups
        self.stem = nn.Conv3d(1, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for level in range(config.num_levels + 1):
            layers += [ResBlock3d(ch[level], ch[level], g) for _ in range(config.num_res_blocks)]
            if level < config.num_levels:
                layers.append(nn.Conv3d(ch[level], ch[level + 1], 3, stride=2, padding=1))
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[-1])
        self.conv_out = nn.Conv3d(ch[-1], 2 * config.latent_channels, 1)

    def forward(self, occupancy: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(occupancy * 2.0 - 1.0))  # {0, 1} -> {-1, 1}: zero-mean input
        return self.conv_out(F.silu(self.norm_out(h)))


class StructureDecoder(nn.Module):
    """`[B, C_z, r, r, r]` latent -> `[B, 1, R, R, R]` occupancy logits."""

    def __init__(self, config: StructureVAEConfig) -> None:
        super().__init__()
        ch, g = config.channels, config.norm_groups
        self.conv_in = nn.Conv3d(config.latent_channels, ch[-1], 3, padding=1)
        layers: list[nn.Module] = []
        for level in reversed(range(config.num_levels + 1)):
            layers += [ResBlock3d(ch[level], ch[level], g) for _ in range(config.num_res_blocks)]
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv3d(ch[level], ch[level - 1], 3, padding=1)]
        self.blocks = nn.Sequential(*layers)
        self.norm_out = nn.GroupNorm(g, ch[0])
        self.conv_out = nn.Conv3d(ch[0], 1, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(latent)))))


class StructureVAE(nn.Module):
    """Dense occupancy VAE: `encode` -> (mean, logvar), `decode` -> logits, `forward` = one training pass."""

    def __init__(self, config: StructureVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = StructureEncoder(config)
        self.decoder = StructureDecoder(config)

    def _check(self, occupancy: torch.Tensor) -> None:
        r = self.config.resolution
        if occupancy.ndim != 5 or tuple(occupancy.shape[1:]) != (1, r, r, r):
            raise ValueError(f"occupancy must be [B, 1, {r}, {r}, {r}], got {tuple(occupancy.shape)}")

    def encode(self, occupancy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Occupancy `[B, 1, R, R, R]` in {0, 1} -> (mean, logvar), each `[B, C_z, r, r, r]` float32."""
        self._check(occupancy)
        mean, logvar = self.encoder(occupancy.float()).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent `[B, C_z, r, r, r]` -> occupancy logits `[B, 1, R, R, R]` (sigmoid > 0.5 = occupied)."""
        return self.decoder(latent)

    def forward(self, occupancy: torch.Tensor, generator: torch.Generator | None = None) -> StructureVAEOutput:
        """One training pass: encode, sample the posterior (see `config.sample_posterior`), decode.

        Args:
            occupancy: `[B, 1, R, R, R]` float in {0, 1}.
            generator: source of the posterior noise (on the occupancy's device).
        """
        mean, logvar = self.encode(occupancy)
        latent = mean
        if self.config.sample_posterior and self.training:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latent = mean + torch.exp(0.5 * logvar) * noise
        return StructureVAEOutput(logits=self.decode(latent), mean=mean, logvar=logvar, latent=latent)


def active_coords(logits: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Occupancy logits `[B, 1, R, R, R]` -> active coarse voxels `coords [N, 4] int32 (b, i, j, k)`.

    `threshold` is in logit units (0 = probability 0.5).
    """
    idx = torch.nonzero(logits[:, 0] > threshold)  # (N, 4): b, i, j, k
    return idx.to(torch.int32)
