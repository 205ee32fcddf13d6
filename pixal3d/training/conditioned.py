"""Conditioned flow training (DESIGN sections 3, 5, 8): encoder + flow (+ FoV head) on frozen-VAE latents.

A flow run (`"model": "flow"` with a `"flow"` section, `FlowTrainConfig`) trains one `ConditionedFlow`: the
image encoder, the stage's `FlowTransformer` and optionally the FoV head, as one module, so DDP, EMA and the
checkpoint treat them together (tensor names `encoder.*`, `flow.*`, `fov_head.*`). The frozen VAEs are not part
of it: they only turn each batch into the flow's target latents (no_grad, eval mode), so they are neither saved
again nor averaged by the EMA.

Targets per stage (the VAE's posterior mean, or a posterior sample, `FlowTrainConfig.latent`):
- structure: the structure VAE latent `[B, C, G, G, G]` of the coarse occupancy (dense tokens);
- shape: the shape VAE latent tokens on the coarse active voxels, a `SparseTensor` at R_tok;
- texture: the texture VAE latent on the same tokens, with the shape VAE latent as `concat`.

The condition is built exactly as at inference: `FeatureMaps` from the encoder, one `Camera` per sample (its
FoV, the default distance), `stages.make_condition`; then `FlowCondition.with_dropout(p)` drops the lifted
features and the global tokens together. The FoV head, when configured, regresses the sample's FoV (L1 in
radians) from the same features; the shipped configs train it in the stage-1 run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixal3d.camera import Camera
from pixal3d.config import config_from_dict, config_to_dict, load_config
from pixal3d.encoder import EncoderConfig, FeatureMaps, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.models import model_classes
from pixal3d.models.depth_head import DepthHead, DepthHeadConfig, depth_loss, splat_depth
from pixal3d.models.flow import FlowConfig, FlowTransformer, normalize_latent, widen_lift_weight
from pixal3d.models.fov_head import FovHead, FovHeadConfig
from pixal3d.models.shape_vae import ShapeVAEConfig, widen_corner_head
from pixal3d.sampling import flow_matching_loss
from pixal3d.sparse import SparseTensor
from pixal3d.stages import make_condition
from pixal3d.training.checkpoint import check_tensors, latest_checkpoint, load_checkpoint, read_safetensors
from pixal3d.training.config import FlowTrainConfig, TrainConfig
from pixal3d.training.latent_cache import LatentCache
from pixal3d.weights import CONFIG_FILE, is_component_folder, load_component, read_component_tensors

logger = logging.getLogger(__name__)

STAGE_VAE = {"structure": "structure_vae", "shape": "shape_vae", "texture": "texture_vae"}
"""The VAE whose latent each stage's flow learns."""


@dataclass
class ConditionedFlowConfig:
    """The trained components of a flow run (stored as the checkpoint's `model_config`)."""

    stage: str
    encoder: EncoderConfig
    flow: FlowConfig
    fov_head: FovHeadConfig | None = None
    depth_head: DepthHeadConfig | None = None


class ConditionedFlow(nn.Module):
    """Encoder + flow (+ FoV head, + depth head): `forward` is one training pass returning its loss terms."""

    def __init__(self, config: ConditionedFlowConfig, train_encoder: bool = True, train_flow: bool = True) -> None:
        super().__init__()
        self.config = config
        self.train_encoder = train_encoder
        self.train_flow = train_flow
        self.encoder = ImageEncoder(config.encoder).requires_grad_(train_encoder)
        self.flow = FlowTransformer(config.flow).requires_grad_(train_flow)
        self.fov_head = FovHead(config.fov_head) if config.fov_head is not None else None
        self.depth_head = DepthHead(config.depth_head) if config.depth_head is not None else None
        self.set_lift_head(None, 0.0)

    def set_lift_head(self, head: DepthHead | None, fraction: float) -> None:
        """A frozen depth head whose map the depth lift reads for `fraction` of the samples (drawn per sample and
        step) instead of the ground truth (`FlowTrainConfig.lift_depth_head_fraction`). Kept outside the module's
        parameters and state: it is an input, like the frozen VAEs, not part of the run's weights."""
        if head is not None and not self.flow.config.depth_lift:
            raise InputError("lift_depth_head is for depth_lift flows; this flow has no depth lift")
        self.__dict__["_lift_head"] = (head, fraction) if head is not None and fraction > 0 else None

    def forward(self, image: torch.Tensor, cameras: list[Camera], x0: torch.Tensor | SparseTensor | None,
                generator: torch.Generator, concat: SparseTensor | None = None, fov: torch.Tensor | None = None,
                cond_dropout: float = 0.1, timesteps: str = "logit_normal",
                depth: torch.Tensor | None = None, depth_noise: float = 0.0) -> dict[str, torch.Tensor]:
        """One training pass.

        Args:
            image: `[B, 4, S, S]` float RGBA in [0, 1].
            cameras: one `Camera` per element.
            x0: the clean latents (dense `[B, C, G, G, G]` or a `SparseTensor` with B batch elements).
            generator: dropout, timestep and noise source.
            concat: stage 3's shape latent on the voxels of `x0`.
            fov: `[B]` radians, the FoV head's target (needed when the head exists).
            cond_dropout: probability of the unconditional branch per element (training mode only).
            timesteps: "logit_normal" or "uniform".
            depth: `[B, 1, S/4, S/4]` volume-frame z of the visible surface (`splat_depth`, `-inf` where none), the
                depth head's target and, with a `depth_lift` flow, the lift's depth map (needed when either exists).
            depth_noise: std (volume units) of the Gaussian noise added per pixel to the lift's depth map.

        Returns:
            `{"mse": flow-matching loss, "keep": fraction conditioned}` (without `train_flow`: no flow terms), plus
            `"fov_l1"` (radians) with a FoV head and `"depth_l1"` (volume units) with a depth head.
        """
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            features = self.encoder(image)
        out: dict[str, torch.Tensor] = {}
        if self.train_flow:
            depths = None
            if self.flow.config.depth_lift:
                z = self._head_depth(features, depth, generator)
                depths = [lift_depth(z, cameras, depth_noise, generator)]
            # In eval mode (the held-out metric) every element keeps its condition: the score is the conditional
            # prediction's, which sampling relies on, not a mix with the unconditional branch.
            dropout = cond_dropout if self.training else 0.0
            cond = make_condition([features], [cameras], depths).with_dropout(dropout, generator)
            kwargs = {"concat": concat} if concat is not None else {}
            out["mse"] = flow_matching_loss(self.flow, x0, cond, generator, timesteps, model_kwargs=kwargs)
            out["keep"] = cond.keep.float().mean()
        if self.fov_head is not None:
            out["fov_l1"] = (self.fov_head(features) - fov.float()).abs().mean()
        if self.depth_head is not None:
            out["depth_l1"] = depth_loss(self.depth_head(features), depth, image[:, 3:4])
        return out


    def _head_depth(self, features: FeatureMaps, z: torch.Tensor | None,
                    generator: torch.Generator) -> torch.Tensor | None:
        """The volume-frame z map the lift reads: the ground truth `z`, with a drawn fraction of the samples
        replaced by the frozen lift head's prediction (the map inference reads)."""
        if self.__dict__["_lift_head"] is None or z is None:
            return z
        head, fraction = self.__dict__["_lift_head"]
        with torch.no_grad():
            predicted = head(features).float()
        if predicted.shape != z.shape:
            raise InputError(f"lift_depth_head predicts {tuple(predicted.shape)} maps, the batch's depth target is "
                             f"{tuple(z.shape)}; use a head for this encoder and image size")
        pick = torch.rand(z.shape[0], generator=generator, device=generator.device) < fraction
        return torch.where(pick.to(z.device)[:, None, None, None], predicted, z.float())


def lift_depth(z: torch.Tensor | None, cameras: list[Camera], noise: float,
               generator: torch.Generator) -> torch.Tensor:
    """The depth-aware lift's training depth map: the ground-truth splat as depth along the view axis, plus noise.

    Inference lifts the depth head's prediction instead; `noise` (volume units, per pixel, from `generator`) stands
    in for its error. The train/inference gap this leaves (a sharp ground truth vs a smooth prediction) is to be
    measured: evaluate the fine-tuned flows with the depth head's map and with the splat (docs/training.md).

    Args:
        z: `[B, 1, h, w]` volume-frame z of the visible surface (`depth_target`; `-inf` where none).
        cameras: one `Camera` per element.
        noise: std of the Gaussian noise in volume units (0: none).
        generator: noise source (on z's device).

    Returns:
        `[B, 1, h, w]` float32 depth `d - z` (+ noise), `+inf` where there is no surface.
    """
    if z is None:
        raise InputError("a depth_lift flow trains on the batch's ground-truth depth (depth_target); none was given")
    eye = torch.tensor([c.eye_distance for c in cameras], device=z.device, dtype=torch.float32)
    depth = eye[:, None, None, None] - z.float()  # -inf (no surface) -> +inf
    if noise > 0:
        eps = torch.randn(depth.shape, generator=generator, device=generator.device, dtype=torch.float32)
        depth = depth + noise * eps.to(depth.device)  # inf + finite stays inf
    return depth


# ------------------------------------------------------------------------------------------------ frozen VAEs
def load_frozen_vae(name: str, checkpoint: str | None, config: dict[str, Any], weights: str,
                    device: torch.device) -> nn.Module:
    """The frozen VAE `name` ("structure_vae", ...) from a training checkpoint, or random from `config`.

    Args:
        name: its `MODELS` key; a checkpoint written for another model raises.
        checkpoint: a run folder, its `checkpoints/` or a `step_*` folder, or a pipeline's component folder
            (e.g. `pixal3d/weights/default/shape_vae`, to fine-tune flows on a shipped model's VAEs); None builds
            `config` with random weights (benchmarks, tests; logged as a warning since its latents mean nothing).
        config: the VAE config (only without a checkpoint).
        weights: "ema" or "model".
        device: where it runs.
    """
    config_cls, model_cls = model_classes(name)
    if checkpoint is None:
        logger.warning("%s: no vae_checkpoint, using random frozen weights (benchmarks and tests only)", name)
        vae = model_cls(config_from_dict(config_cls, config, where=f"flow.{name} config"))
    elif is_component_folder(checkpoint):
        vae = load_component(checkpoint, name)
    else:
        folder = latest_checkpoint(checkpoint) or Path(checkpoint)
        tensors, meta = load_checkpoint(folder)
        if meta.get("config", {}).get("model") != name:
            raise InputError(f"{folder} is a {meta.get('config', {}).get('model')!r} checkpoint, this stage needs "
                             f"a {name!r} one")
        if weights not in tensors:
            raise InputError(f"{folder} has no {weights!r} weights (groups {sorted(tensors)}); set vae_weights")
        vae = model_cls(config_from_dict(config_cls, meta["model_config"], where=f"{folder} model_config"))
        check_tensors(vae.state_dict(), tensors[weights], f"checkpoint {folder} ({weights})")
        vae.load_state_dict(tensors[weights], strict=True)
    return vae.to(device).requires_grad_(False).eval()


def _tokens(x0: torch.Tensor | SparseTensor, flow: FlowConfig) -> int:
    """Flow tokens in the batch: `B (G / p)^3` dense, the rows of a sparse latent."""
    if isinstance(x0, SparseTensor):
        return int(x0.feats.shape[0])
    return int(x0.shape[0]) * (flow.resolution // flow.patch) ** 3


def make_flow_objective(flow_config: FlowTrainConfig, vaes: dict[str, nn.Module]) -> Callable:
    """The objective of a conditioned flow run: `(model, batch, generator) -> (loss, metrics)`.

    loss = flow-matching MSE (unless `train_flow` is false) + `fov_weight` * FoV L1 (radians) with a FoV head
    + `depth_weight` * depth L1 (volume units) with a depth head.
    """
    cache = LatentCache(flow_config.latent_cache)

    def flow_objective(model: nn.Module, batch: dict[str, Any],
                       generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        x0, concat = (cache.latents(flow_config.stage, vaes, batch, flow_config.latent, generator)
                      if flow_config.train_flow else (None, None))
        if x0 is not None:
            x0 = normalize_latent(x0, inner.config.flow)  # unit-variance targets when the flow has latent stats
        lifting = flow_config.train_flow and inner.config.flow.depth_lift
        depth = depth_target(batch) if inner.depth_head is not None or lifting else None
        image = batch["image"]
        if flow_config.head_flip > 0 and model.training:
            image, depth = mirror_samples(image, depth, flow_config.head_flip, generator)
        out = model(image, batch["cameras"], x0, generator, concat=concat, fov=batch["fov"],
                    cond_dropout=flow_config.cond_dropout, timesteps=flow_config.timesteps, depth=depth,
                    depth_noise=flow_config.depth_noise)
        weights = {"mse": 1.0, "fov_l1": flow_config.fov_weight, "depth_l1": flow_config.depth_weight}
        loss = sum(weights[name] * value for name, value in out.items() if name in weights)
        metrics = {name: value.detach() for name, value in out.items()}
        if x0 is not None:
            # A fill kernel, not a host-to-device copy (`torch.tensor(x, device=cuda)` synchronises the stream).
            metrics["tokens"] = torch.full((), float(_tokens(x0, inner.config.flow)), device=loss.device)
        return loss, metrics

    return flow_objective


def mirror_samples(image: torch.Tensor, depth: torch.Tensor | None, probability: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`image [B, 4, S, S]` and `depth [B, 1, S/4, S/4]` (or None) with a drawn `probability` of the samples
    mirrored left-right. The camera's axis is the image centre, so a mirror image is the mirror object seen by the
    same camera: same FoV, and the depth map mirrored with it."""
    flip = torch.rand(image.shape[0], generator=generator, device=generator.device).to(image.device) < probability
    mask = flip.view(-1, 1, 1, 1)
    image = torch.where(mask, image.flip(-1), image)
    if depth is not None:
        depth = torch.where(mask.to(depth.device), depth.flip(-1), depth)
    return image, depth


def depth_target(batch: dict[str, Any]) -> torch.Tensor:
    """The depth head's target (and the depth lift's): the batch's fine dual vertices z-buffered at `S/4`."""
    coords, cameras = batch["coords"], batch["cameras"]
    if "resolution" not in batch:
        raise InputError("depth head and depth lift training need image batches with fine voxels (data kind "
                         "procedural or shards)")
    resolution = batch["resolution"]
    points = (coords[:, 1:].float() + batch["vertex"].float()) / resolution - 0.5  # dual vertices, volume frame
    size = batch["image"].shape[-1] // 4
    return splat_depth(points, coords[:, 0], cameras, size)


# ------------------------------------------------------------------------------------------------ building
def _load_encoder(encoder: ImageEncoder, path: str) -> None:
    """Encoder weights from a component folder (`encoder/model.safetensors`) or a flow run's checkpoint."""
    p = Path(path)
    if p.is_file():
        tensors = read_safetensors(p)
    elif (p / "model.safetensors").is_file():
        tensors = read_safetensors(p / "model.safetensors")
    else:
        folder = latest_checkpoint(p) or p
        groups, _ = load_checkpoint(folder)
        group = groups.get("ema", groups["model"])
        tensors = {k.removeprefix("encoder."): v for k, v in group.items() if k.startswith("encoder.")}
    check_tensors(encoder.state_dict(), tensors, f"encoder weights {path}")
    encoder.load_state_dict(tensors, strict=True)


def pipeline_init_tensors(folder: str | Path, config: TrainConfig) -> dict[str, torch.Tensor]:
    """A run's initial weights from a pipeline folder (`init_weights` = e.g. `pixal3d/weights/default`), float32.

    A flow run takes the pipeline's `encoder`, `<stage>_flow` and (when the run has one) `fov_head` components,
    named as the run's module names them (`encoder.*`, `flow.*`, `fov_head.*`); any other run takes the
    component of its model's name (`shape_vae`, ...). This is how a shipped model is fine-tuned on new data.
    A `depth_lift` flow started from a flow without it gets the new lift columns zero-initialised
    (`widen_lift_weights`), so the fine-tune starts exactly at the shipped flow's behaviour.
    """
    folder = Path(folder)
    if config.model == "flow":
        parts = {"encoder": "encoder.", f"{config.flow.stage}_flow": "flow."}
        if config.flow.fov_head is not None:
            parts["fov_head"] = "fov_head."
        if config.flow.depth_head is not None and is_component_folder(folder / "depth_head"):
            parts["depth_head"] = "depth_head."  # a pipeline without one: the new head starts from random weights
    else:
        parts = {config.model: ""}
    tensors = {}
    for component, prefix in parts.items():
        if not is_component_folder(folder / component):
            raise InputError(f"init_weights {folder}: the pipeline has no {component} component to start from")
        part = {k: v.float() for k, v in read_component_tensors(folder / component).items()}
        if prefix == "flow.":
            target = config_from_dict(FlowConfig, config.model_config, where="flow model_config")
            part = widen_lift_weights(part, load_config(FlowConfig, folder / component / CONFIG_FILE), target)
        elif component == "shape_vae":
            part = widen_shape_decoder(part, load_config(ShapeVAEConfig, folder / component / CONFIG_FILE),
                                       config_from_dict(ShapeVAEConfig, config.model_config, where="shape_vae"))
        tensors.update({prefix + k: v for k, v in part.items()})
    return tensors


def widen_lift_weights(tensors: dict[str, torch.Tensor], source: FlowConfig,
                       target: FlowConfig) -> dict[str, torch.Tensor]:
    """A flow's tensors for `target`: as they are, or, from a flow without `depth_lift` to one with it, every
    block's lift weight widened with zero columns for the depth channels (`models.flow.widen_lift_weight`).

    Every other tensor must already fit (the strict load checks it); a `depth_lift` source for a target without
    it raises, since dropping trained columns would change the model.
    """
    if source.depth_lift == target.depth_lift:
        return tensors
    if source.depth_lift:
        raise InputError("init_weights: the pipeline's flow lifts depth (depth_lift) but this run's flow does not; "
                         'set "depth_lift": true in model_config')
    out = dict(tensors)
    for name, weight in tensors.items():
        if name.startswith("blocks.") and name.endswith(".lift.weight"):
            out[name] = widen_lift_weight(weight, target)
    logger.info("init_weights: depth_lift flow from a flow without it; the depth columns of every block's lift "
                "start at zero")
    return out


def widen_shape_decoder(tensors: dict[str, torch.Tensor], source: ShapeVAEConfig,
                        target: ShapeVAEConfig) -> dict[str, torch.Tensor]:
    """A shape VAE's tensors for `target`: as they are, or, from an `"edges"` decoder to a `"corners"` one, the
    output layer widened so that the run starts at the trained decoder's surface (`models.shape_vae.widen_corner_head`).
    The other way round raises: dropping the trained corner rows would change the model."""
    if source.decoder_target == target.decoder_target:
        return tensors
    if source.decoder_target == "corners":
        raise InputError('init_weights: the pipeline\'s shape VAE decodes "corners" but this run\'s decodes '
                         f'{target.decoder_target!r}; set "decoder_target": "corners" in model_config')
    logger.info('init_weights: "corners" shape VAE from an "edges" one; the corner and open rows of the output '
                "layer start at zero (every voxel open)")
    return widen_corner_head(tensors, target)


def load_stage_vaes(fc: FlowTrainConfig, device: torch.device) -> dict[str, nn.Module]:
    """The frozen VAEs a flow run of stage `fc.stage` encodes with: its own, plus the shape VAE for stage 3."""
    vaes = {STAGE_VAE[fc.stage]: load_frozen_vae(STAGE_VAE[fc.stage], fc.vae_checkpoint, fc.vae_config,
                                                 fc.vae_weights, device)}
    if fc.stage == "texture":
        vaes["shape_vae"] = load_frozen_vae("shape_vae", fc.shape_vae_checkpoint, fc.shape_vae_config,
                                            fc.vae_weights, device)
    return vaes


def build_conditioned_flow(config: TrainConfig, device: torch.device) -> tuple[ConditionedFlow, Callable, Any]:
    """The trainable module, its objective and its config for a `"model": "flow"` run (VAEs loaded frozen)."""
    fc = config.flow
    flow = config_from_dict(FlowConfig, config.model_config, where="flow model_config")
    model_config = ConditionedFlowConfig(stage=fc.stage, encoder=fc.encoder, flow=flow, fov_head=fc.fov_head,
                                         depth_head=fc.depth_head)
    vaes = load_stage_vaes(fc, device)
    check_stage(model_config, vaes, config)
    model = ConditionedFlow(model_config, train_encoder=fc.train_encoder, train_flow=fc.train_flow)
    if fc.encoder_checkpoint:
        _load_encoder(model.encoder, fc.encoder_checkpoint)
    if fc.lift_depth_head_fraction > 0:
        if not is_component_folder(fc.lift_depth_head):
            raise InputError(f"lift_depth_head {fc.lift_depth_head}: not a component folder (config.json + "
                             "model.safetensors), e.g. pixal3d/weights/default/depth_head")
        head = load_component(fc.lift_depth_head, "depth_head").to(device).requires_grad_(False).eval()
        model.set_lift_head(head, fc.lift_depth_head_fraction)
    return model.to(device), make_flow_objective(fc, vaes), model_config


def check_stage(model: ConditionedFlowConfig, vaes: dict[str, nn.Module], config: TrainConfig) -> None:
    """Raise `InputError` unless the flow, the VAEs, the encoder and the data sizes chain."""
    flow, data, stage = model.flow, config.data, model.stage
    vae = vaes[STAGE_VAE[stage]].config
    pairs = [("flow.feature_channels", flow.feature_channels, "encoder.channels", model.encoder.channels),
             ("flow.in_channels", flow.in_channels, f"{STAGE_VAE[stage]}.latent_channels", vae.latent_channels)]
    if data.kind == "synthetic":
        raise InputError('flow runs need images: use data kind "procedural" or "shards", not "synthetic"')
    if stage == "structure":
        pairs += [("flow.tokens", flow.tokens, "dense", "dense"),
                  ("flow.resolution", flow.resolution, "structure_vae.latent_resolution", vae.latent_resolution),
                  ("structure_vae.resolution", vae.resolution, "data.coarse_resolution", data.coarse_resolution)]
    else:
        pairs += [("flow.tokens", flow.tokens, "sparse", "sparse"),
                  ("flow.resolution", flow.resolution, f"{STAGE_VAE[stage]}.token_resolution", vae.token_resolution),
                  (f"{STAGE_VAE[stage]}.resolution", vae.resolution, "data.resolution", data.resolution),
                  ("flow.cond_channels", flow.cond_channels, "shape latent channels",
                   vaes["shape_vae"].config.latent_channels if stage == "texture" else 0)]
        if stage == "texture":
            shape_vae = vaes["shape_vae"].config
            pairs += [("texture_vae.token_resolution", vae.token_resolution, "shape_vae.token_resolution",
                       shape_vae.token_resolution),
                      ("shape_vae.resolution", shape_vae.resolution, "data.resolution", data.resolution)]
    if model.depth_head is not None:
        pairs.append(("depth_head.feature_channels", model.depth_head.feature_channels, "encoder.channels",
                      model.encoder.channels))
    if model.fov_head is not None:
        pairs += [("fov_head.feature_channels", model.fov_head.feature_channels, "encoder.channels",
                   model.encoder.channels),
                  ("fov_head.tokens", model.fov_head.tokens, "encoder.global_grid^2 + 1",
                   model.encoder.global_grid ** 2 + 1)]
    bad = [f"{a} = {va} but {b} = {vb}" for a, va, b, vb in pairs if va != vb]
    if bad:
        raise InputError(f"flow run ({stage}) does not chain: " + "; ".join(bad))


# ------------------------------------------------------------------------------------------------ export
def flow_run_components(checkpoint: str | Path, group: str = "ema") -> dict[str, nn.Module]:
    """The trained components of a flow run, as pipeline modules with their weights (CPU, eval mode).

    Returns:
        `{"encoder": ImageEncoder, "<stage>_flow": FlowTransformer}` plus `"fov_head"` / `"depth_head"` when the
        run trained one;
        pass them to `Pixal3DPipeline(...)` or `pixal3d.weights.save_component` each.
    """
    folder = latest_checkpoint(checkpoint) or Path(checkpoint)
    tensors, meta = load_checkpoint(folder)
    if meta.get("config", {}).get("model") != "flow" or group not in tensors:
        raise InputError(f"{folder} is not a flow run checkpoint with {group!r} weights")
    cfg = config_from_dict(ConditionedFlowConfig, meta["model_config"], where=f"{folder} model_config")
    modules: dict[str, nn.Module] = {"encoder": ImageEncoder(_no_imagenet(cfg.encoder)),
                                     f"{cfg.stage}_flow": FlowTransformer(cfg.flow)}
    if cfg.fov_head is not None:
        modules["fov_head"] = FovHead(cfg.fov_head)
    if cfg.depth_head is not None:
        modules["depth_head"] = DepthHead(cfg.depth_head)
    for name, module in modules.items():
        prefix = "flow." if name.endswith("_flow") else f"{name}."
        part = {k.removeprefix(prefix): v for k, v in tensors[group].items() if k.startswith(prefix)}
        check_tensors(module.state_dict(), part, f"checkpoint {folder} ({group}, {prefix}*)")
        module.load_state_dict(part, strict=True)
        module.eval()
    return modules


def _no_imagenet(config: EncoderConfig) -> EncoderConfig:
    """The same encoder without reading the ImageNet file (the checkpoint's weights replace them)."""
    return config_from_dict(EncoderConfig, config_to_dict(config) | {"pretrained": False})
