"""View-aligned training samples (DESIGN sections 2 and 7): asset -> render -> preprocess -> align -> voxelise.

A sample is exactly what inference sees. The asset (any frame, y up) is rendered by a camera aimed so that its
2D bounding box is centred (`pixal3d.render.sample_view`, FoV uniform in 10-70 degrees, random direction); the
RGBA render goes through the *same* `preprocess_image` as user images (background "none": the render has
alpha); the crop's FoV is `fov_of_crop(fov, S, crop_side)`; and the asset is moved into the canonical volume
frame of that crop camera (`view_alignment`): camera at `(0, 0, d)`, `d = 0.5 / tan(fov / 2)`, looking down
`-z`, so that every asset point lands on the pixel of the sample image where the render showed it.

Aim depth (the world depth that becomes the volume origin, hence `scale = d / aim_depth`): the middle of the
asset's depth range along the optical axis, which centres the asset in `z`. Scaling about the camera centre
keeps every pixel, so when the middle does not fit the cube the scale is clamped into the interval where the
asset fits (with a half-voxel margin); a view with no such scale (a wide FoV on a deep asset) is re-drawn and
counted in `Sample.redraws`.

The fine voxels (`mesh_to_voxels` at `R_hr`) and the coarse occupancy (fine coords integer-divided by
`R_hr / coarse`) are in that volume frame. Images are `[S, S, 4] uint8`, RGB composited on black, A the mask.
Drawing, rendering and aligning views is `pixal3d.data.align`; this module voxelises them into samples.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
import trimesh

from pixal3d.camera import Camera
from pixal3d.data.align import MAX_REDRAWS, AlignedView, align_view
from pixal3d.errors import InputError
from pixal3d.geometry.dual_grid import BadItemError, check_resolution, meshes_to_voxels
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.render import RenderMesh, mesh_from_trimesh
from pixal3d.timing import timed
from pixal3d.transfer import to_device, to_host

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Sample:
    """One view-aligned training sample.

    Attributes:
        image: `[S, S, 4] uint8` preprocessed RGBA (RGB premultiplied on black, A the object mask).
        fov: horizontal FoV of the crop camera, radians.
        distance: camera distance `d = 0.5 / tan(fov / 2)` from the volume origin.
        scale: asset-frame length -> volume length.
        voxels: fine `SparseVoxels` at `R_hr`, volume frame.
        coarse: `[M, 3] int32` occupied coarse voxels (unique, sorted by key) at `coarse_resolution`.
        coarse_resolution: the coarse grid's `R` (64 by default).
        to_volume: `[4, 4] float64` asset frame -> volume frame (a similarity).
        asset_id: the asset's id, e.g. "proc-00000012" or a mesh file's stem.
        view: the view index within the asset.
        redraws: views drawn and rejected (asset left the cube) before this one.
        center_offset: `(du, dv)` source pixels between the crop centre and the principal point; the residual of
            the aim (sub-pixel: the crop is centred on an integer-pixel bounding box).
        stream_index: position in an on-the-fly stream (`ProceduralStream`), -1 otherwise.
    """

    image: torch.Tensor
    fov: float
    distance: float
    scale: float
    voxels: SparseVoxels
    coarse: torch.Tensor
    coarse_resolution: int
    to_volume: torch.Tensor
    asset_id: str
    view: int
    redraws: int = 0
    center_offset: tuple[float, float] = (0.0, 0.0)
    stream_index: int = -1

    @property
    def camera(self) -> Camera:
        """The inference camera of this sample: `Camera(fov, size=S)` at the default distance."""
        return Camera(fov=self.fov, size=int(self.image.shape[0]))

    @property
    def sample_id(self) -> str:
        """`"<asset_id>/<view>"`, unique within a data set."""
        return f"{self.asset_id}/{self.view}"


STEPS = ("generate", "render_mesh", "view", "render", "preprocess", "align", "voxelise", "attributes", "coarse")
"""Step names of `make_sample(..., timings=...)` (plus "generate", timed by callers that generate the asset)."""


def view_generator(asset_id: str, view: int, seed: int = 0) -> torch.Generator:
    """A CPU generator seeded from `(asset_id, view, seed)` by SHA-256: stable across runs, processes and ranks."""
    digest = hashlib.sha256(f"{seed}:{asset_id}:{view}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def coarse_coords(coords: torch.Tensor, resolution: int, coarse: int) -> torch.Tensor:
    """Occupied coarse voxels `[M, 3] int32` of fine coords `[N, 3]` at `resolution`: integer division, unique."""
    return coarse_occupancy([coords], resolution, coarse)[0]


def coarse_occupancy(coords: list[torch.Tensor], resolution: int, coarse: int) -> list[torch.Tensor]:
    """`coarse_coords` of several fine coordinate sets in one pass (one `unique`, keys carrying the set, one host
    sync): `[M_i, 3] int32` per set, sorted by key, each with its own storage, on the sets' device."""
    if resolution % coarse:
        raise InputError(f"coarse resolution {coarse} must divide the fine resolution {resolution}")
    if not coords:
        return []
    c3, device = coarse**3, coords[0].device
    sizes = [int(c.shape[0]) for c in coords]
    owner = torch.repeat_interleave(torch.arange(len(coords), device=device), to_device(sizes, device),
                                    output_size=sum(sizes))
    c = torch.cat(coords).long() // (resolution // coarse)
    keys = torch.unique(owner * c3 + (c[:, 0] * coarse + c[:, 1]) * coarse + c[:, 2])
    bounds = torch.searchsorted(keys, torch.arange(len(coords) + 1, device=device) * c3).tolist()
    keys = keys % c3
    occupied = torch.stack([keys // (coarse * coarse), (keys // coarse) % coarse, keys % coarse], dim=1)
    occupied = occupied.to(torch.int32)
    if len(coords) == 1:
        return [occupied]
    return [occupied[a:b].clone() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@dataclass(eq=False)
class AssetViews:
    """The aligned views of one asset, ready to be voxelised (`voxelise_assets`).

    Attributes:
        scene: the asset, as given to `make_sample`.
        views: its aligned views (`align_view`).
        asset_id: stored in the samples.
        material_cache: a dict kept across calls on this asset and device (`mesh_to_voxels`'s `material_cache`),
            or None (read once per call).
    """

    scene: trimesh.Scene | trimesh.Trimesh
    views: list[AlignedView]
    asset_id: str = "asset"
    material_cache: dict | None = None


def voxelise_assets(
    assets: list[AssetViews],
    resolution: int = 256,
    coarse: int = 64,
    *,
    device: torch.device | str = "cpu",
    timings: dict[str, float] | None = None,
) -> list[list[Sample]]:
    """Voxelise the aligned views of several assets in one batched pass (`meshes_to_voxels`) into `Sample`s.

    All views of all assets share the voxeliser's kernel launches, their coarse occupancy is one `unique`
    (`coarse_occupancy`), and they come to the CPU in one copy per field. The samples are byte for byte those of
    one `make_sample` call per view (on the CPU; on a GPU as exact as one view's voxelisation is there).

    Returns:
        One list of samples per asset, in its views' order.

    Raises:
        BadItemError: the voxeliser refused an asset (no faces, NaN vertices); `.item` is its index in `assets`.
    """
    items, owner, caches = [], [], []
    for index, asset in enumerate(assets):
        cache = asset.material_cache if asset.material_cache is not None else {}  # its views share the tables
        items += [(asset.scene, view.to_volume.numpy()) for view in asset.views]
        owner += [index] * len(asset.views)
        caches += [cache] * len(asset.views)
    if not items:
        return [[] for _ in assets]
    attributes_before = timings.get("attributes", 0.0) if timings is not None else 0.0
    with timed(timings, "voxelise", device):
        try:
            voxels = meshes_to_voxels(items, resolution, device, material_caches=caches, timings=timings)
        except BadItemError as err:
            raise BadItemError(f"{assets[owner[err.item]].asset_id}: {err}", owner[err.item]) from err
    if timings is not None:  # attributes were timed inside the voxelisation
        timings["voxelise"] -= timings.get("attributes", 0.0) - attributes_before
    with timed(timings, "coarse", device):
        coarse_voxels = coarse_occupancy([v.coords for v in voxels], resolution, coarse)
    with timed(timings, "voxelise", device):
        coarse_voxels, *fields = to_host([coarse_voxels] + [[getattr(v, name) for v in voxels]
                                                            for name in ("coords", "vertex", "edges", "attrs")])
    samples: list[list[Sample]] = [[] for _ in assets]
    views = [view for asset in assets for view in asset.views]
    for n, (aligned, index) in enumerate(zip(views, owner, strict=True)):
        samples[index].append(Sample(
            image=aligned.image,
            fov=aligned.fov,
            distance=aligned.distance,
            scale=aligned.scale,
            voxels=SparseVoxels(*(f[n] for f in fields), resolution=resolution),
            coarse=coarse_voxels[n],
            coarse_resolution=coarse,
            to_volume=aligned.to_volume,
            asset_id=assets[index].asset_id,
            view=aligned.view,
            redraws=aligned.redraws,
            center_offset=aligned.center_offset,
        ))
    return samples


def voxelise_views(
    scene: trimesh.Scene | trimesh.Trimesh,
    views: list[AlignedView],
    resolution: int = 256,
    coarse: int = 64,
    *,
    asset_id: str = "asset",
    device: torch.device | str = "cpu",
    material_cache: dict | None = None,
    timings: dict[str, float] | None = None,
) -> list[Sample]:
    """Voxelise the aligned views of one asset in one batched pass: `voxelise_assets` of one asset."""
    return voxelise_assets([AssetViews(scene, views, asset_id, material_cache)], resolution, coarse, device=device,
                           timings=timings)[0]


def check_sample_options(resolution: int, coarse: int) -> None:
    """Raise `InputError` for a resolution not in `RESOLUTIONS` or a coarse size that does not divide it."""
    check_resolution(resolution)
    if not (isinstance(coarse, int) and coarse > 0 and resolution % coarse == 0):
        raise InputError(f"coarse must be a positive divisor of resolution {resolution}, got {coarse!r}")


def make_sample(
    scene: trimesh.Scene | trimesh.Trimesh,
    generator: torch.Generator,
    image_size: int = 512,
    resolution: int = 256,
    coarse: int = 64,
    *,
    asset_id: str = "asset",
    view: int = 0,
    device: torch.device | str = "cpu",
    render_mesh_cache: RenderMesh | None = None,
    max_redraws: int = MAX_REDRAWS,
    material_cache: dict | None = None,
    timings: dict[str, float] | None = None,
) -> Sample:
    """Render, preprocess, align and voxelise one view of an asset (module docstring).

    `align_view` then `voxelise_views`; for several views of one asset, call those (one `align_view` per view,
    one `voxelise_views` for all) to share the asset's preparation and the voxeliser's kernel launches.

    Args:
        scene: the asset (any frame and units, +y up), e.g. `generate(seed).scene` or a loaded GLB.
        generator: CPU generator for the view and lighting (`view_generator(asset_id, view)`); same state, same
            sample, byte for byte.
        image_size: `S`, the sample image side.
        resolution: `R_hr`, one of `pixal3d.geometry.dual_grid.RESOLUTIONS`.
        coarse: coarse occupancy resolution; must divide `resolution`.
        asset_id: stored in the sample.
        view: view index, stored in the sample.
        device: where rendering and voxelisation run; the sample is returned on the CPU.
        render_mesh_cache: the scene already converted by `mesh_from_trimesh` (on `device`), to skip the
            conversion when drawing several views of one asset.
        max_redraws: views drawn before `ViewDoesNotFitError`.
        material_cache: a dict kept across the views of one asset on one device, so its material tables are
            read once (`mesh_to_voxels`'s `material_cache`); None reads them per call.
        timings: when given, the seconds of each step (`STEPS`) are added to it (CUDA synchronised around each
            step, which slows the GPU path a little: profile with it, measure throughput without it).

    Returns:
        The `Sample` (CPU tensors).

    Raises:
        ViewDoesNotFitError: no view within `max_redraws` fitted the cube.
        InputError: an asset without faces, a bad size or resolution.
    """
    check_sample_options(resolution, coarse)
    with timed(timings, "render_mesh", device):
        mesh = render_mesh_cache if render_mesh_cache is not None else mesh_from_trimesh(scene, device=device)
    aligned = align_view(mesh, generator, image_size, resolution, asset_id=asset_id, view=view,
                         max_redraws=max_redraws, timings=timings)
    return voxelise_views(scene, [aligned], resolution, coarse, asset_id=asset_id, device=device,
                          material_cache=material_cache, timings=timings)[0]
