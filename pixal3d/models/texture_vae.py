"""Stage 3 texture VAE: per-fine-voxel PBR attributes <-> latent tokens on the coarse active voxels (DESIGN section 5).

Attributes follow `SparseVoxels.attrs` (DESIGN section 4): `[N, 6]` in [0, 1] = base colour (sRGB, 3), metallic,
roughness, alpha, on the fine voxels `coords [N, 4] int32 (b, i, j, k)` at `R_hr`, key-sorted. The tokens sit on
the same coarse voxels as the shape VAE's (the parents at `R_tok`), so stage 3's flow can concatenate noise with
the shape latent token by token.

The encoder is the shape VAE's `SparseEncoder`; the decoder is its `SparseDecoder` without an occupancy head: the
fine voxel set is already known (the decoded shape), so every level prunes to it and a sigmoid head outputs the
six attributes at `R_hr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pixal3d.models.shape_vae import (
    SparseDecoder,
    SparseEncoder,
    check_sorted_coords,
    check_token_levels,
    coords_pyramid,
    sample_latent,
)
from pixal3d.sparse import SparseTensor

NUM_ATTRS = 6


@dataclass
class TextureVAEConfig:
    """Sizes of the stage-3 PBR texture VAE; defaults are the shipped tiny model."""

    resolution: int = 128
    """Fine resolution R_hr of the attribute voxels (must match the shape VAE's)."""
    token_resolution: int = 32
    """Resolution R_tok of the latent tokens (must match the shape VAE's)."""
    latent_channels: int = 8
    """Latent channels per token."""
    channels: tuple[int, ...] = (32, 64, 96)
    """Sparse-conv widths per level, finest (R_hr) first; log2(R_hr / R_tok) + 1 entries."""
    num_res_blocks: int = 1
    """Residual blocks per level in the encoder and the decoder."""
    kl_weight: float = 1e-4
    """Training: weight of the KL term (per latent element)."""
    sample_posterior: bool = True
    """Training: draw z ~ N(mean, exp(logvar)); False uses z = mean (deterministic)."""

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        check_token_levels("TextureVAEConfig", self.resolution, self.token_resolution, self.channels)


@dataclass
class TextureVAEOutput:
    """Training-time result of `TextureVAE.forward`; per-voxel tensors follow the input rows."""

    attrs: torch.Tensor
    """[N, 6] reconstructed attributes in [0, 1]."""
    mean: torch.Tensor
    """[M, C_z] posterior mean per token."""
    logvar: torch.Tensor
    """[M, C_z] posterior log-variance per token."""


class TextureVAE(nn.Module):
    """PBR VAE: `encode` attributes to tokens, `decode` tokens on a known fine voxel set, `forward` trains."""

    def __init__(self, config: TextureVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.levels = len(config.channels) - 1
        self.encoder = SparseEncoder(NUM_ATTRS + 1, config.channels, config.latent_channels, config.num_res_blocks)
        self.decoder = SparseDecoder(config.latent_channels, config.channels, NUM_ATTRS, config.num_res_blocks,
                                     predict_occupancy=False)

    def encode(self, coords: torch.Tensor, attrs: torch.Tensor) -> tuple[SparseTensor, torch.Tensor]:
        """Fine attributes -> tokens.

        Args:
            coords: `[N, 4] int32 (b, i, j, k)` at R_hr, key-sorted.
            attrs: `[N, 6] float` in [0, 1].

        Returns:
            `mean` as a SparseTensor `[M, C_z]` at R_tok (key-sorted) and `logvar [M, C_z]`.
        """
        check_sorted_coords(coords, self.config.resolution)
        if attrs.shape != (coords.shape[0], NUM_ATTRS):
            raise ValueError(f"attrs must be [N={coords.shape[0]}, {NUM_ATTRS}], got {tuple(attrs.shape)}")
        feats = torch.cat([attrs.float() * 2 - 1, torch.ones_like(attrs[:, :1]).float()], dim=1)
        h = self.encoder(SparseTensor(coords, feats, self.config.resolution))
        mean, logvar = h.feats.chunk(2, dim=1)
        return h.replace(feats=mean), logvar.clamp(-30.0, 20.0)

    def decode(self, latent: SparseTensor, coords: torch.Tensor) -> torch.Tensor:
        """Tokens -> attributes `[N, 6]` in [0, 1] at the fine voxels `coords [N, 4]` (key-sorted, input order).

        Every fine voxel's parent at R_tok must be one of the tokens (it is, for a decoded shape).
        """
        check_sorted_coords(coords, self.config.resolution)
        if latent.resolution != self.config.token_resolution:
            raise ValueError(f"latent must be at R_tok={self.config.token_resolution}, got {latent.resolution}")
        pyramid = coords_pyramid(coords, self.config.resolution, self.levels)
        fine = self.decoder(latent, guide=pyramid[-2::-1]).fine
        rows = pyramid[0].lookup(fine.coords)
        if fine.feats.shape[0] != coords.shape[0]:
            raise ValueError(
                f"{coords.shape[0] - fine.feats.shape[0]} fine voxels have no parent token; decode on the voxel set "
                "the tokens were made for"
            )
        head = torch.zeros_like(fine.feats).index_copy(0, rows, fine.feats)  # subdivision order -> input order
        return torch.sigmoid(head.float())

    def forward(self, coords: torch.Tensor, attrs: torch.Tensor,
                generator: torch.Generator | None = None) -> TextureVAEOutput:
        """One training pass (arguments as in `encode`)."""
        mean, logvar = self.encode(coords, attrs)
        latent = sample_latent(mean.feats, logvar, self.config.sample_posterior and self.training, generator)
        return TextureVAEOutput(attrs=self.decode(mean.replace(feats=latent), coords), mean=mean.feats,
                                logvar=logvar)
