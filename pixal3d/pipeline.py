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
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pixal3d.arguments import aliased, as_options, check_call
from pixal3d.asset import Asset, FovSource
from pixal3d.camera import Camera
from pixal3d.encoder import FeatureMaps, ImageEncoder
from pixal3d.geometry.dual_mesh import voxels_to_mesh
from pixal3d.image_texels import ImageTexelOptions, recolor_mesh
from pixal3d.models.depth_head import DepthHead, check_depth, finite_depth, pool_depth
from pixal3d.models.flow import FlowTransformer
from pixal3d.models.fov_head import FovHead
from pixal3d.models.shape_vae import ShapeVAE
from pixal3d.models.structure_vae import StructureVAE
from pixal3d.models.texture_vae import TextureVAE
from pixal3d.preprocess import Background, ImageInput, check_background, preprocess_image
from pixal3d.presets import PipelineConfig, check_compatible, pipeline_preset
from pixal3d.sampling import SamplerConfig
from pixal3d.silhouette import (
    KEEP_FRAGMENTS,
    SilhouetteOptions,
    carve_voxels,
    constrain_mesh,
    constrain_structure,
    view_mask,
)
from pixal3d.stages import (
    STEPS,
    SamplerCallback,
    decode,
    encode_images,
    estimate_fov,
    make_condition,
    predict_depth,
    sample_shape,
    sample_structure,
    sample_texture,
)
from pixal3d.timing import StepTimer
from pixal3d.weights import PipelineSettings, read_pipeline, resolve_pretrained, write_pipeline

logger = logging.getLogger(__name__)

StepCallback = Callable[[str, dict[str, Any]], None]
"""`callback(step, info)` of `Pixal3DPipeline.__call__`: `step` a name in `pixal3d.stages.STEPS`."""


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
            config: a `PipelineConfig` or a preset name in `pixal3d.presets.PIPELINES` ("micro" for tests, "tiny"
                the default size).
            seed: seed of the weight initialisation (the global RNG is left untouched).
        """
        if isinstance(config, str):
            config = pipeline_preset(config)
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
        callback: StepCallback | None = None,
        depth: torch.Tensor | None = None,
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
            callback: called as `callback(step, info)` when each step of `pixal3d.stages.STEPS` starts, and
                before every sampler step of the three flow stages (in the spirit of diffusers'
                `callback_on_step_end`). `info` holds `step_index` and `num_steps` (the step's place in `STEPS`),
                and during sampling `sampler_step` (0-based) and `sampler_steps`. Raise from it to stop the call
                (a server's cancel or time limit): nothing runs after the exception.
            depth: view 0's depth along the optical axis, `[H, W]` in volume units over the preprocessed square
                crop (0 = no surface), used instead of the depth head's map by the depth lift and the silhouette
                rule: the rendered depth in evaluation (`pixal3d eval --depth-source render`, which measures what
                the head's error costs), or a depth sensor registered to the crop.
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
        steps = aliased("num_inference_steps", num_inference_steps, "steps", steps)
        guidance = aliased("guidance_scale", guidance_scale, "guidance", guidance)
        cuda_graphs = self.cuda_graphs if compile_sparse_grid is None else bool(compile_sparse_grid)
        check_background(background)
        if depth is not None:
            depth = check_depth(depth)
        views = check_call(image, fov, seed, steps, guidance, resolution, faces, texture_size, cameras, generator,
                           self.shape_vae.config.resolution)
        samplers = self.stage_samplers(steps, guidance)
        silhouette = as_options(silhouette, SilhouetteOptions, "silhouette")
        image_texels = as_options(image_texels, ImageTexelOptions, "image_texels")
        used_seed = seed if generator is None else None
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
        timer = StepTimer(self._device, logger)
        step = _reporting_steps(timer, callback)
        self._place_weights(low_vram)
        s, progress = self.settings, self._progress
        with self._autocast():
            # 2. preprocess: square RGBA crops on black
            with step("preprocess"):
                crops, images = self.preprocess(views, background)
            # 3. encode every view
            with step("encode"), self._weights_on_device(low_vram, "encoder"):
                features = encode_images(self.encoder, images.to(self._device))
            # 4. camera: given cameras / given FoV / FoV head / default
            with step("camera"), self._weights_on_device(low_vram, "fov_head", "depth_head"):
                cams, fov_source = self.make_cameras(features[0], fov, cameras)
                given = depth is not None  # a given map has no-surface cells; the head's is finite everywhere
                if given:
                    depth = pool_depth(depth, features[0].maps[1].shape[-1]).to(self._device)
                elif self.depth_head is not None:
                    depth = predict_depth(self.depth_head, features[0], cams[0])
                cond = make_condition(features, cams, self.lift_depths(features, cams, depth))
                if given:
                    depth = finite_depth(depth)
                view = (view_mask(images[0, 3], cams[0], silhouette.dilation, depth) if silhouette.enabled
                        else None)
            # 5. stage 1: sparse structure (carved to the silhouette, covering every mask pixel)
            with step("structure"), self._weights_on_device(low_vram, "structure_flow", "structure_vae"):
                coords = sample_structure(self.structure_flow, self.structure_vae, cond, generator,
                                          samplers["structure"], s.structure_threshold, s.min_structure_voxels,
                                          s.max_structure_voxels, progress, cuda_graphs,
                                          _sampler_callback(callback, "structure"))
                if view is not None:
                    coords = constrain_structure(coords, self.structure_vae.config.resolution, view)
            # 6. stage 2: shape latent on the active voxels
            with step("shape"), self._weights_on_device(low_vram, "shape_flow"):
                shape = sample_shape(self.shape_flow, cond, coords, generator, samplers["shape"], progress,
                                     cuda_graphs, _sampler_callback(callback, "shape"))
            # 7. stage 3: PBR latent (noise || shape latent)
            with step("texture"), self._weights_on_device(low_vram, "texture_flow"):
                texture = sample_texture(self.texture_flow, cond, shape, generator, samplers["texture"], progress,
                                         cuda_graphs, _sampler_callback(callback, "texture"))
            # 8. decode: fine PBR voxels -> dual-grid mesh (carved and patched to the silhouette)
            with step("decode"), self._weights_on_device(low_vram, "shape_vae", "texture_vae"):
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


def _reporting_steps(timer: StepTimer,
                     callback: StepCallback | None) -> Callable[[str], contextlib.AbstractContextManager[None]]:
    """`with step("encode"):` tells `callback` the step starts, then times the block (`timer`)."""
    def step(name: str) -> contextlib.AbstractContextManager[None]:
        if callback is not None:
            callback(name, _step_info(name))
        return timer(name)

    return step


def _sampler_callback(callback: StepCallback | None, name: str) -> SamplerCallback | None:
    """The sampler's `(i, steps)` callback of flow stage `name`, reporting to `callback` (None: none)."""
    if callback is None:
        return None
    info = _step_info(name)
    return lambda i, steps: callback(name, {**info, "sampler_step": i, "sampler_steps": steps})


def _step_info(name: str) -> dict[str, Any]:
    return {"step_index": STEPS.index(name), "num_steps": len(STEPS)}
