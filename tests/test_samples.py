"""View-aligned samples (DESIGN sections 2 and 7): determinism, frames agree (silhouette IoU), margins, streams.

Sizes: S = 64 / R_hr = 64 for determinism and borders (cheap seeds: house, table, wrench, sign); S = 128 /
R_hr = 64 for the silhouette IoU on thick families (bottle, crate). Thin families (chair legs, lamp stems, wrenches) need S = 512 /
R_hr = 256 for IoU >= 0.97 (measured: 0.9697-0.9982 on seeds 0..12, see docs/benchmarks.md); that is too slow
for a unit test on 2 CPU cores.
"""

from __future__ import annotations

import math

import pytest
import torch

from pixal3d.data.align import ViewRequest, align_views, fit_scale, used_points
from pixal3d.data.dataset import ProceduralStream
from pixal3d.data.inspect import sample_sheet, voxel_silhouette
from pixal3d.data.procedural import generate
from pixal3d.data.samples import coarse_coords, make_sample, view_generator
from pixal3d.data.shard_format import sample_scalars, sample_tensors
from pixal3d.data.units import SampleOptions
from pixal3d.errors import InputError
from pixal3d.eval.metrics import silhouette_iou


def _small(seed: int, view: int = 0, size: int = 64, resolution: int = 64):
    asset_id = f"proc-{seed:08d}"
    return make_sample(generate(seed).scene, view_generator(asset_id, view), size, resolution, 16,
                       asset_id=asset_id, view=view)


def test_same_seed_gives_byte_identical_samples() -> None:
    a, b = _small(13), _small(13)
    ta, tb = sample_tensors(a, "0"), sample_tensors(b, "0")
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), key
    assert sample_scalars(a) == sample_scalars(b)
    assert view_generator("proc-00000013", 0).initial_seed() != view_generator("proc-00000013", 1).initial_seed()


@pytest.mark.parametrize("seed", [6, 15])
def test_voxels_projected_by_inference_camera_match_alpha(seed: int) -> None:
    sample = _small(seed, size=128, resolution=64)
    assert sample.image.shape == (128, 128, 4) and sample.image.dtype == torch.uint8
    assert sample.distance == pytest.approx(0.5 / math.tan(sample.fov / 2))
    assert math.radians(10) * 0.8 < sample.fov < math.radians(70)
    assert max(abs(o) for o in sample.center_offset) <= 1.0  # the crop is centred on the principal point
    coverage = voxel_silhouette(sample.voxels, sample.camera)
    assert float(silhouette_iou(sample.image[..., 3].float() / 255, coverage)) >= 0.97


@pytest.mark.parametrize("seed", [1, 8, 14])
def test_object_never_touches_border_and_fits_cube(seed: int) -> None:
    sample = _small(seed)
    alpha = sample.image[..., 3]
    assert alpha[0].max() == 0 and alpha[-1].max() == 0 and alpha[:, 0].max() == 0 and alpha[:, -1].max() == 0
    assert alpha.max() == 255
    coords = sample.voxels.coords
    assert coords.min() >= 0 and coords.max() < 64 and len(sample.voxels) > 0
    assert sample.coarse.dtype == torch.int32 and sample.coarse.max() < 16
    assert torch.equal(sample.coarse, coarse_coords(coords, 64, 16))
    assert (sample.image[..., :3] <= sample.image[..., 3:]).all()  # composited on black


def test_coarse_is_integer_division() -> None:
    coords = torch.tensor([[0, 0, 0], [3, 3, 3], [4, 0, 7], [63, 62, 61]], dtype=torch.int32)
    assert coarse_coords(coords, 64, 16).tolist() == [[0, 0, 0], [1, 0, 1], [15, 15, 15]]
    with pytest.raises(InputError):
        coarse_coords(coords, 64, 48)


def test_fit_scale_interval() -> None:
    d = 0.5 / math.tan(math.radians(20))
    cube = torch.tensor([[x, y, -d + z] for x in (-0.3, 0.3) for y in (-0.3, 0.3) for z in (-0.3, 0.3)],
                        dtype=torch.float64)
    assert fit_scale(cube, d, 0.5) == pytest.approx(1.0)  # middle of the depth range on the origin
    deep = cube.clone()
    deep[:, 2] = -d + (deep[:, 2] + d) / 0.3  # depth d +- 1: deeper than the cube allows at any scale
    assert fit_scale(deep, d, 0.5) is None


def test_sheet_has_four_tiles() -> None:
    sheet = sample_sheet(_small(14), tile=32)
    assert sheet.size == (128, 32)


def test_stream_splits_and_resumes() -> None:
    options = SampleOptions(image_size=32, resolution=64, coarse=16)
    a = ProceduralStream(options, views=2, rank=0, world_size=2)
    b = ProceduralStream(options, views=2, rank=1, world_size=2)
    assert [a.item(n) for n in range(3)] == [(0, 0), (1, 0), (2, 0)]
    assert [b.item(n) for n in range(3)] == [(0, 1), (1, 1), (2, 1)]
    first = ProceduralStream(options, views=2, seed_offset=13, limit=2)
    taken = list(first)
    assert [s.stream_index for s in taken] == [0, 1] and first.state_dict()["next_index"] == 2
    assert [s.sample_id for s in taken] == ["proc-00000013/0", "proc-00000013/1"]
    resumed = ProceduralStream(options, views=2, seed_offset=13, limit=2)
    resumed.load_state_dict({**first.state_dict(), "next_index": 1})
    again = list(resumed)
    assert [s.sample_id for s in again] == [taken[1].sample_id]
    assert torch.equal(again[0].image, taken[1].image)
    with pytest.raises(InputError):
        resumed.load_state_dict({**first.state_dict(), "views": 3})


def test_stream_in_batches_gives_the_same_samples() -> None:
    """batch=2 makes a worker's next two positions in one pass (a partial batch at the limit); same samples."""
    options = SampleOptions(image_size=32, resolution=64, coarse=16)
    one = list(ProceduralStream(options, views=2, seed_offset=13, limit=3))
    stream = ProceduralStream(options, views=2, seed_offset=13, limit=3, batch=2)
    two = list(stream)
    assert [s.stream_index for s in two] == [0, 1, 2] and stream.state_dict()["next_index"] == 3
    assert [s.sample_id for s in two] == [s.sample_id for s in one] == ["proc-00000013/0", "proc-00000013/1",
                                                                      "proc-00000014/0"]
    for a, b in zip(one, two, strict=True):
        ta, tb = sample_tensors(a, "0"), sample_tensors(b, "0")
        assert all(torch.equal(ta[k], tb[k]) for k in ta) and sample_scalars(a) == sample_scalars(b)
    with pytest.raises(InputError, match="batch"):
        ProceduralStream(options, batch=0)


def test_stream_with_loader_workers_is_in_order() -> None:
    options = SampleOptions(image_size=32, resolution=64, coarse=16)
    loader = torch.utils.data.DataLoader(ProceduralStream(options, views=1, seed_offset=13, limit=2), batch_size=None,
                                         num_workers=2, collate_fn=lambda s: s)
    assert [s.stream_index for s in loader] == [0, 1]


def test_views_rendered_in_one_pass_match_views_rendered_alone() -> None:
    from pixal3d.render import mesh_from_trimesh

    meshes = {seed: mesh_from_trimesh(generate(seed).scene) for seed in (0, 1, 3)}

    def requests() -> list[ViewRequest]:  # fresh generators: a view's draws decide it
        return [ViewRequest(mesh, view_generator(f"proc-{seed}", view), f"proc-{seed}", view, used_points(mesh))
                for seed, mesh in meshes.items() for view in (0, 1)]

    alone = align_views(requests(), 64, 64, render_batch=1)
    together = align_views(requests(), 64, 64, render_batch=4)  # passes of 4 and 2 views
    assert len(together) == 6
    for a, b in zip(alone, together, strict=True):
        assert (a.fov, a.redraws, a.center_offset) == (b.fov, b.redraws, b.center_offset)
        assert torch.equal(a.to_volume, b.to_volume)
        # The CPU's vectorised pow may round a pixel's last bit differently in a batch: at most one level.
        assert (a.image.int() - b.image.int()).abs().max() <= 1
    assert len({a.fov for a in alone}) == 6
