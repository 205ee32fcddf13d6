"""One held-out asset through `pixal3d eval` (DESIGN section 10): views -> pipeline -> metrics in the volume frame.

For each asset and view, `draw_view` renders a condition image with a known random camera through the training
sample path (`pixal3d.data.samples.make_sample`: centred bounding box, the same preprocessing as user images,
the asset aligned into the crop camera's volume frame) and keeps views whose crop FoV lies in
`EvalOptions.fov_range`. The ground truth is that aligned asset; the prediction is the pipeline's `Asset`, which
lives in the volume frame of the camera the pipeline used. No pose search: both are compared where they stand.

FoV modes: "true" passes the crop's FoV to the pipeline, "estimated" lets it estimate one (FoV head, else its
default). Every render of the prediction and of the ground truth uses the *same* camera and lighting: the true
input camera for the input view (so a wrong FoV estimate shows up in the input-view scores), fixed orbit cameras
for novel views, `default_lighting()` throughout. docs/evaluation.md lists every metric.

Variants (`EvalOptions.variants`): "full" is the pipeline call, once per FoV mode (the run's key is the mode); each
oracle variant of `pixal3d.eval.oracles` replaces part of the cascade by the ground truth and runs once, with the
true FoV (its key is its name). Every run is scored by the same `score_asset`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import trimesh

from pixal3d.asset import Asset, preview_cameras
from pixal3d.bench import peak_memory_mb, reset_peak_memory
from pixal3d.camera import Camera
from pixal3d.data.samples import Sample, coarse_coords, make_sample, view_generator
from pixal3d.errors import InputError
from pixal3d.eval import metrics as M
from pixal3d.eval.oracles import (
    VARIANTS,
    OracleTruth,
    Variant,
    check_variants,
    oracle_truth,
    run_oracle,
    structure_metrics,
)
from pixal3d.eval.topology import topology_metrics
from pixal3d.geometry.dual_grid import mesh_to_voxels
from pixal3d.models.depth_head import depth_metrics
from pixal3d.render import (
    Material,
    RenderMesh,
    RenderOutput,
    default_lighting,
    mesh_from_trimesh,
    render_mesh,
)
from pixal3d.stages import EmptyStructureError

if TYPE_CHECKING:
    from pixal3d.pipeline import Pixal3DPipeline

logger = logging.getLogger(__name__)

FovMode = Literal["true", "estimated"]
FSCORE_THRESHOLDS = (0.01, 0.02, 0.05)
"""F-score distance thresholds, volume units (the cube's side is 1)."""
PBR_LEVELS = 8
"""Quantisation levels of the prediction's per-vertex metallic / roughness for rendering (one material each)."""


@dataclass
class EvalOptions:
    """What `pixal3d eval` measures and how (defaults: DESIGN section 10)."""

    views: int = 4
    """Condition views per asset, each with its own random camera."""
    samples: int = 100_000
    """Surface samples per mesh for Chamfer-L1 and F-score."""
    image_size: int = 256
    """Side of the condition image and of every metric render, pixels (>= 11 for SSIM)."""
    fov_modes: tuple[FovMode, ...] = ("true", "estimated")
    """Pipeline runs per view: with the true crop FoV and/or with the pipeline's own estimate."""
    fov_range: tuple[float, float] = (math.radians(20.0), math.radians(60.0))
    """Accepted crop FoV of a condition view, radians; views outside are re-drawn."""
    iou_resolution: int = 64
    """Grid of the volume IoU (a `mesh_to_voxels` resolution)."""
    seed: int = 0
    """Seed of the views (with the asset id) and of the pipeline's sampling noise."""
    max_fov_draws: int = 64
    """Views drawn per condition view before giving up on the FoV range."""
    silhouette: bool = True
    """Run the pipeline with the silhouette enforced (`Pixal3DPipeline(silhouette=...)`); False for ablations."""
    image_texels: bool = True
    """Run the pipeline with the input pixels on the visible surface (`image_texels=...`); False for ablations."""
    depth_source: Literal["head", "render"] = "head"
    """The input view's depth map that the pipeline uses: the depth head's ("head", what users get) or the ground
    truth's rendered depth ("render": measures what the head's error costs the depth lift and the silhouette rule;
    the depth-head metrics are then left out)."""
    variants: tuple[Variant, ...] = ("full",)
    """What makes the scored asset: "full" (the pipeline) and/or oracle variants (`pixal3d.eval.oracles.VARIANTS`)."""

    def __post_init__(self) -> None:
        check_variants(tuple(self.variants))
        if self.depth_source not in ("head", "render"):
            raise InputError(f'depth_source must be "head" or "render", got {self.depth_source!r}')

    def runs(self) -> list[tuple[str, Variant, FovMode]]:
        """`(key, variant, FoV mode)` of every run of a view, in `VARIANTS` order: "full" once per FoV mode (key =
        the mode, as in reports without variants), each oracle variant once with the true FoV (key = its name)."""
        runs: list[tuple[str, Variant, FovMode]] = []
        for variant in (v for v in VARIANTS if v in self.variants):
            if variant == "full":
                runs += [(mode, variant, mode) for mode in self.fov_modes]
            else:
                runs.append((variant, variant, "true"))
        return runs

    def run_keys(self) -> list[str]:
        """The keys of `runs()`: the columns of the report and the keys of `aggregate` in metrics.json."""
        return [key for key, _, _ in self.runs()]


@dataclass
class HeldOutAsset:
    """An asset to evaluate: `scene` in any frame and units (+y up); `source` says where it came from."""

    asset_id: str
    scene: trimesh.Scene | trimesh.Trimesh
    source: str


@dataclass
class GroundTruth:
    """The ground truth of one condition view, in its volume frame (computed once, shared by the FoV modes)."""

    sample: Sample
    points: torch.Tensor
    """`[samples, 3] float32` surface samples."""
    occupancy: torch.Tensor
    """`[R, R, R] bool` solid occupancy at `iou_resolution`."""
    input_render: RenderOutput
    novel_renders: list[RenderOutput]
    coarse: torch.Tensor | None = None
    """`[M, 3] int32` true coarse occupancy at the structure VAE's resolution (None when that does not divide
    `iou_resolution` and no oracle truth was made)."""
    oracle: OracleTruth | None = None
    """The fine ground truth at the pipeline's `R_hr`, made only when an oracle variant runs."""


@dataclass
class ViewResult:
    """Metrics of one run (view x run key); `None` marks an undefined value. `images` for the report."""

    view: int
    key: str
    metrics: dict[str, float | str | None]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    """"input", "prediction", "ground_truth", "error": `[S, S, 3] uint8`."""


# ------------------------------------------------------------------------------------------------ assets
def procedural_assets(start: int, end: int) -> Iterator[HeldOutAsset]:
    """Procedural objects of seeds `start .. end - 1` (`pixal3d.data.procedural.generate`)."""
    from pixal3d.data.procedural import generate

    if not 0 <= start < end:
        raise InputError(f"procedural seed range must be START:END with 0 <= START < END, got {start}:{end}")
    for seed in range(start, end):
        yield HeldOutAsset(f"proc-{seed:08d}", generate(seed).scene, f"procedural seed {seed}")


def folder_assets(folder: str | Path) -> Iterator[HeldOutAsset]:
    """Every GLB / GLTF / OBJ file under `folder`, loaded and normalised by `pixal3d.data.ingest.load_asset`.

    A file that does not load (corrupt, missing texture, no faces) is skipped with a logged warning naming the
    reason, so one bad file never stops an evaluation run; a folder where nothing loads raises `InputError`.
    """
    from pixal3d.data.ingest import asset_id_of, find_meshes, load_asset

    root = Path(folder)
    paths = find_meshes(root)
    if not paths:
        raise InputError(f"{root}: no .glb/.gltf/.obj files found")
    loaded = 0
    for path in paths:
        try:
            scene = load_asset(path)
        except InputError as err:
            logger.warning("skipping %s: %s", path, err)
            continue
        loaded += 1
        yield HeldOutAsset(asset_id_of(path, root), scene, str(path))
    if not loaded:
        raise InputError(f"{root}: none of the {len(paths)} mesh files loaded (see the warnings above)")


# ------------------------------------------------------------------------------------------------ ground truth
def draw_view(held: HeldOutAsset, view: int, options: EvalOptions, device: torch.device | str = "cpu") -> Sample:
    """A condition view whose crop FoV lies in `options.fov_range` (`make_sample` draws 10-70 degrees).

    The generator comes from `(seed, asset_id, view)`, so the views are the same on every run and machine; the
    draws rejected for their FoV are added to `Sample.redraws`.
    """
    generator = view_generator(held.asset_id, view, options.seed)
    lo, hi = options.fov_range
    redraws = 0
    for _ in range(options.max_fov_draws):
        sample = make_sample(held.scene, generator, image_size=options.image_size,
                             resolution=options.iou_resolution, coarse=options.iou_resolution,
                             asset_id=held.asset_id, view=view, device=device)
        if lo <= sample.fov <= hi:
            return replace(sample, redraws=redraws + sample.redraws)
        redraws += sample.redraws + 1
    raise InputError(f"{held.asset_id} view {view}: no view with a FoV in [{math.degrees(lo):.0f}, "
                     f"{math.degrees(hi):.0f}] degrees after {options.max_fov_draws} draws")


def novel_cameras(size: int) -> list[Camera]:
    """Right, back and left orbit cameras around the volume cube (`preview_cameras` without the front one)."""
    return preview_cameras(size)[1:]


def ground_truth(held: HeldOutAsset, sample: Sample, options: EvalOptions, device: torch.device | str) -> GroundTruth:
    """Surface samples, solid occupancy and renders of the asset aligned into the sample's volume frame."""
    aligned = held.scene.copy()
    aligned.apply_transform(sample.to_volume.numpy())
    mesh = mesh_from_trimesh(aligned, device=device)
    generator = torch.Generator().manual_seed(options.seed)
    points, _ = M.sample_surface(mesh.vertices.cpu(), mesh.faces.cpu(), options.samples, generator)
    camera = sample.camera.with_size(options.image_size)
    lighting = default_lighting()
    return GroundTruth(
        sample=sample,
        points=points,
        occupancy=M.solid_occupancy(M.occupancy_grid(sample.voxels.coords.cpu(), options.iou_resolution)),
        input_render=render_mesh(mesh, camera, lighting),
        novel_renders=[render_mesh(mesh, c, lighting) for c in novel_cameras(options.image_size)],
    )


def with_structure_truth(gt: GroundTruth, held: HeldOutAsset, pipe: Pixal3DPipeline,
                         options: EvalOptions) -> GroundTruth:
    """Add the true coarse occupancy at the structure VAE's resolution and, when an oracle variant runs, the
    oracle ground truth (`oracles.oracle_truth`, whose coarse occupancy is then the one used)."""
    r = pipe.structure_vae.config.resolution
    if any(variant != "full" for variant in options.variants):
        truth = oracle_truth(held.scene, gt.sample, pipe)
        return replace(gt, coarse=truth.coarse, oracle=truth)
    if options.iou_resolution % r:
        return gt
    return replace(gt, coarse=coarse_coords(gt.sample.voxels.coords, options.iou_resolution, r))


# ------------------------------------------------------------------------------------------------ prediction
def prediction_render_mesh(mesh: trimesh.Trimesh, device: torch.device | str = "cpu") -> RenderMesh:
    """The pipeline's dual-grid mesh as a `RenderMesh`: vertex colours = base colour, metallic / roughness from
    `vertex_attributes["pbr"]` averaged per face and quantised to `PBR_LEVELS` levels (one material per level
    pair; the renderer takes metallic and roughness per material)."""
    render = mesh_from_trimesh(mesh, device=device)
    pbr = mesh.vertex_attributes.get("pbr")
    if pbr is None or len(render.faces) != len(mesh.faces):
        return render
    face_mr = torch.as_tensor(np.asarray(pbr)[:, 3:5], dtype=torch.float32)[torch.as_tensor(mesh.faces)].mean(1)
    levels = (face_mr.clamp(0, 1) * (PBR_LEVELS - 1)).round().long()  # (F, 2) metallic, roughness
    keys, inverse = torch.unique(levels[:, 0] * PBR_LEVELS + levels[:, 1], return_inverse=True)
    materials = [Material(metallic_factor=int(k) // PBR_LEVELS / (PBR_LEVELS - 1),
                          roughness_factor=int(k) % PBR_LEVELS / (PBR_LEVELS - 1)) for k in keys]
    return replace(render, materials=materials, face_materials=inverse.to(render.faces.device))


def run_pipeline(pipe: Pixal3DPipeline, sample: Sample, mode: FovMode, options: EvalOptions,
                 depth: torch.Tensor | None = None) -> tuple[Asset, float]:
    """One pipeline call on the sample's image (with `depth` instead of the depth head's map when given); returns
    the asset and the peak memory of the call (MB)."""
    reset_peak_memory(pipe.device)
    fov = sample.fov if mode == "true" else None
    asset = pipe(sample.image.numpy(), fov=fov, seed=options.seed, silhouette=options.silhouette,
                 image_texels=options.image_texels, depth=depth)
    return asset, peak_memory_mb(pipe.device)


def predict(pipe: Pixal3DPipeline, gt: GroundTruth, variant: Variant, mode: FovMode,
            options: EvalOptions) -> tuple[Asset, float, dict[str, float]]:
    """The asset of one run: the pipeline ("full", with the options' switches) or an oracle variant (the raw
    cascade pieces, no silhouette or image-texel step); with the peak memory (MB) and the metrics only the
    variant can give (`oracles.OracleResult.metrics`)."""
    if variant == "full":
        depth = gt.input_render.depth.cpu().float() if options.depth_source == "render" else None
        asset, peak = run_pipeline(pipe, gt.sample, mode, options, depth)
        return asset, peak, {}
    if gt.oracle is None:
        raise ValueError(f"variant {variant!r} needs the oracle ground truth (with_structure_truth)")
    reset_peak_memory(pipe.device)
    result = run_oracle(pipe, variant, gt.sample, gt.oracle, options.seed)
    return result.asset, peak_memory_mb(pipe.device), result.metrics


def _rgb(render: RenderOutput) -> torch.Tensor:
    return render.rgba[..., :3].clamp(0, 1).cpu()


def appearance_metrics(pred: RenderMesh, gt: GroundTruth, size: int) -> tuple[dict[str, float], list[RenderOutput]]:
    """Silhouette IoU, input / novel-view PSNR and SSIM, base-colour PSNR and error; also the prediction's renders."""
    lighting = default_lighting()
    cams = [gt.sample.camera.with_size(size), *novel_cameras(size)]
    renders = [render_mesh(pred, c, lighting) for c in cams]
    gt_renders = [gt.input_render, *gt.novel_renders]
    ours, truth = renders[0], gt.input_render
    both = ((ours.alpha > 0.5) & (truth.alpha > 0.5)).cpu()
    novel_psnr = [float(M.psnr(_rgb(r), _rgb(t))) for r, t in zip(renders[1:], gt_renders[1:], strict=True)]
    novel_ssim = [float(M.ssim(_rgb(r), _rgb(t))) for r, t in zip(renders[1:], gt_renders[1:], strict=True)]
    values = {
        "silhouette_iou": float(M.silhouette_iou(ours.alpha.cpu(), truth.alpha.cpu())),
        "input_psnr": float(M.psnr(_rgb(ours), _rgb(truth))),
        "input_ssim": float(M.ssim(_rgb(ours), _rgb(truth))),
        "novel_psnr": float(np.mean(novel_psnr)),
        "novel_ssim": float(np.mean(novel_ssim)),
        "base_color_psnr": float(M.psnr(ours.base_color.cpu(), truth.base_color.cpu(), both)),
        "base_color_error": float(M.mean_abs_error(ours.base_color.cpu(), truth.base_color.cpu(), both)),
    }
    return values, renders


def geometry_metrics(mesh: trimesh.Trimesh, gt: GroundTruth, options: EvalOptions) -> dict[str, float]:
    """Chamfer-L1, F-scores and volume IoU of the predicted mesh against the ground truth."""
    generator = torch.Generator().manual_seed(options.seed + 1)
    points, _ = M.sample_surface(torch.as_tensor(mesh.vertices, dtype=torch.float32),
                                 torch.as_tensor(mesh.faces, dtype=torch.int64), options.samples, generator)
    r = options.iou_resolution
    occupancy = M.occupancy_grid(mesh_to_voxels(mesh, r, with_attributes=False).coords.cpu(), r)
    values = {"chamfer_l1": float(M.chamfer_l1(points, gt.points))}
    for t in FSCORE_THRESHOLDS:
        values[f"fscore@{t:g}"] = float(M.fscore(points, gt.points, t))
    values[f"volume_iou_{r}"] = float(M.volume_iou(occupancy, gt.occupancy))
    return values


def depth_head_metrics(asset: Asset, gt: GroundTruth) -> dict[str, float]:
    """AbsRel and delta < 1.25 of the depth head's map against the ground truth's rendered depth at the input view.

    The map (`S/4`) is resized bilinearly to the render's side and compared where the ground truth covers the pixel.
    """
    truth = gt.input_render.depth.cpu().float()
    covered = (gt.input_render.alpha.cpu() > 0.5) & (truth > 0)
    pred = torch.nn.functional.interpolate(asset.depth[None, None].float(), size=truth.shape, mode="bilinear",
                                           align_corners=False)[0, 0]
    return depth_metrics(pred, truth, covered)


def error_map(a: torch.Tensor, b: torch.Tensor, gain: float = 4.0) -> np.ndarray:
    """`[S, S, 3] uint8` heat map (black -> red -> yellow -> white) of the mean absolute RGB difference x `gain`."""
    e = ((a - b).abs().mean(-1) * gain).clamp(0, 1).numpy()
    heat = np.stack([np.clip(3 * e, 0, 1), np.clip(3 * e - 1, 0, 1), np.clip(3 * e - 2, 0, 1)], axis=-1)
    return (heat * 255).round().astype(np.uint8)


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def evaluate_run(pipe: Pixal3DPipeline, gt: GroundTruth, key: str, variant: Variant, mode: FovMode,
                 options: EvalOptions) -> ViewResult:
    """Make one run's asset (`predict`) and score it (module docstring); `key` names the run in the report."""
    sample = gt.sample
    base = {"fov_true_deg": math.degrees(sample.fov)}
    try:
        asset, peak, extra = predict(pipe, gt, variant, mode, options)
    except EmptyStructureError as err:
        logger.warning("%s view %d (%s): no voxels: %s", sample.asset_id, sample.view, key, err)
        return ViewResult(sample.view, key, {**base, "failure": str(err)})
    values: dict[str, float | str | None] = {
        **base,
        "fov_used_deg": math.degrees(asset.camera.fov),
        "fov_source": asset.fov_source,
        "fov_error_deg": M.fov_error_degrees(asset.camera.fov, sample.fov),
        "faces": len(asset.mesh.faces),
        "fine_voxels": len(asset.voxels),
    }
    if asset.depth is not None and options.depth_source == "head":
        values.update(depth_head_metrics(asset, gt))
    images: dict[str, np.ndarray] = {}
    if len(asset.mesh.faces) == 0:
        values["failure"] = "the predicted mesh has no faces"
    else:
        start = time.perf_counter()
        scores, input_render = score_asset(asset, gt, pipe.structure_vae.config.resolution, options)
        values.update({**scores, **extra})
        values["time_metrics_s"] = time.perf_counter() - start
        ours, truth = _rgb(input_render), _rgb(gt.input_render)
        images = {"input": sample.image[..., :3].numpy(), "prediction": _to_uint8(ours),
                  "ground_truth": _to_uint8(truth), "error": error_map(ours, truth)}
    values.update({f"time_{k}_s": v for k, v in asset.timings.items()})
    values["time_pipeline_s"] = sum(asset.timings.values())
    values["peak_memory_mb"] = peak
    return ViewResult(sample.view, key, {k: _finite_or_none(v) for k, v in values.items()}, images)


def score_asset(asset: Asset, gt: GroundTruth, structure_resolution: int,
                options: EvalOptions) -> tuple[dict[str, float | None], RenderOutput]:
    """Every metric of one asset (with faces) against the ground truth: geometry, topology, structure (at
    `structure_resolution`), renders; with the asset's input-view render (for the report's images)."""
    values: dict[str, float | None] = {**geometry_metrics(asset.mesh, gt, options), **topology_metrics(asset)}
    if gt.coarse is not None:
        values.update(structure_metrics(asset.voxels, gt.coarse, structure_resolution))
    pred = prediction_render_mesh(asset.mesh, device=gt.input_render.rgba.device)
    appearance, renders = appearance_metrics(pred, gt, options.image_size)
    values.update(appearance)
    return values, renders[0]


def _finite_or_none(value: object) -> object:
    """JSON has no NaN / Inf: an undefined or infinite float becomes None (docs/evaluation.md)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_asset(pipe: Pixal3DPipeline, held: HeldOutAsset, options: EvalOptions) -> dict[str, object]:
    """Every view and run (`EvalOptions.runs`: FoV modes of the full cascade, oracle variants) of one asset.

    Returns:
        `{"asset_id", "source", "views": [{"view", "fov_true_deg", "redraws", "modes": {key: metrics}}],
        "images": {key: {name: [S, S, 3] uint8}} (first view)}`; a key is a FoV mode or a variant's name.
    """
    device = pipe.device
    views, images = [], {}
    for view in range(options.views):
        sample = draw_view(held, view, options, device)
        gt = with_structure_truth(ground_truth(held, sample, options, device), held, pipe, options)
        modes = {}
        for key, variant, mode in options.runs():
            result = evaluate_run(pipe, gt, key, variant, mode, options)
            modes[key] = result.metrics
            if view == 0:
                images[key] = result.images
        views.append({"view": view, "fov_true_deg": math.degrees(sample.fov), "redraws": sample.redraws,
                      "modes": modes})
        logger.info("%s view %d: %s", held.asset_id, view, "; ".join(
            f"{k}: F@0.05 {_fmt(v.get('fscore@0.05'))}, CD {_fmt(v.get('chamfer_l1'))}, "
            f"components {_fmt(v.get('components'))}" for k, v in modes.items()))
    return {"asset_id": held.asset_id, "source": held.source, "views": views, "images": images}


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
