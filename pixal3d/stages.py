"""The cascade's steps as public functions (DESIGN sections 1, 5): each takes its models and inputs explicitly.

`Pixal3DPipeline.__call__` chains them; each also runs alone (tests, benchmarks, notebooks):

```
features = encode_images(encoder, images)                      # FeatureMaps per view
cond     = make_condition(features, cameras)                    # (or get_cond(encoder, images, cameras))
coords   = sample_structure(structure_flow, structure_vae, cond, generator, sampler)   # [N, 4] coarse voxels
shape    = sample_shape(shape_flow, cond, coords, generator, sampler)                  # SparseTensor latent
texture  = sample_texture(texture_flow, cond, shape, generator, sampler)               # SparseTensor latent
voxels   = decode(shape_vae, texture_vae, shape, texture)                               # SparseVoxels with attrs
```

`STEPS` names the pipeline's steps once, in order: the pipeline times and reports them under these names
(`Asset.timings`, `Pixal3DPipeline.__call__(callback=...)`), and the server's progress and the benchmark read them
from here. A new stage adds its function here, its model, and its name to `STEPS`.

Frames and units: every voxel set is in the volume frame of the input camera (DESIGN section 2); coordinates are
`[N, 4] int32 (b, i, j, k)` (b = 0: one object per call). Randomness comes only from the `torch.Generator` passed
in; sampler updates run in float32 (`pixal3d.sampling`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from pixal3d.camera import Camera
from pixal3d.encoder import FeatureMaps, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.models.depth_head import DepthHead, z_to_depth
from pixal3d.models.flow import FlowCondition, FlowTransformer, denormalize_latent
from pixal3d.models.fov_head import FovHead
from pixal3d.models.shape_vae import ShapeVAE
from pixal3d.models.structure_vae import StructureVAE
from pixal3d.models.texture_vae import TextureVAE
from pixal3d.sampling import SamplerConfig, randn_like, sample
from pixal3d.sparse import SparseTensor

logger = logging.getLogger(__name__)

STEPS = ("preprocess", "encode", "camera", "structure", "shape", "texture", "decode")
"""The pipeline's steps, in order (`camera`: FoV, depth map and the flows' condition; `decode`: fine voxels, the
mesh and the silhouette and image-texel passes)."""
SamplerCallback = Callable[[int, int], None]
"""`callback(i, steps)` before each Euler step of a flow stage (`pixal3d.sampling.sample`)."""


class EmptyStructureError(RuntimeError):
    """A stage produced no voxels (nothing to mesh): the image may show no object, or the weights are untrained."""


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


# ------------------------------------------------------------------------------------------------ conditioning
@torch.no_grad()
def encode_images(encoder: ImageEncoder, images: torch.Tensor) -> list[FeatureMaps]:
    """Encode the views of one object.

    Args:
        encoder: the image encoder.
        images: `[V, 4, S, S]` float RGBA in [0, 1] (RGB composited on black), one row per view.

    Returns:
        One `FeatureMaps` per view, each with batch size 1.
    """
    if images.ndim != 4 or images.shape[1] != 4:
        raise ValueError(f"images must be [V, 4, S, S] RGBA, got {tuple(images.shape)}")
    p = next(encoder.parameters())
    feats = encoder(images.to(device=p.device, dtype=p.dtype))
    return [
        FeatureMaps(maps=[m[v : v + 1] for m in feats.maps], global_tokens=feats.global_tokens[v : v + 1])
        for v in range(images.shape[0])
    ]


def make_condition(features: Sequence[FeatureMaps], cameras: Sequence[Camera],
                   depths: Sequence[torch.Tensor | None] | None = None) -> FlowCondition:
    """The flows' condition: view 0 with its camera, further views (known cameras relative to view 0) averaged.

    Multi-view lifting averages each voxel's features over the views that see it and averages the global tokens
    (`lift.average_views`, as `lift_sparse_multiview` / `lift_dense_multiview` do), inside every flow call.

    Args:
        features: one `FeatureMaps` per view.
        cameras: one `Camera` per view (or, for a batch, one list of cameras per view).
        depths: optional depth map per view for `depth_lift` flows: depth along that view's axis of its visible
            surface, volume units, float32, `[h, w]` (one object, e.g. `predict_depth`'s `[S/4, S/4]`) or
            `[B, 1, h, w]`; non-finite or <= 0 where there is none. Flows without `depth_lift` ignore it.
    """
    if len(features) != len(cameras) or not features:
        raise ValueError(f"need one camera per view: {len(features)} views, {len(cameras)} cameras")
    maps = [None] * len(features) if depths is None else [_depth_map(d) for d in depths]
    if len(maps) != len(features):
        raise ValueError(f"need one depth map (or None) per view: {len(features)} views, {len(maps)} depth maps")
    extra = [(f, c) for f, c in zip(features[1:], cameras[1:], strict=True)]
    return FlowCondition(features=features[0], cameras=cameras[0], extra_views=extra, depth=maps[0],
                         extra_depths=maps[1:] if depths is not None else ())


def _depth_map(depth: torch.Tensor | None) -> torch.Tensor | None:
    """`[h, w]` or `[B, 1, h, w]` -> `[B, 1, h, w]` float32."""
    if depth is None:
        return None
    if depth.ndim == 2:
        depth = depth[None, None]
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f"a depth map must be [h, w] or [B, 1, h, w], got {tuple(depth.shape)}")
    return depth.float()


def get_cond(encoder: ImageEncoder, images: torch.Tensor, cameras: Sequence[Camera]) -> FlowCondition:
    """`encode_images` then `make_condition`: images `[V, 4, S, S]` + one `Camera` per view -> `FlowCondition`."""
    return make_condition(encode_images(encoder, images), cameras)


@torch.no_grad()
def predict_depth(depth_head: DepthHead, features: FeatureMaps, camera: Camera) -> torch.Tensor:
    """The visible surface's depth along the view axis at `S/4`: `[S/4, S/4] float32` (volume units, > 0)."""
    return z_to_depth(depth_head(features)[0, 0], camera)


@torch.no_grad()
def estimate_fov(fov_head: FovHead, features: FeatureMaps) -> float:
    """The input view's horizontal FoV in radians, from the FoV head."""
    return float(fov_head(features)[0])


# ------------------------------------------------------------------------------------------------ stage 1
def select_active(logits: torch.Tensor, threshold: float = 0.0, min_voxels: int = 0, max_voxels: int = 0) -> torch.Tensor:
    """Occupancy logits `[1, 1, R, R, R]` -> active coarse voxels `[N, 4] int32 (0, i, j, k)`, key-sorted.

    Voxels above `threshold` are active. Fallback, stated here because it changes the result: when fewer than
    `min_voxels` pass, the `min_voxels` highest logits are kept instead (random or undertrained weights still
    exercise stages 2-3); `max_voxels > 0` keeps only that many highest logits. With `min_voxels = 0` an empty
    structure raises `EmptyStructureError`.
    """
    flat = logits[0, 0].float().reshape(-1)  # (R^3,) raster order over (i, j, k)
    r = logits.shape[-1]
    active = torch.nonzero(flat > threshold).squeeze(1)
    if active.numel() < min_voxels:
        logger.warning("stage 1: %d voxels above the threshold, keeping the top %d logits", active.numel(), min_voxels)
        active = torch.topk(flat, min(min_voxels, flat.numel())).indices
    if max_voxels and active.numel() > max_voxels:
        logger.info("stage 1: %d active voxels, keeping the top %d", active.numel(), max_voxels)
        active = active[torch.topk(flat[active], max_voxels).indices]
    if active.numel() == 0:
        raise EmptyStructureError(
            "stage 1 found no occupied voxels: the image may show no object (check its alpha / background), or the "
            "weights are untrained; try another seed"
        )
    active = torch.sort(active).values
    ijk = torch.stack([active // (r * r), active // r % r, active % r], dim=1)
    return torch.cat([torch.zeros_like(ijk[:, :1]), ijk], dim=1).to(torch.int32)


@torch.no_grad()
def sample_structure(
    model: FlowTransformer,
    vae: StructureVAE,
    cond: FlowCondition,
    generator: torch.Generator | None,
    sampler: SamplerConfig,
    threshold: float = 0.0,
    min_voxels: int = 0,
    max_voxels: int = 0,
    progress: bool = True,
    cuda_graphs: bool = False,
    callback: SamplerCallback | None = None,
) -> torch.Tensor:
    """Stage 1: sample the dense structure latent and decode it to the active coarse voxels.

    Args:
        model: the dense flow over the structure VAE's latent grid `[1, C_z, r, r, r]`.
        vae: the structure VAE (its decoder gives occupancy logits `[1, 1, R, R, R]`).
        cond: the image condition.
        generator: source of the initial noise.
        sampler: steps, shift, guidance.
        threshold, min_voxels, max_voxels: see `select_active`.
        progress: show the sampler's progress bar.
        cuda_graphs: replay the flow's calls from CUDA graphs (`sampling.sample`; CUDA only).
        callback: `callback(i, steps)` before each sampler step (`sampling.sample`).

    Returns:
        `coords [N, 4] int32 (0, i, j, k)` at the VAE's resolution R, key-sorted.
    """
    cfg = model.config
    if cfg.tokens != "dense" or cfg.in_channels != vae.config.latent_channels:
        raise ValueError("stage 1 needs a dense flow whose in_channels equal the structure VAE's latent_channels")
    g = cfg.resolution
    template = torch.zeros(1, cfg.in_channels, g, g, g, device=model.device, dtype=_model_dtype(model))
    latent = sample(model, randn_like(template, generator), cond, sampler, progress=progress, desc="structure",
                    cuda_graphs=cuda_graphs, callback=callback)
    latent = denormalize_latent(latent, cfg)  # the flow's unit-variance space -> the VAE's (no-op without stats)
    logits = vae.decode(latent.to(_model_dtype(vae)))
    return select_active(logits, threshold, min_voxels, max_voxels)


# ------------------------------------------------------------------------------------------------ stages 2-3
@torch.no_grad()
def sample_shape(
    model: FlowTransformer,
    cond: FlowCondition,
    coords: torch.Tensor,
    generator: torch.Generator | None,
    sampler: SamplerConfig,
    progress: bool = True,
    cuda_graphs: bool = False,
    callback: SamplerCallback | None = None,
) -> SparseTensor:
    """Stage 2: sample the shape latent on the active coarse voxels.

    Args:
        model: the sparse shape flow (token resolution = stage 1's R).
        cond: the image condition.
        coords: `[N, 4] int32 (b, i, j, k)` active voxels at the flow's resolution, key-sorted.
        generator: source of the initial noise.
        sampler: steps, shift, guidance.
        progress: show the sampler's progress bar.
        cuda_graphs: replay the flow's calls from CUDA graphs (`sampling.sample`; CUDA only).
        callback: `callback(i, steps)` before each sampler step (`sampling.sample`).

    Returns:
        The shape latent, a `SparseTensor [N, C_shape]` on `coords`.
    """
    cfg = model.config
    if cfg.tokens != "sparse" or cfg.cond_channels:
        raise ValueError("stage 2 needs a sparse flow without a concatenated latent (cond_channels = 0)")
    if coords.ndim != 2 or coords.shape[1] != 4 or coords.shape[0] == 0:
        raise ValueError(f"coords must be a non-empty [N, 4] (b, i, j, k) tensor, got {tuple(coords.shape)}")
    feats = torch.zeros(coords.shape[0], cfg.in_channels, device=model.device, dtype=_model_dtype(model))
    template = SparseTensor(coords.to(model.device), feats, cfg.resolution)
    latent = sample(model, randn_like(template, generator), cond, sampler, progress=progress, desc="shape",
                    cuda_graphs=cuda_graphs, callback=callback)
    return denormalize_latent(latent, cfg)


@torch.no_grad()
def sample_texture(
    model: FlowTransformer,
    cond: FlowCondition,
    shape_latent: SparseTensor,
    generator: torch.Generator | None,
    sampler: SamplerConfig,
    progress: bool = True,
    cuda_graphs: bool = False,
    callback: SamplerCallback | None = None,
) -> SparseTensor:
    """Stage 3: sample the PBR latent on the same voxels, the input being noise || shape latent.

    `progress`, `cuda_graphs` and `callback` as in `sample_shape`.

    Returns:
        The texture latent, a `SparseTensor [N, C_tex]` on `shape_latent.coords`.
    """
    cfg = model.config
    if cfg.tokens != "sparse" or cfg.cond_channels != shape_latent.feats.shape[1]:
        raise ValueError(
            f"stage 3 needs a sparse flow with cond_channels = the shape latent's {shape_latent.feats.shape[1]}"
        )
    dtype = _model_dtype(model)
    shape_latent = shape_latent.to(model.device).replace(feats=shape_latent.feats.to(model.device, dtype))
    template = shape_latent.replace(feats=shape_latent.feats.new_zeros(shape_latent.feats.shape[0], cfg.in_channels))
    latent = sample(model, randn_like(template, generator), cond, sampler, model_kwargs={"concat": shape_latent},
                    progress=progress, desc="texture", cuda_graphs=cuda_graphs, callback=callback)
    return denormalize_latent(latent, cfg)


# ------------------------------------------------------------------------------------------------ decoding
@torch.no_grad()
def decode_shape(vae: ShapeVAE, shape_latent: SparseTensor) -> SparseVoxels:
    """Shape latent -> fine voxels at `R_hr` (dual vertices and edge flags, `attrs` None), key-sorted."""
    dtype = _model_dtype(vae)
    (voxels,) = vae.decode(shape_latent.replace(feats=shape_latent.feats.to(dtype)))
    if len(voxels) == 0:
        raise EmptyStructureError("the shape decoder kept no fine voxels; try another seed")
    return voxels


@torch.no_grad()
def decode_texture(vae: TextureVAE, texture_latent: SparseTensor, voxels: SparseVoxels) -> SparseVoxels:
    """Texture latent -> the same voxels with `attrs [N, 6]` (sRGB base colour, metallic, roughness, alpha)."""
    coords = torch.cat([torch.zeros_like(voxels.coords[:, :1]), voxels.coords], dim=1)  # (N, 3) -> (N, 4), b = 0
    dtype = _model_dtype(vae)
    attrs = vae.decode(texture_latent.replace(feats=texture_latent.feats.to(dtype)), coords)
    return SparseVoxels(voxels.coords, voxels.vertex, voxels.edges, attrs.float(), voxels.resolution)


def decode(shape_vae: ShapeVAE, texture_vae: TextureVAE, shape_latent: SparseTensor,
           texture_latent: SparseTensor) -> SparseVoxels:
    """Both latents -> the asset's sparse PBR voxels at `R_hr` (volume frame)."""
    if shape_vae.config.resolution != texture_vae.config.resolution:
        raise InputError(
            f"shape VAE (R_hr={shape_vae.config.resolution}) and texture VAE (R_hr={texture_vae.config.resolution}) "
            "must decode at the same resolution"
        )
    return decode_texture(texture_vae, texture_latent, decode_shape(shape_vae, shape_latent))
