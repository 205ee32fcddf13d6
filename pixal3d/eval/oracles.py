"""Oracle variants of `pixal3d eval` (issue 15, "ceilings"): each replaces part of the cascade by the ground truth.

Scored exactly like the full cascade (`pixal3d.eval.runner.evaluate_run`), they say where quality is lost:

| variant | what makes the asset | the ceiling of |
|---|---|---|
| `gt` | the ground-truth sparse PBR voxels at `R_hr`, meshed | the representation |
| `vae-structure` | the structure VAE's encode -> decode of the true coarse occupancy; the true fine voxels under the voxels it keeps | the structure VAE (its `coarse_*` scores) |
| `vae-shape` | the shape VAE's encode -> decode of the true fine voxels; base colour looked up in the true voxels | the shape VAE |
| `vae-texture` | the true geometry with the texture VAE's encode -> decode of the true attributes | the texture VAE |
| `gt-structure` | stages 2 + 3 sampled on the true coarse structure, decoded | stages 2-3 |
| `gt-shape` | stage 3 sampled on the shape VAE's encoding of the truth (its posterior mean), decoded | stage 3 |
| `full` | the pipeline call (`runner.run_pipeline`) | |

The ground truth is the condition view's aligned asset voxelised at the pipeline's `R_hr`
(`mesh_to_voxels(scene, R_hr, transform=sample.to_volume)`, the training samples' path) and its coarse occupancy
at the structure resolution (`coarse_coords`, as training derives it), in the input camera's volume frame. Oracle
variants use the true camera (the view's crop FoV) and the stage functions of `pixal3d.stages` with the pipeline's
own sampler settings, threshold, autocast and seed; the pipeline's own call stays in one place, the runner.
They are the raw cascade pieces: the pipeline's silhouette and image-texel steps (in `Pixal3DPipeline.__call__`)
apply to "full" only. Encodings use the posterior mean.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import trimesh
from PIL import Image

from pixal3d.asset import Asset
from pixal3d.data.samples import Sample, coarse_coords
from pixal3d.errors import InputError
from pixal3d.eval import metrics as M
from pixal3d.geometry.dual_grid import RESOLUTIONS, mesh_to_voxels
from pixal3d.geometry.dual_mesh import sample_attributes, voxels_to_mesh
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.models.flow import FlowCondition
from pixal3d.stages import (
    EmptyStructureError,
    decode,
    decode_shape,
    encode_images,
    make_condition,
    predict_depth,
    sample_shape,
    sample_texture,
    select_active,
)

if TYPE_CHECKING:
    from pixal3d.pipeline import Pixal3DPipeline

Variant = Literal["gt", "vae-structure", "vae-shape", "vae-texture", "gt-structure", "gt-shape", "full"]
VARIANTS: tuple[Variant, ...] = ("gt", "vae-structure", "vae-shape", "vae-texture", "gt-structure", "gt-shape",
                                 "full")
"""Every variant, from the representation's ceiling to the full cascade (the order of the ceilings table)."""


@dataclass
class OracleTruth:
    """The ground truth an oracle variant starts from, in the input camera's volume frame."""

    fine: SparseVoxels
    """Sparse PBR voxels at the pipeline's `R_hr` (attrs set), on the CPU, key-sorted."""
    coarse: torch.Tensor
    """`[M, 3] int32` occupied coarse voxels at the structure VAE's resolution, key-sorted, on the CPU."""


@dataclass
class OracleResult:
    """An oracle's asset and the metrics only it can give (`coarse_*` of a decoded structure)."""

    asset: Asset
    metrics: dict[str, float]


def check_variants(variants: tuple[str, ...]) -> None:
    """Raise `InputError` for an empty, repeated or unknown variant list."""
    unknown = [v for v in variants if v not in VARIANTS]
    if not variants or unknown or len(set(variants)) != len(variants):
        raise InputError(f"variants must be distinct names out of {list(VARIANTS)}, got {list(variants)}")


def check_pipeline(pipe: Pixal3DPipeline, variants: tuple[str, ...]) -> None:
    """Raise `InputError` before any work when an oracle variant cannot run on this pipeline (its R_hr is not a
    resolution the voxeliser makes ground truth at)."""
    r_hr = pipe.shape_vae.config.resolution
    if any(v != "full" for v in variants) and r_hr not in RESOLUTIONS:
        raise InputError(f"oracle variants need ground-truth voxels at the pipeline's R_hr = {r_hr}, but the "
                         f"voxeliser makes only {RESOLUTIONS}; use a pipeline that decodes at one of those (for "
                         "random weights: --random-weights micro64 instead of micro)")


def oracle_truth(scene: trimesh.Scene | trimesh.Trimesh, sample: Sample, pipe: Pixal3DPipeline) -> OracleTruth:
    """Voxelise the asset into the sample's volume frame at the pipeline's `R_hr` (module docstring)."""
    check_pipeline(pipe, ("gt",))
    r_hr, r_coarse = pipe.shape_vae.config.resolution, pipe.structure_vae.config.resolution
    fine = mesh_to_voxels(scene, r_hr, pipe.device, transform=sample.to_volume.numpy()).to("cpu")
    return OracleTruth(fine=fine, coarse=coarse_coords(fine.coords, r_hr, r_coarse))


def run_oracle(pipe: Pixal3DPipeline, variant: Variant, sample: Sample, truth: OracleTruth,
               seed: int) -> OracleResult:
    """Make the asset of one oracle variant (not "full": that is the pipeline call) for one condition view.

    Raises:
        EmptyStructureError: the structure VAE or a decoder kept no voxels.
    """
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    with torch.no_grad(), _autocast(pipe.device):
        if variant == "gt":
            voxels = truth.fine
        elif variant == "vae-structure":
            voxels, metrics = _structure_vae(pipe, truth)
        elif variant == "vae-shape":
            voxels = _shape_vae(pipe, truth)
        elif variant == "vae-texture":
            voxels = _texture_vae(pipe, truth)
        elif variant in ("gt-structure", "gt-shape"):
            voxels = _stages(pipe, variant, sample, truth, seed)
        else:
            raise ValueError(f"run_oracle makes the oracle variants {list(VARIANTS[:-1])}, got {variant!r}")
    voxels = voxels.to("cpu")
    if voxels.attrs is not None:
        voxels.attrs = voxels.attrs.float()
    asset = Asset(mesh=voxels_to_mesh(voxels), voxels=voxels, camera=sample.camera, fov_source="given",
                  image=Image.fromarray(sample.image.numpy(), "RGBA"),
                  timings={"oracle": time.perf_counter() - start}, seed=seed)
    return OracleResult(asset, metrics)


# ------------------------------------------------------------------------------------------------ the variants
def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The pipeline's precision: bf16 autocast on CUDA, float32 elsewhere (`Pixal3DPipeline.__call__`)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batched(coords: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`[N, 3]` -> `[N, 4] int32 (0, i, j, k)` on `device`."""
    coords = coords.to(device=device, dtype=torch.int32)
    return torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1)


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _shape_latent(pipe: Pixal3DPipeline, truth: OracleTruth):  # -> SparseTensor at R_tok
    """The shape VAE's posterior mean of the true fine voxels (what the stage-2 flow learns to sample)."""
    vae, device = pipe.shape_vae, pipe.device
    fine = truth.fine.to(device)
    mean, _ = vae.encode(_batched(fine.coords, device), fine.vertex.to(_dtype(vae)), fine.edges)
    return mean


def _structure_vae(pipe: Pixal3DPipeline, truth: OracleTruth) -> tuple[SparseVoxels, dict[str, float]]:
    """Encode -> decode the true coarse occupancy; keep the true fine voxels under the decoded structure."""
    vae, r = pipe.structure_vae, pipe.structure_vae.config.resolution
    occupancy = torch.zeros(1, 1, r, r, r, device=pipe.device, dtype=_dtype(vae))
    c = truth.coarse.long()
    occupancy[0, 0, c[:, 0], c[:, 1], c[:, 2]] = 1.0
    mean, _ = vae.encode(occupancy)
    decoded = select_active(vae.decode(mean.to(_dtype(vae))), pipe.settings.structure_threshold)[:, 1:].cpu()
    scores = M.occupancy_scores(decoded, truth.coarse, r)
    kept = M.occupancy_grid(decoded, r)
    parent = truth.fine.coords.long() // (truth.fine.resolution // r)
    keep = kept[parent[:, 0], parent[:, 1], parent[:, 2]]
    if not bool(keep.any()):
        raise EmptyStructureError("the structure VAE's decoded occupancy covers none of the true coarse voxels")
    f = truth.fine
    voxels = SparseVoxels(f.coords[keep], f.vertex[keep], f.edges[keep], f.attrs[keep], f.resolution)
    return voxels, {f"coarse_{k}": v for k, v in scores.items()}


def _shape_vae(pipe: Pixal3DPipeline, truth: OracleTruth) -> SparseVoxels:
    """Encode -> decode the true fine geometry; attributes looked up in the true voxels at the decoded vertices."""
    voxels = decode_shape(pipe.shape_vae, _shape_latent(pipe, truth)).to("cpu")
    attrs = sample_attributes(truth.fine, voxels.positions())
    return SparseVoxels(voxels.coords, voxels.vertex, voxels.edges, attrs, voxels.resolution)


def _texture_vae(pipe: Pixal3DPipeline, truth: OracleTruth) -> SparseVoxels:
    """The true geometry with the texture VAE's encode -> decode of the true attributes."""
    vae, device = pipe.texture_vae, pipe.device
    coords = _batched(truth.fine.coords, device)
    mean, _ = vae.encode(coords, truth.fine.attrs.to(device, _dtype(vae)))
    attrs = vae.decode(mean.replace(feats=mean.feats.to(_dtype(vae))), coords)
    f = truth.fine
    return SparseVoxels(f.coords, f.vertex, f.edges, attrs.float().cpu(), f.resolution)


def condition(pipe: Pixal3DPipeline, sample: Sample) -> FlowCondition:
    """The flows' condition of the sample's image with its true FoV, as the pipeline builds it (steps 2-4): with
    `depth_lift` flows, the depth head's map rides in it (`Pixal3DPipeline.lift_depths`)."""
    _, images = pipe.preprocess([sample.image.numpy()])
    features = encode_images(pipe.encoder, images.to(pipe.device))
    cameras, _ = pipe.make_cameras(features[0], sample.fov, None)
    depth = predict_depth(pipe.depth_head, features[0], cameras[0]) if pipe.depth_head is not None else None
    return make_condition(features, cameras, pipe.lift_depths(features, cameras, depth))


def _stages(pipe: Pixal3DPipeline, variant: Variant, sample: Sample, truth: OracleTruth, seed: int) -> SparseVoxels:
    """`gt-structure`: stages 2-3 on the true coarse voxels; `gt-shape`: stage 3 on the true shape latent."""
    cond = condition(pipe, sample)
    samplers = pipe.stage_samplers(None, None)
    generator = torch.Generator().manual_seed(seed)
    progress = False
    if variant == "gt-structure":
        shape = sample_shape(pipe.shape_flow, cond, _batched(truth.coarse, pipe.device), generator,
                             samplers["shape"], progress, pipe.cuda_graphs)
    else:
        shape = _shape_latent(pipe, truth)
    texture = sample_texture(pipe.texture_flow, cond, shape, generator, samplers["texture"], progress,
                             pipe.cuda_graphs)
    return decode(pipe.shape_vae, pipe.texture_vae, shape, texture)


def structure_metrics(voxels: SparseVoxels, truth: torch.Tensor, resolution: int) -> dict[str, float]:
    """`coarse_iou`, `coarse_precision`, `coarse_recall`: the coarse voxels (at `resolution`) that the asset's
    fine voxels occupy, against the true coarse occupancy `truth [M, 3]` at that resolution."""
    if voxels.resolution % resolution:
        return {}
    occupied = coarse_coords(voxels.coords.cpu(), voxels.resolution, resolution)
    return {f"coarse_{k}": v for k, v in M.occupancy_scores(occupied, truth.cpu(), resolution).items()}

