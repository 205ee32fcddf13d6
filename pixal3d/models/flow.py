"""FlowConfig + FlowTransformer: the rectified-flow transformer of all three stages (DESIGN sections 3, 5).

One class, two token kinds:
- `tokens="dense"` (stage 1): `x_t [B, C_in, G, G, G]`, the structure VAE's latent grid, cut into `p^3` patches
  -> `(G / p)^3` tokens per element;
- `tokens="sparse"` (stages 2-3): `x_t` a `SparseTensor` of latents on the active coarse voxels at resolution R;
  stage 3 also gets the shape latent on the same voxels (`concat`, `cond_channels` wide), concatenated to its
  input.

Conditioning (`FlowCondition`): the encoder's `FeatureMaps` and the camera(s). The model lifts the maps itself
at the tokens' voxel centres (`pixal3d.lift.lift_views`: the whole latent grid then patchified, or the active
voxels), so training and inference share the code; a sampling run computes the lift once and keeps it in the
sampler's `TokenCache` (`forward(..., cache=)`). The global tokens feed every block's cross-attention.
With `depth_lift`, the lift is depth-aware (`pixal3d.lift`): each view's depth map (`FlowCondition.depth`,
`extra_depths`) and alpha (the raw image map's channel 3) add `DEPTH_CHANNELS` per voxel, between the features
and the mask; the pipeline passes the depth head's map, training the ground-truth splat (`training.conditioned`).
`cond=None`, or `keep[b] = False`, is the unconditional branch: lifted features and global tokens are both
zeroed. With `conditioning="cross"` (the ablation) nothing is lifted and the blocks cross-attend to the global
tokens plus every patch token of the /4 map (with a 2D sin-cos position).

Velocity: `forward(x_t, t, cond) -> v`, `v = eps - x_0` (see `pixal3d.sampling`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn

from pixal3d.camera import Camera
from pixal3d.encoder import FeatureMaps
from pixal3d.errors import InputError
from pixal3d.lift import DEPTH_CHANNELS, lift_views
from pixal3d.nn.attention import TokenLayout, WindowPlan, rope_angles, window_plan
from pixal3d.nn.blocks import FlowBlock, modulate
from pixal3d.sampling import SamplerConfig, TokenCache
from pixal3d.sparse import SparseTensor

Cameras = Camera | Sequence[Camera]


@dataclass
class FlowConfig:
    """Flow transformer hyper-parameters (defaults: the tiny stage-1 model)."""

    tokens: Literal["dense", "sparse"] = "dense"
    """"dense": a latent grid `[B, C_in, G, G, G]` (stage 1); "sparse": a SparseTensor of latents (stages 2-3)."""
    in_channels: int = 8
    """Latent channels per voxel (the velocity has the same width)."""
    cond_channels: int = 0
    """Channels of a latent concatenated to the input on the same voxels (stage 3: the shape latent); 0 = none."""
    resolution: int = 16
    """Dense: latent grid side G. Sparse: resolution R of the token coordinates."""
    patch_size: int = 2
    """Dense only: voxels per token side p (G divisible by p)."""
    dim: int = 192
    """Token width C."""
    depth: int = 6
    """Number of transformer blocks."""
    heads: int = 3
    """Attention heads (C / heads per head)."""
    mlp_ratio: float = 4.0
    """MLP hidden width / C."""
    qk_norm: bool = True
    """RMSNorm on queries and keys."""
    share_modulation: bool = True
    """adaLN-single: one timestep -> modulation map shared by all blocks plus a learned offset per block."""
    rope_base: float = 100.0
    """RoPE base (longest wavelength, in tokens)."""
    attention: Literal["full", "window"] = "full"
    """Self-attention over all tokens of an element, or over serialized shifted windows (large sparse sets)."""
    window_size: int = 512
    """Tokens per window when attention = "window"."""
    conditioning: Literal["lift", "cross"] = "lift"
    """"lift": per-block lift linear + cross-attention to the global tokens (Pixal3D); "cross": the ablation."""
    feature_channels: int = 64
    """C of the encoder's fused map and global tokens (EncoderConfig.channels)."""
    image_channels: int = 4
    """Channels of the raw image map (RGBA)."""
    depth_lift: bool = False
    """Depth-aware lift: add what the depth map and silhouette say about each voxel (`pixal3d.lift`; 5 channels
    between the features and the mask). The condition must then carry a depth map per view."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """This stage's default sampler settings."""
    latent_mean: list[float] | None = None
    """Per-channel mean of the VAE latents this flow learns (None: no normalisation). With `latent_std` the flow
    works on unit-variance latents `(latent - mean) / std` (training normalises its targets, the stages map the
    samples back before decoding: `normalize_latent`, `denormalize_latent`); scripts/latent_stats.py measures them."""
    latent_std: list[float] | None = None
    """Per-channel standard deviation of those latents (> 0), with `latent_mean`."""

    def __post_init__(self) -> None:
        if (self.latent_mean is None) != (self.latent_std is None):
            raise InputError("latent_mean and latent_std go together (both per-channel lists, or neither)")
        if self.latent_mean is not None:
            if len(self.latent_mean) != self.in_channels or len(self.latent_std) != self.in_channels:
                raise InputError(f"latent_mean and latent_std need in_channels = {self.in_channels} values each, got "
                                 f"{len(self.latent_mean)} and {len(self.latent_std)}")
            if not all(math.isfinite(m) for m in self.latent_mean) or not all(
                    math.isfinite(v) and v > 0 for v in self.latent_std):
                raise InputError("latent_mean must be finite and latent_std finite and > 0")
        if self.dim % self.heads:
            raise InputError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.tokens == "dense" and self.resolution % self.patch_size:
            raise InputError(f"resolution ({self.resolution}) must be divisible by patch_size ({self.patch_size})")
        if self.depth_lift and (self.conditioning != "lift" or self.image_channels != 4):
            raise InputError(
                f"depth_lift needs conditioning 'lift' and an RGBA image map (image_channels 4; the silhouette is its "
                f"alpha), got conditioning {self.conditioning!r}, image_channels {self.image_channels}"
            )

    @property
    def patch(self) -> int:
        """Voxels per token side (1 for sparse tokens)."""
        return self.patch_size if self.tokens == "dense" else 1

    @property
    def lift_channels(self) -> int:
        """Lifted channels per voxel: image + fused features (+ depth channels with `depth_lift`) + mask."""
        return self.image_channels + self.feature_channels + (DEPTH_CHANNELS if self.depth_lift else 0) + 1

    @property
    def lift_dim(self) -> int:
        """Per-token lifted width: `lift_channels` per voxel times the patch volume; 0 if "cross"."""
        if self.conditioning == "cross":
            return 0
        return self.lift_channels * self.patch**3


@dataclass
class FlowCondition:
    """What a flow model is conditioned on.

    Attributes:
        features: the encoder's output for the input view.
        cameras: one `Camera` for the batch, or one per element.
        keep: optional `[B] bool`; False makes that element unconditional (both lifted features and global
            tokens zeroed). Training drops them together with p = 0.1.
        extra_views: more `(features, cameras)` of the same objects (multi-view, cameras relative to view 0):
            lifts are averaged over the views that see a voxel, global tokens are averaged.
        depth: optional `[B, 1, h, w]` float32 depth along view 0's axis of its visible surface (volume units, e.g.
            the depth head's map at `S/4`; non-finite or <= 0 where there is none); required by `depth_lift` flows,
            ignored by the others.
        extra_depths: the same for each extra view (its own camera), in the order of `extra_views`.
    """

    features: FeatureMaps
    cameras: Cameras
    keep: torch.Tensor | None = None
    extra_views: Sequence[tuple[FeatureMaps, Cameras]] = ()
    depth: torch.Tensor | None = None
    extra_depths: Sequence[torch.Tensor | None] = ()

    @property
    def views(self) -> list[tuple[FeatureMaps, Cameras]]:
        return [(self.features, self.cameras), *self.extra_views]

    @property
    def depths(self) -> list[torch.Tensor | None]:
        """One depth map (or None) per view, aligned with `views`."""
        extra = list(self.extra_depths) or [None] * len(self.extra_views)
        if len(extra) != len(self.extra_views):
            raise ValueError(f"extra_depths has {len(extra)} maps for {len(self.extra_views)} extra views")
        return [self.depth, *extra]

    def with_dropout(self, p: float, generator: torch.Generator | None) -> FlowCondition:
        """The same condition with each element kept with probability `1 - p` (training's CFG dropout)."""
        batch = self.features.global_tokens.shape[0]
        device = generator.device if generator is not None else "cpu"
        keep = torch.rand(batch, generator=generator, device=device) >= p
        keep = keep.to(self.features.global_tokens.device)
        if self.keep is not None:
            keep = keep & self.keep.to(keep.device)
        return dataclasses.replace(self, keep=keep)



@dataclass
class TokenGeometry:
    """What depends only on where the tokens are: layout (B groups), RoPE `(cos, sin)`, windows (even, odd)."""

    layout: TokenLayout
    rope: tuple[torch.Tensor, torch.Tensor]
    windows: list[WindowPlan | None]


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of `t [B]` in [0, 1] (scaled by 1000) -> `[B, dim]` float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


def sincos_2d(side: int, channels: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding `[side * side, channels]` (row-major over y then x)."""
    quarter = channels // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    pos = torch.arange(side, device=device, dtype=torch.float32)
    y, x = torch.meshgrid(pos, pos, indexing="ij")
    ay, ax = y.reshape(-1, 1) * freqs, x.reshape(-1, 1) * freqs  # (side^2, C/4) each
    emb = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    return nn.functional.pad(emb, (0, channels - emb.shape[1]))


def patchify(grid: torch.Tensor, p: int) -> torch.Tensor:
    """`[B, C, G, G, G]` -> `[B * g^3, C * p^3]` tokens (g = G / p), raster order over (i, j, k)."""
    b, c, n = grid.shape[0], grid.shape[1], grid.shape[2] // p
    x = grid.reshape(b, c, n, p, n, p, n, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b * n**3, c * p**3)  # (B, g, g, g, C, p, p, p)


def unpatchify(tokens: torch.Tensor, batch: int, channels: int, p: int) -> torch.Tensor:
    """Inverse of `patchify`: `[B * g^3, C * p^3]` -> `[B, C, G, G, G]`."""
    n = round((tokens.shape[0] // batch) ** (1 / 3))
    x = tokens.reshape(batch, n, n, n, channels, p, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(batch, channels, n * p, n * p, n * p)


class FlowTransformer(nn.Module):
    """Rectified-flow transformer over dense or sparse voxel tokens, conditioned on lifted image features."""

    takes_token_cache = True
    """`pixal3d.sampling.sample` passes a `TokenCache` per run (`forward(..., cache=)`)."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        c, p3 = config.dim, config.patch**3
        self.input = nn.Linear((config.in_channels + config.cond_channels) * p3, c)
        self.time_embed = nn.Sequential(nn.Linear(256, c), nn.SiLU(), nn.Linear(c, c))
        self.shared_modulation = None
        if config.share_modulation:
            self.shared_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 6 * c))
            nn.init.zeros_(self.shared_modulation[1].weight)
            nn.init.zeros_(self.shared_modulation[1].bias)
        self.blocks = nn.ModuleList(
            FlowBlock(c, config.heads, config.feature_channels, config.lift_dim, config.mlp_ratio,
                      config.qk_norm, own_modulation=not config.share_modulation)
            for _ in range(config.depth)
        )
        self.out_norm = nn.LayerNorm(c, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))
        self.output = nn.Linear(c, config.in_channels * p3)
        for layer in (self.out_modulation[1], self.output):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def device(self) -> torch.device:
        return self.input.weight.device

    # ------------------------------------------------------------------------------------------ inputs
    def _check(self, x: torch.Tensor | SparseTensor, width: int, name: str) -> None:
        cfg = self.config
        if cfg.tokens == "sparse":
            if not isinstance(x, SparseTensor) or x.feats.shape[1] != width or x.resolution != cfg.resolution:
                got = f"SparseTensor {x.shape} at R={x.resolution}" if isinstance(x, SparseTensor) else type(x)
                raise ValueError(f"{name} must be a SparseTensor [N, {width}] at R={cfg.resolution}, got {got}")
        else:
            g = cfg.resolution
            if not isinstance(x, torch.Tensor) or x.ndim != 5 or tuple(x.shape[1:]) != (width, g, g, g):
                got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must be [B, {width}, {g}, {g}, {g}], got {got}")

    def _geometry(self, x: torch.Tensor | SparseTensor, cache: TokenCache | None) -> TokenGeometry:
        """Token layout, RoPE angles and window plans of `x`'s tokens, kept in the sampler's `cache` when given.

        Sampling calls the model many times on the same voxels; recomputing these would also sync a GPU.
        """
        if cache is None:
            return self._token_geometry(x)
        if isinstance(x, SparseTensor):
            return cache.get("geometry", x.coords, lambda: self._token_geometry(x))
        return cache.get(("geometry", x.shape[0], x.device), None, lambda: self._token_geometry(x))

    def _token_geometry(self, x: torch.Tensor | SparseTensor) -> TokenGeometry:
        cfg = self.config
        if isinstance(x, SparseTensor):
            coords, layout = x.coords, TokenLayout.from_counts(x.counts)
        else:
            b, n = x.shape[0], x.shape[2] // cfg.patch
            axis = torch.arange(n, device=x.device)
            grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)  # (g^3, 3)
            batch = torch.arange(b, device=x.device).repeat_interleave(n**3)
            coords = torch.cat([batch[:, None], grid.repeat(b, 1)], dim=1)  # (B g^3, 4) raster order
            layout = TokenLayout.dense(b, n**3, x.device)
        windows: list[WindowPlan | None] = [None, None]
        if cfg.attention == "window":
            windows = [window_plan(coords, layout.counts, cfg.window_size, shift) for shift in (False, True)]
        rope = rope_angles(coords[:, 1:], cfg.dim // cfg.heads, cfg.rope_base)
        return TokenGeometry(layout=layout, rope=rope, windows=windows)

    def _lift(self, x: torch.Tensor | SparseTensor, cond: FlowCondition, cache: TokenCache | None) -> torch.Tensor:
        """Lifted features per token `[N, lift_dim]` (`pixal3d.lift.lift_views`), kept in the sampler's `cache`
        while gradients are off (one lift serves every step of a sampling run)."""
        if cache is None or torch.is_grad_enabled():
            return self._lift_tokens(x, cond)
        if isinstance(x, SparseTensor):
            return cache.get(("lift", x.resolution), x.coords, lambda: self._lift_tokens(x, cond))
        return cache.get(("lift", self.config.resolution, self.config.patch), cond.features.maps[0],
                         lambda: self._lift_tokens(x, cond))

    def _lift_tokens(self, x: torch.Tensor | SparseTensor, cond: FlowCondition) -> torch.Tensor:
        depths = cond.depths if self.config.depth_lift else None
        if isinstance(x, SparseTensor):
            return lift_views(cond.views, x.resolution, x.coords, depths)
        return patchify(lift_views(cond.views, self.config.resolution, None, depths), self.config.patch)

    def _context(self, cond: FlowCondition) -> torch.Tensor:
        """Cross-attention tokens `[B, T, feature_channels]`, averaged over views."""
        contexts = []
        for feats, _ in cond.views:
            tokens = feats.global_tokens
            if self.config.conditioning == "cross":
                fmap = feats.maps[-1]  # (B, C, S/4, S/4)
                patches = fmap.flatten(2).transpose(1, 2)  # (B, C, H*W) -> (B, H*W, C)
                patches = patches + sincos_2d(fmap.shape[-1], fmap.shape[1], fmap.device).to(fmap.dtype)
                tokens = torch.cat([tokens, patches], dim=1)
            contexts.append(tokens)
        return torch.stack(contexts).mean(0)

    def _conditioning(
        self, x: torch.Tensor | SparseTensor, cond: FlowCondition | None, layout: TokenLayout, batch: int,
        cache: TokenCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (context `[B, T, C_f]`, lifted `[N, lift_dim]` or None), zeroed where unconditional."""
        cfg = self.config
        n = layout.index.shape[0]
        if cond is None:
            context = torch.zeros(batch, 1, cfg.feature_channels, device=self.device, dtype=self.input.weight.dtype)
            lifted = context.new_zeros(n, cfg.lift_dim) if cfg.lift_dim else None
            return context, lifted
        expected = cfg.image_channels + cfg.feature_channels
        if cond.features.channels != expected or cond.features.global_tokens.shape[-1] != cfg.feature_channels:
            raise ValueError(
                f"FeatureMaps carry {cond.features.channels} map channels and "
                f"{cond.features.global_tokens.shape[-1]}-wide global tokens; this model expects {expected} and "
                f"{cfg.feature_channels} (image_channels + feature_channels)"
            )
        context = self._context(cond)
        lifted = self._lift(x, cond, cache) if cfg.lift_dim else None
        if cond.keep is not None:
            keep = cond.keep.to(device=context.device, dtype=context.dtype)
            context = context * keep[:, None, None]
            if lifted is not None:
                lifted = lifted * keep.to(lifted.dtype)[layout.group_index][:, None]
        return context, lifted

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        x_t: torch.Tensor | SparseTensor,
        t: torch.Tensor,
        cond: FlowCondition | None = None,
        concat: torch.Tensor | SparseTensor | None = None,
        cache: TokenCache | None = None,
    ) -> torch.Tensor | SparseTensor:
        """Predict the velocity `v = eps - x_0` at `x_t`.

        Args:
            x_t: dense `[B, C_in, G, G, G]` or a `SparseTensor` (`[N, C_in]` at resolution R), per `tokens`.
            t: `[B]` (or a scalar) time in [0, 1]; 0 = data, 1 = noise.
            cond: image condition; None = unconditional.
            concat: the latent concatenated to the input (`cond_channels` wide, same voxels as `x_t`); required
                iff `cond_channels > 0` (stage 3's shape latent, also in the unconditional branch).
            cache: the sampler's `TokenCache` for this run (`pixal3d.sampling.sample` passes one): the lift and the
                token geometry are computed once per token set. None: computed on every call (training).

        Returns:
            The velocity, same type and shape as `x_t`.
        """
        cfg = self.config
        self._check(x_t, cfg.in_channels, "x_t")
        if (concat is None) != (cfg.cond_channels == 0):
            raise ValueError(f"concat is required iff cond_channels > 0 (cond_channels={cfg.cond_channels})")
        tokens = x_t.feats if isinstance(x_t, SparseTensor) else patchify(x_t, cfg.patch)
        geometry = self._geometry(x_t, cache)
        layout, batch = geometry.layout, geometry.layout.groups
        if concat is not None:
            self._check(concat, cfg.cond_channels, "concat")
            extra = concat.feats if isinstance(concat, SparseTensor) else patchify(concat, cfg.patch)
            tokens = torch.cat([tokens, extra.to(tokens.dtype)], dim=1)
        t = torch.as_tensor(t, device=tokens.device, dtype=torch.float32).reshape(-1).expand(batch)

        context, lifted = self._conditioning(x_t, cond, layout, batch, cache)
        t_emb = self.time_embed(timestep_embedding(t).to(tokens.dtype))  # (B, C)
        block_t = self.shared_modulation(t_emb) if self.shared_modulation is not None else t_emb
        h = self.input(tokens)  # (N, C_in p^3) -> (N, C)
        for i, block in enumerate(self.blocks):
            h = block(h, block_t, layout, context, lifted, geometry.rope, geometry.windows[i % 2])
        out_mod = self.out_modulation(t_emb)  # (B, 2C)
        shift, scale = (out_mod[layout.group_index] if batch > 1 else out_mod).chunk(2, dim=-1)
        out = self.output(modulate(self.out_norm(h), shift, scale))  # (N, C) -> (N, C_in p^3)
        if isinstance(x_t, SparseTensor):
            return x_t.replace(feats=out)
        return unpatchify(out, batch, cfg.in_channels, cfg.patch)


def _rescale(x: torch.Tensor | SparseTensor, config: FlowConfig, fn) -> torch.Tensor | SparseTensor:
    """`fn(values, mean, std)` over `x`'s channels (dim 1 dense, the last sparse) with the flow's latent stats;
    `x` itself when the flow has none."""
    if config.latent_mean is None:
        return x
    feats = x.feats if isinstance(x, SparseTensor) else x
    shape = (1, -1) if isinstance(x, SparseTensor) else (1, -1) + (1,) * (feats.ndim - 2)
    mean = torch.tensor(config.latent_mean, device=feats.device, dtype=feats.dtype).reshape(shape)
    std = torch.tensor(config.latent_std, device=feats.device, dtype=feats.dtype).reshape(shape)
    out = fn(feats, mean, std)
    return x.replace(feats=out) if isinstance(x, SparseTensor) else out


def normalize_latent(x: torch.Tensor | SparseTensor, config: FlowConfig) -> torch.Tensor | SparseTensor:
    """A VAE latent -> the flow's space `(x - latent_mean) / latent_std` (as it is without the stats)."""
    return _rescale(x, config, lambda v, mean, std: (v - mean) / std)


def denormalize_latent(x: torch.Tensor | SparseTensor, config: FlowConfig) -> torch.Tensor | SparseTensor:
    """The flow's sample -> the VAE's latent `x * latent_std + latent_mean` (`normalize_latent`'s inverse)."""
    return _rescale(x, config, lambda v, mean, std: v * std + mean)


def widen_lift_weight(weight: torch.Tensor, config: FlowConfig) -> torch.Tensor:
    """A block's lift weight of `config` without `depth_lift` -> the same for `config` (with it), depth columns zero.

    The lifted token is `(channel, patch voxel)`-major (`patchify`); the depth channels sit between the features and
    the mask, so the old feature columns keep their place, the mask columns move behind the new zero columns, and a
    flow so widened gives the old flow's output on any condition (fine-tuning starts at the shipped behaviour).

    Args:
        weight: `[dim, lift_dim]` of the flow without the depth lift.
        config: the flow config with `depth_lift` on.

    Returns:
        `[dim, config.lift_dim]`.
    """
    if not config.depth_lift:
        raise ValueError("widen_lift_weight builds the lift weight of a depth_lift flow; config.depth_lift is False")
    p3 = config.patch**3
    old = dataclasses.replace(config, depth_lift=False)
    if weight.ndim != 2 or weight.shape[1] != old.lift_dim:
        raise ValueError(f"lift weight must be [dim, {old.lift_dim}] (the flow without depth lift), got "
                         f"{tuple(weight.shape)}")
    features = old.lift_channels - 1
    new = weight.new_zeros(weight.shape[0], config.lift_dim)
    new[:, : features * p3] = weight[:, : features * p3]
    new[:, -p3:] = weight[:, -p3:]  # the mask's columns, last in both layouts
    return new
