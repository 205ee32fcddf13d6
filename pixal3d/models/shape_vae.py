"""Stage 2 shape VAE: fine sparse voxels at `R_hr` <-> latent tokens on the coarse active voxels (DESIGN section 5).

Input: the fine voxels of `SparseVoxels` (DESIGN section 4) batched as `coords [N, 4] int32 (b, i, j, k)` at
`R_hr`, **sorted by key** (`pixal3d.sparse.coords_to_keys`), with `vertex [N, 3]` in `[0, 1]^3` and
`edges [N, 3]` in {-1, 0, +1}. Volume frame of DESIGN section 2.

- Encoder: per-voxel features (dual vertex, edge flags, occupancy) -> residual submanifold sparse convs -> a learned
  stride-2 pooling of children into parents per level -> `(mean, logvar)` per token at `R_tok = R_hr / 2^L`.
  The tokens are exactly the parents of the fine voxels, i.e. the active coarse voxels stage 1 produces.
- Decoder: per level, each voxel predicts the occupancy of its 8 children, subdivides (a learned per-child
  linear, the sparse analogue of a stride-2 transposed conv) and prunes: to the true children in training (teacher
  forcing), to `sigmoid(logit) > 0.5` at inference. At `R_hr` a head outputs the dual vertex (sigmoid) and three
  3-way edge classifications (-1 / 0 / +1).
- `decoder_target = "corners"` adds 8 inside/outside logits per voxel (one per corner, averaged where voxels share a
  corner) and one *open* logit: the edges of closed voxels follow from the corner signs and close by construction
  (`pixal3d.geometry.corners`); open voxels (a sheet, a leaf) keep the edge classification. `"edges"` (the default,
  the shipped model) uses the edge classification everywhere.

`SparseEncoder` and `SparseDecoder` are shared with the texture VAE (`texture_vae.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.errors import InputError
from pixal3d.geometry.corners import corner_voxels
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.sparse import SparseConv3d, SparseTensor, coords_to_keys


def check_token_levels(name: str, resolution: int, token_resolution: int, channels: tuple[int, ...]) -> int:
    """Validate `R_hr / R_tok` (a power of two) against `channels` (one width per level); return the level count."""
    ratio = resolution // max(token_resolution, 1)
    if token_resolution < 1 or ratio * token_resolution != resolution or ratio & (ratio - 1) or ratio < 2:
        raise InputError(
            f"{name}: resolution / token_resolution must be a power of two >= 2, got {resolution} / {token_resolution}"
        )
    levels = int(math.log2(ratio))
    if len(channels) != levels + 1:
        raise InputError(
            f"{name}: channels needs log2({ratio}) + 1 = {levels + 1} entries (finest level first), got {list(channels)}"
        )
    return levels


@dataclass
class ShapeVAEConfig:
    """Sizes of the stage-2 sparse shape VAE; defaults are the shipped tiny model."""

    resolution: int = 128
    """Fine resolution R_hr of the decoded voxels (voxels per axis)."""
    token_resolution: int = 32
    """Resolution R_tok of the latent tokens (the active coarse voxels); R_hr / R_tok a power of two."""
    latent_channels: int = 8
    """Latent channels per token."""
    channels: tuple[int, ...] = (32, 64, 128)
    """Sparse-conv widths per level, finest (R_hr) first; log2(R_hr / R_tok) + 1 entries."""
    num_res_blocks: int = 1
    """Residual blocks per level in the encoder and the decoder."""
    kl_weight: float = 1e-4
    """Training: weight of the KL term (per latent element)."""
    occupancy_weight: float = 1.0
    """Training: weight of the child-occupancy BCE (all levels)."""
    vertex_weight: float = 1.0
    """Training: weight of the dual-vertex L1 loss, in voxel units."""
    edge_weight: float = 1.0
    """Training: weight of the edge-flag cross-entropy."""
    sample_posterior: bool = True
    """Training: draw z ~ N(mean, exp(logvar)); False uses z = mean (deterministic)."""
    decoder_target: Literal["edges", "corners"] = "edges"
    """What decides the edge flags: "edges" = per-voxel edge classification; "corners" = inside/outside at the voxel
    corners (closed by construction), the edge classification only on voxels flagged open (docs/representation.md)."""
    corner_weight: float = 1.0
    """Training, "corners" only: weight of the corner inside/outside BCE (on closed voxels) and the open-flag BCE."""

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.decoder_target not in ("edges", "corners"):
            raise InputError(
                f'ShapeVAEConfig: decoder_target must be "edges" or "corners", got {self.decoder_target!r}'
            )
        check_token_levels("ShapeVAEConfig", self.resolution, self.token_resolution, self.channels)


# ------------------------------------------------------------------------------------------------ building blocks
def coords_pyramid(coords: torch.Tensor, resolution: int, levels: int) -> list[SparseTensor]:
    """The parents of `coords [N, 4]` at `R, R/2, ..., R/2^levels`, finest first, each key-sorted and unique.

    Features are empty (`[M, 0]`); the tensors serve as hash tables (`lookup`) of the true voxel sets.
    """
    out, c, r = [], coords.long(), resolution
    for level in range(levels + 1):
        if level:
            c = c.clone()
            c[:, 1:] //= 2
            r //= 2
        keys = torch.unique(coords_to_keys(c, r))
        c = torch.stack([keys // r**3, keys // r**2 % r, keys // r % r, keys % r], dim=1)
        out.append(SparseTensor(c.int(), c.new_zeros(c.shape[0], 0, dtype=torch.float32), r))
    return out


class SparseResBlock(nn.Module):
    """LayerNorm -> SiLU -> SparseConv3d, twice, plus a skip; the second conv starts at zero (identity block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.conv1 = SparseConv3d(channels, channels, 3)
        self.norm2 = nn.LayerNorm(channels)
        self.conv2 = SparseConv3d(channels, channels, 3)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: SparseTensor, neighbours: torch.Tensor) -> SparseTensor:
        h = self.conv1(x.replace(feats=F.silu(self.norm1(x.feats))), neighbours)
        h = self.conv2(h.replace(feats=F.silu(self.norm2(h.feats))), neighbours)
        return x.replace(feats=x.feats + h.feats)


class SparseStage(nn.Module):
    """`num_blocks` residual blocks at one resolution, sharing one neighbour table."""

    def __init__(self, channels: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SparseResBlock(channels) for _ in range(num_blocks))

    def forward(self, x: SparseTensor) -> SparseTensor:
        neighbours = x.neighbours(3) if len(self.blocks) else None
        for block in self.blocks:
            x = block(x, neighbours)
        return x


def child_index(coords: torch.Tensor) -> torch.Tensor:
    """`[N] int64` position of each voxel inside its parent, in `SparseTensor.subdivide` order (i slowest)."""
    c = coords[:, 1:].long() % 2
    return c[:, 0] * 4 + c[:, 1] * 2 + c[:, 2]


class SparseDownsample(nn.Module):
    """Learned 2x pooling: parent = bias + sum over present children of `W[child position] @ child`.

    On a dense grid this is `nn.Conv3d(kernel_size=2, stride=2)` with zeros at empty voxels.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, cin, cout) / math.sqrt(8 * cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: SparseTensor) -> SparseTensor:
        parent, inverse = x.downsample()
        pos = child_index(x.coords)
        out = x.feats.new_zeros(parent.feats.shape[0], self.weight.shape[2])
        for c in range(8):  # one matmul per child position (8 groups) instead of per-row weights
            rows = torch.nonzero(pos == c).squeeze(1)
            part = x.feats[rows] @ self.weight[c].to(x.feats.dtype)
            out = out.index_add(0, inverse[rows], part.to(out.dtype))  # autocast may return bf16
        return parent.replace(feats=out + self.bias.to(out.dtype))


class SparseUpsample(nn.Module):
    """Learned 2x subdivision: child `c` of a voxel gets `W[c] @ parent + b[c]` (a stride-2 transposed conv)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, 8 * cout)
        self.cout = cout

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = self.linear(x.feats).reshape(-1, 8, self.cout)  # (N, 8*C') -> (N, 8, C')
        return x.subdivide(feats)


# ------------------------------------------------------------------------------------------------ encoder / decoder
class SparseEncoder(nn.Module):
    """Fine sparse features at `R_hr` -> `(mean, logvar)` tokens at `R_hr / 2^L`."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], latent_channels: int, num_res_blocks: int) -> None:
        super().__init__()
        self.proj_in = nn.Linear(in_channels, channels[0])
        self.stages = nn.ModuleList(SparseStage(c, num_res_blocks) for c in channels)
        self.downs = nn.ModuleList(SparseDownsample(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.norm_out = nn.LayerNorm(channels[-1])
        self.proj_out = nn.Linear(channels[-1], 2 * latent_channels)

    def forward(self, x: SparseTensor) -> SparseTensor:
        """`x [N, C_in]` at R_hr -> `[M, 2 C_z]` (mean, logvar) at R_tok, rows sorted by key."""
        x = x.replace(feats=self.proj_in(x.feats))
        for level, stage in enumerate(self.stages):
            x = stage(x)
            if level < len(self.downs):
                x = self.downs[level](x)
        return x.replace(feats=self.proj_out(F.silu(self.norm_out(x.feats))))


@dataclass
class DecoderOutput:
    """What `SparseDecoder` returns."""

    fine: SparseTensor
    """Output head features `[N, C_out]` at R_hr."""
    occupancy_logits: list[torch.Tensor] = field(default_factory=list)
    """Per upsampling level `[N_l, 8]`: logits of each voxel's 8 children (empty without an occupancy head)."""
    occupancy_targets: list[torch.Tensor] = field(default_factory=list)
    """Per level `[N_l, 8]` float {0, 1}: true child occupancy (only when a guide was given)."""


class SparseDecoder(nn.Module):
    """Tokens at R_tok -> features at R_hr by subdivide (x2 per level) and prune.

    With `predict_occupancy`, every level predicts child occupancy and prunes by it at inference; without it
    (texture VAE) the voxel set is always given by the guide.
    """

    def __init__(self, latent_channels: int, channels: tuple[int, ...], out_channels: int, num_res_blocks: int,
                 predict_occupancy: bool) -> None:
        super().__init__()
        coarse_first = tuple(reversed(channels))
        self.proj_in = nn.Linear(latent_channels, coarse_first[0])
        self.stages = nn.ModuleList(SparseStage(c, num_res_blocks) for c in coarse_first)
        self.ups = nn.ModuleList(SparseUpsample(a, b) for a, b in zip(coarse_first[:-1], coarse_first[1:], strict=True))
        self.occupancy = (
            nn.ModuleList(nn.Linear(c, 8) for c in coarse_first[:-1]) if predict_occupancy else None
        )
        self.norm_out = nn.LayerNorm(coarse_first[-1])
        self.proj_out = nn.Linear(coarse_first[-1], out_channels)

    def forward(self, latent: SparseTensor, guide: list[SparseTensor] | None = None,
                threshold: float = 0.0) -> DecoderOutput:
        """Decode.

        Args:
            latent: `[M, C_z]` tokens at R_tok.
            guide: the true voxel sets, coarse to fine, one per upsampling level (R_tok * 2, ..., R_hr), as from
                `coords_pyramid(...)[-2::-1]`; children are pruned to them (teacher forcing). Required without an
                occupancy head.
            threshold: occupancy logit above which a child is kept when there is no guide.
        """
        if guide is None and self.occupancy is None:
            raise ValueError("a decoder without an occupancy head needs the guide voxel sets")
        out = DecoderOutput(fine=latent)
        x = latent.replace(feats=self.proj_in(latent.feats))
        for level, stage in enumerate(self.stages):
            x = stage(x)
            if level == len(self.ups):
                break
            logits = self.occupancy[level](x.feats) if self.occupancy is not None else None
            children = self.ups[level](x)
            if guide is not None:
                keep = guide[level].lookup(children.coords) >= 0
                if logits is not None:
                    out.occupancy_targets.append(keep.reshape(-1, 8).to(logits.dtype))
            else:
                keep = logits.reshape(-1) > threshold  # (N, 8) -> (8N,): row 8n + c is child c of row n
            if logits is not None:
                out.occupancy_logits.append(logits)
            x = children.prune(keep)
        out.fine = x.replace(feats=self.proj_out(F.silu(self.norm_out(x.feats))))
        return out


OPEN_BIAS_AT_WIDENING = 4.0
"""The open logit's bias when an "edges" decoder is widened to "corners" (`widen_corner_head`): sigmoid(4) = 0.98,
so every voxel starts open (edges from the trained edge classification) and the widened decoder starts at the old
decoder's output."""


def widen_corner_head(tensors: dict[str, torch.Tensor], config: ShapeVAEConfig) -> dict[str, torch.Tensor]:
    """A trained `"edges"` shape VAE's tensors -> the same VAE with `decoder_target = "corners"` (`config`).

    The decoder's output layer gains the 8 corner logits (zero weights and bias: no opinion yet) and the open logit
    (zero weights, bias `OPEN_BIAS_AT_WIDENING`: every voxel open), so the widened model decodes the same surface as
    the old one and the corner rows start learning from there. Every other tensor is kept as it is.
    """
    if config.decoder_target != "corners":
        raise ValueError('widen_corner_head builds a "corners" decoder; config.decoder_target is '
                         f"{config.decoder_target!r}")
    weight, bias = tensors["decoder.proj_out.weight"], tensors["decoder.proj_out.bias"]
    if weight.shape[0] != 12 or bias.shape != (12,):
        raise ValueError(f'the source decoder must be an "edges" decoder (12 outputs), got {tuple(weight.shape)}')
    out = dict(tensors)
    out["decoder.proj_out.weight"] = torch.cat([weight, weight.new_zeros(9, weight.shape[1])])
    out["decoder.proj_out.bias"] = torch.cat([bias, bias.new_zeros(8), bias.new_full((1,), OPEN_BIAS_AT_WIDENING)])
    return out


def narrow_corner_head(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `"corners"` shape VAE's tensors -> the same VAE as an `"edges"` decoder: the output layer keeps its vertex
    and edge rows and drops the 8 corner logits and the open logit (`widen_corner_head`'s inverse on that layer).

    The edge rows of a corners run are trained on every voxel (`training.objectives`), with the corner target as an
    auxiliary signal for the shared trunk, so the narrowed decoder is a complete edges decoder.
    """
    weight, bias = tensors["decoder.proj_out.weight"], tensors["decoder.proj_out.bias"]
    if weight.shape[0] != 21 or bias.shape != (21,):
        raise ValueError(f'the source decoder must be a "corners" decoder (21 outputs), got {tuple(weight.shape)}')
    out = dict(tensors)
    out["decoder.proj_out.weight"], out["decoder.proj_out.bias"] = weight[:12].clone(), bias[:12].clone()
    return out


def check_sorted_coords(coords: torch.Tensor, resolution: int) -> None:
    """Raise `ValueError` unless `coords [N, 4] int (b, i, j, k)` lie in `[0, R)` and are strictly key-sorted."""
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"coords must be [N, 4] (b, i, j, k), got {tuple(coords.shape)}")
    if coords.numel() and (int(coords[:, 1:].min()) < 0 or int(coords[:, 1:].max()) >= resolution):
        raise ValueError(f"coords must lie in [0, {resolution}) for the configured resolution")
    keys = coords_to_keys(coords, resolution)
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ValueError("coords must be unique and sorted by key (pixal3d.sparse.coords_to_keys)")


def sample_latent(mean: torch.Tensor, logvar: torch.Tensor, sample: bool,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Reparameterised posterior sample `mean + std * eps` (or `mean` when `sample` is False)."""
    if not sample:
        return mean
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * noise


# ------------------------------------------------------------------------------------------------ the VAE
@dataclass
class ShapeVAEOutput:
    """Training-time result of `ShapeVAE.forward`; per-voxel tensors follow the input rows."""

    vertex: torch.Tensor
    """[N, 3] predicted dual vertex in [0, 1]^3 (teacher forced, so the decoded set equals the input set)."""
    edge_logits: torch.Tensor
    """[N, 3, 3] logits of the edge flag per axis, classes (-1, 0, +1)."""
    corner_logits: torch.Tensor | None
    """[N, 8] inside/outside logit per voxel corner (`CORNER_OFFSETS` order), before averaging; "corners" only."""
    open_logits: torch.Tensor | None
    """[N] logit that the voxel is open (edges from `edge_logits`); "corners" only."""
    occupancy_logits: list[torch.Tensor]
    """Per upsampling level [N_l, 8] child-occupancy logits."""
    occupancy_targets: list[torch.Tensor]
    """Per upsampling level [N_l, 8] true child occupancy in {0, 1}."""
    mean: torch.Tensor
    """[M, C_z] posterior mean per token."""
    logvar: torch.Tensor
    """[M, C_z] posterior log-variance per token."""


class ShapeVAE(nn.Module):
    """Sparse shape VAE: `encode` fine voxels to tokens, `decode` tokens to `SparseVoxels`, `forward` trains."""

    def __init__(self, config: ShapeVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.levels = len(config.channels) - 1
        self.encoder = SparseEncoder(7, config.channels, config.latent_channels, config.num_res_blocks)
        head = 3 + 9 + (8 + 1 if config.decoder_target == "corners" else 0)  # vertex, edges[, corners, open]
        self.decoder = SparseDecoder(config.latent_channels, config.channels, head, config.num_res_blocks,
                                     predict_occupancy=True)

    def encode(self, coords: torch.Tensor, vertex: torch.Tensor, edges: torch.Tensor) -> tuple[SparseTensor, torch.Tensor]:
        """Fine voxels -> tokens.

        Args:
            coords: `[N, 4] int32 (b, i, j, k)` at R_hr, key-sorted.
            vertex: `[N, 3] float` in [0, 1]^3.
            edges: `[N, 3]` int8/float in {-1, 0, +1}.

        Returns:
            `mean` as a SparseTensor `[M, C_z]` at R_tok (key-sorted) and `logvar [M, C_z]`.
        """
        check_sorted_coords(coords, self.config.resolution)
        feats = torch.cat([vertex.float() * 2 - 1, edges.float(), torch.ones_like(vertex[:, :1]).float()], dim=1)
        h = self.encoder(SparseTensor(coords, feats, self.config.resolution))
        mean, logvar = h.feats.chunk(2, dim=1)
        return h.replace(feats=mean), logvar.clamp(-30.0, 20.0)

    def forward(self, coords: torch.Tensor, vertex: torch.Tensor, edges: torch.Tensor,
                generator: torch.Generator | None = None) -> ShapeVAEOutput:
        """One teacher-forced training pass (arguments as in `encode`)."""
        mean, logvar = self.encode(coords, vertex, edges)
        latent = sample_latent(mean.feats, logvar, self.config.sample_posterior and self.training, generator)
        pyramid = coords_pyramid(coords, self.config.resolution, self.levels)
        dec = self.decoder(mean.replace(feats=latent), guide=pyramid[-2::-1])
        # The decoded fine set equals the input set, in subdivision order: scatter its rows back to input order.
        rows = pyramid[0].lookup(dec.fine.coords)
        head = torch.zeros_like(dec.fine.feats).index_copy(0, rows, dec.fine.feats)
        corners = self.config.decoder_target == "corners"
        return ShapeVAEOutput(
            vertex=torch.sigmoid(head[:, :3]),
            edge_logits=head[:, 3:12].reshape(-1, 3, 3),  # (N, 9) -> (N, axis, class)
            corner_logits=head[:, 12:20] if corners else None,
            open_logits=head[:, 20] if corners else None,
            occupancy_logits=dec.occupancy_logits,
            occupancy_targets=dec.occupancy_targets,
            mean=mean.feats,
            logvar=logvar,
        )

    @torch.no_grad()
    def decode(self, latent: SparseTensor, threshold: float = 0.0) -> list[SparseVoxels]:
        """Tokens -> one `SparseVoxels` per batch element (attrs None), pruning children by predicted occupancy.

        Args:
            latent: `[M, C_z]` at R_tok (e.g. stage 1's active voxels with the stage-2 flow's output).
            threshold: child-occupancy logit threshold (0 = probability 0.5).
        """
        if latent.resolution != self.config.token_resolution:
            raise ValueError(f"latent must be at R_tok={self.config.token_resolution}, got {latent.resolution}")
        fine = self.decoder(latent, threshold=threshold).fine
        fine = SparseTensor.sorted(fine.coords, fine.feats.float(), fine.resolution, latent.batch_size)
        out = []
        for start, end in zip(fine.batch_offsets[:-1].tolist(), fine.batch_offsets[1:].tolist(), strict=True):
            head = fine.feats[start:end]
            voxels = SparseVoxels(
                coords=fine.coords[start:end, 1:].clone(),
                vertex=torch.sigmoid(head[:, :3]),
                edges=(head[:, 3:12].reshape(-1, 3, 3).argmax(dim=-1) - 1).to(torch.int8),
                attrs=None,
                resolution=self.config.resolution,
            )
            if self.config.decoder_target == "corners":  # may add the voxels that crossings need (sorted by key)
                tokens = latent.coords[latent.coords[:, 0] == len(out), 1:]
                voxels = corner_voxels(voxels, head[:, 12:20], head[:, 20] > 0,
                                       tokens=(tokens, self.config.token_resolution))
            out.append(voxels)
        return out
