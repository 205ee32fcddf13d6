"""`Pixal3DPipeline`: one image (or several views with known cameras) -> `Asset` (DESIGN sections 1, 9, 11).

Orchestration only: every step is a named public function (`pixal3d.stages`, `pixal3d.preprocess`) and
`__call__` reads as the numbered list of them. Loading gives CPU float32 unless asked; `.to(device, dtype)` moves
the whole pipeline; on CUDA the call runs under bf16 autocast (entered once, here), on the CPU in float32.
`low_vram=True` keeps only the running step's weights on the accelerator (`_weights_on_device`). Randomness comes
from one `torch.Generator` (made from `seed` on the CPU unless one is passed), so a seed gives the same asset on
any device where the kernels agree.

Until trained weights ship, `Pixal3DPipeline.from_config("micro")` (or `"tiny"`) builds randomly initialised
models: the data flow runs end to end, the result is noise-shaped (see `PipelineSettings.min_structure_voxels`
for the stage-1 fallback those presets use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from pixal3d.asset import Asset, FovSource
from pixal3d.camera import Camera
from pixal3d.encoder import EncoderConfig, FeatureMaps, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.image_texels import ImageTexelOptions, recolor_mesh
from pixal3d.models.depth_head import DepthHead, DepthHeadConfig
from pixal3d.models.flow import FlowConfig, FlowTransformer, flow_preset
from pixal3d.models.fov_head import FovHead, FovHeadConfig
from pixal3d.models.shape_vae import ShapeVAE, ShapeVAEConfig
from pixal3d.models.structure_vae import StructureVAE, StructureVAEConfig
from pixal3d.models.texture_vae import TextureVAE, TextureVAEConfig
from pixal3d.preprocess import Background, ImageInput, check_background, preprocess_image
from pixal3d.sampling import SamplerConfig
from pixal3d.silhouette import (
    KEEP_FRAGMENTS,
    carve_voxels,
    SilhouetteOptions,
    constrain_mesh,
    constrain_structure,
    view_mask,
)
from pixal3d.stages import (
    decode,
    encode_images,
    estimate_fov,
    make_condition,
    predict_depth,
    sample_shape,
    sample_structure,
    sample_texture,
)
from pixal3d.weights import PipelineSettings, read_pipeline, resolve_pretrained, write_pipeline

logger = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Every component's config plus the pipeline settings: what `from_config` builds with random weights."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    structure_vae: StructureVAEConfig = field(default_factory=StructureVAEConfig)
    structure_flow: FlowConfig = field(default_factory=lambda: flow_preset("structure", "tiny"))
    shape_vae: ShapeVAEConfig = field(default_factory=ShapeVAEConfig)
    shape_flow: FlowConfig = field(default_factory=lambda: flow_preset("shape", "tiny"))
    texture_vae: TextureVAEConfig = field(default_factory=TextureVAEConfig)
    texture_flow: FlowConfig = field(default_factory=lambda: flow_preset("texture", "tiny"))
    fov_head: FovHeadConfig | None = field(default_factory=FovHeadConfig)
    depth_head: DepthHeadConfig | None = field(default_factory=DepthHeadConfig)
    settings: PipelineSettings = field(default_factory=PipelineSettings)


def micro_config() -> PipelineConfig:
    """A few-second CPU pipeline for tests: 64 px input, 16^3 structure, 32^3 fine voxels, 2 sampler steps."""
    width = dict(dim=32, depth=1, heads=2, feature_channels=16)
    sampler = SamplerConfig(steps=2, guidance=2.0)
    return PipelineConfig(
        encoder=EncoderConfig(channels=16, global_grid=1, pretrained=False),
        structure_vae=StructureVAEConfig(resolution=16, latent_resolution=4, latent_channels=4,
                                         channels=(8, 16, 16), norm_groups=4),
        structure_flow=FlowConfig(tokens="dense", in_channels=4, resolution=4, patch_size=2, **width),
        shape_vae=ShapeVAEConfig(resolution=32, token_resolution=16, latent_channels=8, channels=(16, 16)),
        shape_flow=FlowConfig(tokens="sparse", in_channels=8, resolution=16, **width),
        texture_vae=TextureVAEConfig(resolution=32, token_resolution=16, latent_channels=8, channels=(16, 16)),
        texture_flow=FlowConfig(tokens="sparse", in_channels=8, cond_channels=8, resolution=16, **width),
        fov_head=FovHeadConfig(feature_channels=16, tokens=2, hidden=16),
        depth_head=DepthHeadConfig(feature_channels=16, hidden=16, layers=2),
        settings=PipelineSettings(image_size=64, min_structure_voxels=32, max_structure_voxels=256,
                                  structure_sampler=sampler, shape_sampler=sampler, texture_sampler=sampler),
    )


def tiny_config() -> PipelineConfig:
    """The shipped default's architecture (DESIGN section 9): 256 px, 32^3 structure, 128^3 fine voxels.

    Sized for the budgets of DESIGN section 9 (image -> GLB in <= 60 s on a 2-core CPU): 512 dense stage-1 tokens
    (an 8^3 latent of the 32^3 occupancy) and one stage-2/3 token per active 32^3 voxel, capped at 4096.
    The encoder starts from random weights here: a pipeline's encoder weights always come from its own checkpoint
    (training initialises from ImageNet; see `pixal3d/training`), so inference never needs the ImageNet package.
    """
    flows = {stage: flow_preset(stage, "tiny") for stage in ("structure", "shape", "texture")}
    return PipelineConfig(
        encoder=EncoderConfig(pretrained=False),
        structure_flow=flows["structure"],
        shape_flow=flows["shape"],
        texture_flow=flows["texture"],
        settings=PipelineSettings(min_structure_voxels=64, max_structure_voxels=4096,
                                  structure_sampler=flows["structure"].sampler,
                                  shape_sampler=flows["shape"].sampler,
                                  texture_sampler=flows["texture"].sampler),
    )


def micro64_config() -> PipelineConfig:
    """`micro` decoding at R_hr = 64, the smallest resolution the voxeliser makes ground truth at.

    For tests that need the ground truth at the pipeline's own resolution (`pixal3d eval --oracle`); its shape
    and texture VAEs have the sizes of configs/*_vae_micro_procedural.json.
    """
    config = micro_config()
    config.shape_vae = ShapeVAEConfig(resolution=64, token_resolution=16, latent_channels=8, channels=(16, 16, 32))
    config.texture_vae = TextureVAEConfig(resolution=64, token_resolution=16, latent_channels=8,
                                          channels=(16, 16, 16))
    return config


PRESETS = {"micro": micro_config, "micro64": micro64_config, "tiny": tiny_config}
"""Preset name -> `PipelineConfig` builder, for `from_config("micro")` and the CLI's `--random-weights`."""


def check_compatible(modules: dict[str, nn.Module]) -> None:
    """Raise `InputError` unless the components' sizes chain (resolutions, latent widths, feature widths)."""
    c = {name: m.config for name, m in modules.items() if m is not None}
    pairs = [
        ("structure_flow.resolution", c["structure_flow"].resolution, "structure_vae.latent_resolution",
         c["structure_vae"].latent_resolution),
        ("structure_flow.in_channels", c["structure_flow"].in_channels, "structure_vae.latent_channels",
         c["structure_vae"].latent_channels),
        ("shape_vae.token_resolution", c["shape_vae"].token_resolution, "structure_vae.resolution",
         c["structure_vae"].resolution),
        ("shape_flow.resolution", c["shape_flow"].resolution, "shape_vae.token_resolution",
         c["shape_vae"].token_resolution),
        ("shape_flow.in_channels", c["shape_flow"].in_channels, "shape_vae.latent_channels",
         c["shape_vae"].latent_channels),
        ("texture_vae.resolution", c["texture_vae"].resolution, "shape_vae.resolution", c["shape_vae"].resolution),
        ("texture_vae.token_resolution", c["texture_vae"].token_resolution, "shape_vae.token_resolution",
         c["shape_vae"].token_resolution),
        ("texture_flow.resolution", c["texture_flow"].resolution, "shape_vae.token_resolution",
         c["shape_vae"].token_resolution),
        ("texture_flow.in_channels", c["texture_flow"].in_channels, "texture_vae.latent_channels",
         c["texture_vae"].latent_channels),
        ("texture_flow.cond_channels", c["texture_flow"].cond_channels, "shape_vae.latent_channels",
         c["shape_vae"].latent_channels),
    ]
    for flow in ("structure_flow", "shape_flow", "texture_flow"):
        pairs.append((f"{flow}.feature_channels", c[flow].feature_channels, "encoder.channels", c["encoder"].channels))
    lifting = [flow for flow in ("structure_flow", "shape_flow", "texture_flow") if c[flow].depth_lift]
    if lifting and "depth_head" not in c:
        raise InputError(f"the pipeline's {', '.join(lifting)} lift(s) depth (depth_lift) but it has no depth_head; "
                         "add one (pixal3d assemble --add-heads RUN) or use flows without depth_lift")
    if "depth_head" in c:
        pairs.append(("depth_head.feature_channels", c["depth_head"].feature_channels, "encoder.channels",
                      c["encoder"].channels))
    if "fov_head" in c:
        pairs.append(("fov_head.feature_channels", c["fov_head"].feature_channels, "encoder.channels",
                      c["encoder"].channels))
        pairs.append(("fov_head.tokens", c["fov_head"].tokens, "encoder.global_grid^2 + 1",
                      c["encoder"].global_grid ** 2 + 1))
    bad = [f"{a} = {x} but {b} = {y}" for a, x, b, y in pairs if x != y]
    if bad:
        raise InputError("the pipeline's components do not fit together: " + "; ".join(bad))


class Pixal3DPipeline:
    """Image -> textured 3D asset: preprocess, encode, camera, three flow stages, decode (DESIGN section 1)."""

    def __init__(
        self,
        encoder: ImageEncoder,
        structure_vae: StructureVAE,
        structure_flow: FlowTransformer,
        shape_vae: ShapeVAE,
        shape_flow: FlowTransformer,
        texture_vae: TextureVAE,
        texture_flow: FlowTransformer,
        fov_head: FovHead | None = None,
        settings: PipelineSettings | None = None,
        depth_head: DepthHead | None = None,
    ) -> None:
        self.encoder, self.fov_head, self.depth_head = encoder, fov_head, depth_head
        self.structure_vae, self.structure_flow = structure_vae, structure_flow
        self.shape_vae, self.shape_flow = shape_vae, shape_flow
        self.texture_vae, self.texture_flow = texture_vae, texture_flow
        self.settings = settings or PipelineSettings()
        check_compatible(self.components)
        for module in self.components.values():
            module.eval()
        self._device = torch.device("cpu")
        self._progress = True
        self.cuda_graphs = True
        """On a CUDA device, replay each sampler's flow calls from CUDA graphs (same results, far fewer launches)."""

    # ------------------------------------------------------------------------------------------ loading, saving
    @property
    def components(self) -> dict[str, nn.Module]:
        """Component name -> module (`fov_head` and `depth_head` only when present)."""
        names = ("encoder", "fov_head", "depth_head", "structure_vae", "structure_flow", "shape_vae", "shape_flow",
                 "texture_vae", "texture_flow")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "default",
        *,
        allow_download: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compile_sparse_grid: bool = True,
    ) -> Pixal3DPipeline:
        """Load a saved pipeline: `"default"` (shipped weights), a folder, or a hub name (`allow_download=True`).

        Loading is strict (see `pixal3d.weights`); the result is on the CPU in float32 unless `device`/`dtype`.
        `compile_sparse_grid` sets `cuda_graphs` (CUDA-graph replay of the flow calls on a GPU).
        """
        settings, modules = read_pipeline(resolve_pretrained(name_or_path, allow_download))
        pipe = cls(**modules, settings=settings)
        pipe.compile_sparse_grid = compile_sparse_grid
        return pipe.to(device, dtype)

    @classmethod
    def from_config(cls, config: PipelineConfig | str = "micro", seed: int = 0) -> Pixal3DPipeline:
        """Build a pipeline with randomly initialised weights (reproducible from `seed`).

        Args:
            config: a `PipelineConfig` or a preset name in `PRESETS` ("micro" for tests, "tiny" the default size).
            seed: seed of the weight initialisation (the global RNG is left untouched).
        """
        if isinstance(config, str):
            if config not in PRESETS:
                raise InputError(f"unknown pipeline preset {config!r}; known presets: {sorted(PRESETS)}")
            config = PRESETS[config]()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules = {
                "encoder": ImageEncoder(config.encoder),
                "structure_vae": StructureVAE(config.structure_vae),
                "structure_flow": FlowTransformer(config.structure_flow),
                "shape_vae": ShapeVAE(config.shape_vae),
                "shape_flow": FlowTransformer(config.shape_flow),
                "texture_vae": TextureVAE(config.texture_vae),
                "texture_flow": FlowTransformer(config.texture_flow),
                "fov_head": FovHead(config.fov_head) if config.fov_head is not None else None,
                "depth_head": DepthHead(config.depth_head) if config.depth_head is not None else None,
            }
        return cls(**modules, settings=dataclasses.replace(config.settings))

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write `pipeline.json` and one folder per component (atomically); `dtype` casts the stored weights."""
        return write_pipeline(path, self.settings, self.components, dtype)

    # ------------------------------------------------------------------------------------------ device, progress
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Pixal3DPipeline:
        """Move every component (like `nn.Module.to`); returns self."""
        if device is not None:
            self._device = torch.device(device)
        for module in self.components.values():
            module.to(device=self._device, dtype=dtype)
        return self

    @property
    def compile_sparse_grid(self) -> bool:
        """The diffusers-style name of `cuda_graphs` (replay the flow calls from CUDA graphs on a GPU)."""
        return self.cuda_graphs

    @compile_sparse_grid.setter
    def compile_sparse_grid(self, value: bool) -> None:
        self.cuda_graphs = bool(value)

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes (with `low_vram`, weights wait on the CPU between steps)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def set_progress_bar_config(self, disable: bool = False) -> None:
        """Show (default) or hide the samplers' progress bars."""
        self._progress = not disable

    @contextlib.contextmanager
    def _weights_on_device(self, low_vram: bool, *names: str) -> Iterator[None]:
        """With `low_vram`, hold the named components on the compute device for the block, then on the CPU."""
        modules = [self.components[n] for n in names if n in self.components] if low_vram else []
        for module in modules:
            module.to(self._device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")

    def _place_weights(self, low_vram: bool) -> None:
        target = torch.device("cpu") if low_vram else self._device
        for module in self.components.values():
            module.to(target)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ the steps
    def check_inputs(
        self,
        image: ImageInput | Sequence[ImageInput],
        fov: float | None,
        seed: int,
        steps: int | None,
        guidance: float | None,
        resolution: int | None,
        faces: int,
        texture_size: int,
        cameras: Sequence[Camera] | None,
        generator: torch.Generator | None,
    ) -> list[ImageInput]:
        """Validate every argument before any work; returns the views as a list. Raises `InputError`."""
        from pixal3d.geometry.export import ExportOptions

        views = list(image) if isinstance(image, (list, tuple)) else [image]
        if not views:
            raise InputError("no image given")
        for view in views:
            if isinstance(view, (str, os.PathLike)) and not Path(view).is_file():
                raise InputError(f"{os.fspath(view)}: no such image file; check the path")
        if fov is not None:
            if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not math.isfinite(fov) or fov <= 0:
                raise InputError(f"fov must be a number in (0, pi) radians, got {fov!r}")
            if fov >= math.pi:
                raise InputError(f"fov must be in (0, pi) radians, got {fov}; degrees? use math.radians({fov})")
        if cameras is not None:
            if len(cameras) != len(views) or not all(isinstance(c, Camera) for c in cameras):
                raise InputError(f"cameras must be one Camera per view: {len(views)} views, got {len(cameras)} items")
            if fov is not None:
                raise InputError("give the FoV through the cameras (cameras[0].fov), not both fov and cameras")
        elif len(views) > 1:
            raise InputError(
                f"{len(views)} images were given without cameras: multi-view input needs one Camera per view "
                "(relative to view 0); for different objects call the pipeline once per image"
            )
        if generator is None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InputError(f"seed must be an integer >= 0, got {seed!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise InputError(f"steps must be an integer >= 1, got {steps!r}")
        if guidance is not None and (
            isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance < 100
        ):
            raise InputError(f"guidance must be a number in [0, 100) (1 = no guidance), got {guidance!r}")
        r_hr = self.shape_vae.config.resolution
        if resolution is not None and resolution != r_hr:
            raise InputError(
                f"this pipeline decodes at resolution {r_hr} only (its shape VAE's R_hr), got {resolution!r}; "
                "omit resolution (--resolution) or load a pipeline trained at that resolution"
            )
        ExportOptions(faces=faces, texture_size=texture_size)  # the export's checks, before any work
        return views

    def stage_samplers(self, steps: int | None, guidance: float | None) -> dict[str, SamplerConfig]:
        """Per-stage sampler settings: the pipeline's defaults with `steps` / `guidance` overridden when given."""
        s = self.settings
        overrides = {k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None}
        return {
            "structure": dataclasses.replace(s.structure_sampler, **overrides),
            "shape": dataclasses.replace(s.shape_sampler, **overrides),
            "texture": dataclasses.replace(s.texture_sampler, **overrides),
        }

    def preprocess(self, views: Sequence[ImageInput], background: Background = "auto") -> tuple[list, torch.Tensor]:
        """Views -> (the `S x S` RGBA crops as PIL images, `[V, 4, S, S]` float32 in [0, 1] on the CPU)."""
        size = self.settings.image_size
        crops = [preprocess_image(v, size=size, background=background).image for v in views]
        arrays = np.stack([np.asarray(c, dtype=np.float32) / 255.0 for c in crops])  # (V, S, S, 4)
        return crops, torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()  # -> (V, 4, S, S)

    def make_cameras(
        self, features: FeatureMaps, fov: float | None, cameras: Sequence[Camera] | None
    ) -> tuple[list[Camera], FovSource]:
        """The views' cameras at the model's image size: given cameras, else the given / estimated / default FoV."""
        size = self.settings.image_size
        if cameras is not None:
            return [c.with_size(size) for c in cameras], "cameras"
        if fov is not None:
            return [Camera(fov=float(fov), size=size)], "given"
        if self.fov_head is not None:
            return [Camera(fov=estimate_fov(self.fov_head, features), size=size)], "estimated"
        return [Camera(fov=self.settings.default_fov, size=size)], "default"

    def lift_depths(self, features: Sequence[FeatureMaps], cameras: Sequence[Camera],
                    depth: torch.Tensor | None) -> list[torch.Tensor] | None:
        """The depth map per view for `depth_lift` flows (view 0's is `depth`), or None when no flow uses one.

        Extra views get the depth head's map with their own camera (`predict_depth`; the head assumes the camera at
        its default distance from the object, as in training).
        """
        if not any(f.config.depth_lift for f in (self.structure_flow, self.shape_flow, self.texture_flow)):
            return None
        extra = [predict_depth(self.depth_head, f, c) for f, c in zip(features[1:], cameras[1:], strict=True)]
        return [depth, *extra]

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        fov: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        resolution: int | None = None,
        faces: int = 100_000,
        texture_size: int = 2048,
        cameras: Sequence[Camera] | None = None,
        generator: torch.Generator | None = None,
        low_vram: bool = False,
        silhouette: SilhouetteOptions | bool = True,
        image_texels: ImageTexelOptions | bool = True,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        compile_sparse_grid: bool | None = None,
        background: Background = "auto",
    ) -> Asset:
        """Generate an asset from one image (or several views of one object with known cameras).

        The diffusers-style call works as is:
        `pipe(image=img, guidance_scale=4.5, num_inference_steps=40).meshes[0].export("x.glb", include_pbr=True)`.

        Args:
            image: a path, PIL image or array; or a list of views (then `cameras` is required).
            fov: the input's horizontal FoV in radians; None = the FoV head's estimate (or the default).
            seed: seed of the sampling noise (ignored when `generator` is given).
            num_inference_steps: Euler steps of every stage; None = each stage's default. `steps` is the same
                (the CLI's `--steps`); give one of them.
            guidance_scale: classifier-free guidance weight of every stage (1 = none); None = each stage's default.
                `guidance` is the same (the CLI's `--guidance`); give one of them.
            compile_sparse_grid: on CUDA, replay the flow calls from CUDA graphs (None = `self.cuda_graphs`;
                the same results, fewer launches); no effect on the CPU.
            background: background removal of opaque images (`preprocess_image`): "auto", "grabcut" or "none".
            steps: alias of `num_inference_steps`.
            guidance: alias of `guidance_scale`.
            resolution: fine voxel resolution; None or the shape VAE's `R_hr` (the only one a checkpoint decodes).
            faces: face budget that `Asset.export` uses by default.
            texture_size: texture side that `Asset.export` uses by default.
            cameras: one `Camera` per view, poses relative to view 0 (multi-view input).
            generator: a `torch.Generator` for the noise (overrides `seed`).
            low_vram: keep only the running step's weights on the accelerator.
            silhouette: enforce the input silhouette (carve outside it, cover every mask pixel; `SilhouetteOptions`,
                or True / False for the defaults / off). Uses view 0 only.
            image_texels: colour the surface the input camera sees from its pixels (`ImageTexelOptions`, or
                True / False). Uses view 0 only.

        Returns:
            The `Asset` (CPU tensors), with the time of each step in `timings`.
        """
        # 1. check inputs (the diffusers-style names are aliases of ours)
        steps = _alias("num_inference_steps", num_inference_steps, "steps", steps)
        guidance = _alias("guidance_scale", guidance_scale, "guidance", guidance)
        cuda_graphs = self.cuda_graphs if compile_sparse_grid is None else bool(compile_sparse_grid)
        check_background(background)
        views = self.check_inputs(image, fov, seed, steps, guidance, resolution, faces, texture_size, cameras,
                                  generator)
        samplers = self.stage_samplers(steps, guidance)
        silhouette = _options(silhouette, SilhouetteOptions, "silhouette")
        image_texels = _options(image_texels, ImageTexelOptions, "image_texels")
        used_seed = seed if generator is None else None
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        timer = _StepTimer(self._device)
        self._place_weights(low_vram)
        s, progress = self.settings, self._progress
        with self._autocast():
            # 2. preprocess: square RGBA crops on black
            with timer("preprocess"):
                crops, images = self.preprocess(views, background)
            # 3. encode every view
            with timer("encode"), self._weights_on_device(low_vram, "encoder"):
                features = encode_images(self.encoder, images.to(self._device))
            # 4. camera: given cameras / given FoV / FoV head / default
            with timer("camera"), self._weights_on_device(low_vram, "fov_head", "depth_head"):
                cams, fov_source = self.make_cameras(features[0], fov, cameras)
                depth = predict_depth(self.depth_head, features[0], cams[0]) if self.depth_head else None
                cond = make_condition(features, cams, self.lift_depths(features, cams, depth))
                view = (view_mask(images[0, 3], cams[0], silhouette.dilation, depth) if silhouette.enabled
                        else None)
            # 5. stage 1: sparse structure (carved to the silhouette, covering every mask pixel)
            with timer("structure"), self._weights_on_device(low_vram, "structure_flow", "structure_vae"):
                coords = sample_structure(self.structure_flow, self.structure_vae, cond, generator,
                                          samplers["structure"], s.structure_threshold, s.min_structure_voxels,
                                          s.max_structure_voxels, progress, cuda_graphs)
                if view is not None:
                    coords = constrain_structure(coords, self.structure_vae.config.resolution, view)
            # 6. stage 2: shape latent on the active voxels
            with timer("shape"), self._weights_on_device(low_vram, "shape_flow"):
                shape = sample_shape(self.shape_flow, cond, coords, generator, samplers["shape"], progress,
                                     cuda_graphs)
            # 7. stage 3: PBR latent (noise || shape latent)
            with timer("texture"), self._weights_on_device(low_vram, "texture_flow"):
                texture = sample_texture(self.texture_flow, cond, shape, generator, samplers["texture"], progress,
                                         cuda_graphs)
            # 8. decode: fine PBR voxels -> dual-grid mesh (carved and patched to the silhouette)
            with timer("decode"), self._weights_on_device(low_vram, "shape_vae", "texture_vae"):
                voxels = decode(self.shape_vae, self.texture_vae, shape, texture).to("cpu")
                if view is not None:
                    voxels = carve_voxels(voxels, view)
                mesh = voxels_to_mesh(voxels)
                if view is not None:
                    mesh = constrain_mesh(mesh, view, images[0], silhouette)
                # 9. the input pixels on the visible surface
                if image_texels.enabled:
                    mesh = recolor_mesh(mesh, images[0].permute(1, 2, 0), cams[0], image_texels)
        logger.info("%d coarse voxels -> %d fine voxels -> %d faces (%s)", coords.shape[0], len(voxels),
                    len(mesh.faces), ", ".join(f"{k} {v:.2f} s" for k, v in timer.timings.items()))
        # 10. the asset
        return Asset(mesh=mesh, voxels=voxels, camera=cams[0], image=crops[0], fov_source=fov_source,
                     timings=timer.timings, seed=used_seed, faces=faces, texture_size=texture_size,
                     depth=None if depth is None else depth.float().cpu(),
                     image_texels=image_texels if image_texels.enabled else None,
                     cleanup=KEEP_FRAGMENTS if silhouette.enabled else None)


def _options(value: object, cls: type, name: str) -> object:
    """`True` -> `cls()`, `False` -> `cls(enabled=False)`, an instance of `cls` as it is; else `InputError`."""
    if isinstance(value, bool):
        return cls(enabled=value)
    if isinstance(value, cls):
        return value
    raise InputError(f"{name} must be True, False or a {cls.__name__}, got {value!r}")


def _alias(name: str, value: object, alias: str, alias_value: object) -> object:
    """One argument under two names (the diffusers name and ours): the one given, and never two different values."""
    if value is not None and alias_value is not None and value != alias_value:
        raise InputError(f"{name}={value!r} and {alias}={alias_value!r} name the same setting; give only {name}")
    return value if value is not None else alias_value


class _StepTimer:
    """`with timer("name"):` records the block's wall time in seconds (synchronising CUDA first)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = time.perf_counter() - start
        logger.info("%s: %.2f s", name, self.timings[name])
