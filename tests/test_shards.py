"""Shards on disk (DESIGN section 7): round trip, resume without duplicates, rank split, bad samples, the CLI.

Sizes: S = 32, R_hr = 64, coarse 16; cheap procedural seeds (13 house, 14 sign, 1 table).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from pixal3d.cli import main
from pixal3d.data import samples as samples_module
from pixal3d.data import units as units_module
from pixal3d.data.dataset import ShardDataset
from pixal3d.data.procedural import generate
from pixal3d.data.samples import make_sample, view_generator
from pixal3d.data.shard_format import sample_scalars, sample_tensors
from pixal3d.data.shards import write_shards
from pixal3d.data.units import SampleOptions, WorkUnit, make_unit, make_units, procedural_units
from pixal3d.errors import InputError
from pixal3d.geometry.dual_grid import BadItemError

OPTIONS = SampleOptions(image_size=32, resolution=64, coarse=16)


def _units() -> list[WorkUnit]:
    return [procedural_units(1, 1, seed_offset=s)[0] for s in (13, 14, 1)]


def test_resume_after_interruption_gives_no_duplicates(tmp_path: Path) -> None:
    units = _units()
    first = write_shards(units[:2], tmp_path, OPTIONS)  # "interrupted" after two of three units
    assert first.units_written == 2 and first.samples_written == 2
    # A shard written but never indexed (killed between the rename and the index update) is simply redone.
    orphan = tmp_path / "shards" / "proc-00000001@0-1.safetensors"
    orphan.write_bytes(b"half-written garbage")
    second = write_shards(units, tmp_path, OPTIONS)
    assert (second.units_already_done, second.units_written, second.samples_written) == (2, 1, 1)
    dataset = ShardDataset(tmp_path)
    ids = [dataset.sample_id(i) for i in range(len(dataset))]
    assert ids == ["proc-00000001/0", "proc-00000013/0", "proc-00000014/0"]
    assert len(set(ids)) == len(ids)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["units_already_done"] == 2 and summary["failed"] == []
    with pytest.raises(InputError, match="options"):
        write_shards(units, tmp_path, SampleOptions(image_size=64, resolution=64, coarse=16))


def test_round_trip_equals_fresh_sample(tmp_path: Path) -> None:
    write_shards(_units()[:1], tmp_path, OPTIONS)
    stored = ShardDataset(tmp_path)[0]
    fresh = make_sample(generate(13).scene, view_generator("proc-00000013", 0), 32, 64, 16,
                        asset_id="proc-00000013")
    assert torch.equal(stored.image, fresh.image) and torch.equal(stored.voxels.coords, fresh.voxels.coords)
    assert torch.equal(stored.voxels.attrs, fresh.voxels.attrs) and torch.equal(stored.coarse, fresh.coarse)
    assert stored.fov == fresh.fov and stored.scale == fresh.scale
    assert torch.equal(stored.to_volume, fresh.to_volume)


def test_unit_views_batched_equal_one_sample_per_view(tmp_path: Path) -> None:
    """`make_unit` voxelises its views in one batch; every sample is byte for byte `make_sample`'s (CPU)."""
    samples, skipped = make_unit(WorkUnit("procedural:6", "proc-00000006", (0, 3)), OPTIONS)
    assert skipped == [] and [s.view for s in samples] == [0, 1, 2]
    scene = generate(6).scene
    for sample in samples:
        fresh = make_sample(scene, view_generator("proc-00000006", sample.view), 32, 64, 16,
                            asset_id="proc-00000006", view=sample.view)
        a, b = sample_tensors(sample, "v"), sample_tensors(fresh, "v")
        assert all(torch.equal(a[k], b[k]) for k in a) and sample_scalars(sample) == sample_scalars(fresh)
    write_shards([WorkUnit("procedural:6", "proc-00000006", (0, 3))], tmp_path, OPTIONS)  # no shared storage
    assert len(ShardDataset(tmp_path)) == 3


def _same_samples(a: list, b: list) -> bool:
    assert [s.sample_id for s in a] == [s.sample_id for s in b]
    for x, y in zip(a, b, strict=True):
        tx, ty = sample_tensors(x, "v"), sample_tensors(y, "v")
        if tx.keys() != ty.keys() or not all(torch.equal(tx[k], ty[k]) for k in tx):
            return False
        if sample_scalars(x) != sample_scalars(y):
            return False
    return True


def test_units_batched_equal_one_unit_at_a_time() -> None:
    """`make_units` voxelises different assets (house, sign, table, and two views of a bottle) in one pass; each
    unit's samples are byte for byte `make_unit`'s (coords, dual vertices, edge flags, attributes, coarse)."""
    units = [*_units(), WorkUnit("procedural:6", "proc-00000006", (0, 2))]
    batched = make_units(units, OPTIONS)
    assert [r.unit for r in batched] == units and all(r.error is None and r.skipped == [] for r in batched)
    assert [len(r.samples) for r in batched] == [1, 1, 1, 2]
    assert len({len(r.samples[0].voxels) for r in batched}) == len(units)  # really different assets
    for result in batched:
        assert _same_samples(result.samples, make_unit(result.unit, OPTIONS)[0]), result.unit


def test_bad_unit_in_a_batch_is_skipped_and_the_others_complete(tmp_path: Path, monkeypatch) -> None:
    """A unit that fails to load, and one the voxeliser refuses, each get their reason; the rest are made."""
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")  # points only: no faces
    units = _units()
    alone = [make_unit(u, OPTIONS)[0] for u in units]
    refused = units[1]
    poisoned: set[int] = set()
    load, voxelise = units_module.load_source, samples_module.meshes_to_voxels

    def load_and_mark(source: str) -> object:
        asset = load(source)
        if source == refused.source:
            poisoned.add(id(asset))
        return asset

    def refuse_marked(items: list, *args, **kwargs) -> list:  # as the voxeliser refuses NaN vertices
        for index, (asset, _) in enumerate(items):
            if id(asset) in poisoned:
                raise BadItemError("the mesh has 3 vertices with NaN or Inf coordinates", index)
        return voxelise(items, *args, **kwargs)

    monkeypatch.setattr(units_module, "load_source", load_and_mark)
    monkeypatch.setattr(samples_module, "meshes_to_voxels", refuse_marked)
    batch = [units[0], WorkUnit(str(empty), "mesh-empty", (0, 1)), refused, units[2]]
    results = make_units(batch, OPTIONS)
    assert [r.error is None for r in results] == [True, False, False, True]
    assert "faces" in str(results[1].error) and results[1].samples == []
    assert isinstance(results[2].error, BadItemError) and "proc-00000014" in str(results[2].error)
    assert _same_samples(results[0].samples, alone[0]) and _same_samples(results[3].samples, alone[2])


def test_ranks_split_units_and_reader_merges(tmp_path: Path) -> None:
    units = _units()[:2]
    a = write_shards(units, tmp_path, OPTIONS, rank=0, world_size=2)
    b = write_shards(units, tmp_path, OPTIONS, rank=1, world_size=2)
    assert a.units_total == b.units_total == 1
    assert sorted(p.name for p in tmp_path.glob("index*.json")) == ["index.rank000.json", "index.rank001.json"]
    assert len(ShardDataset(tmp_path)) == 2


def test_bad_sample_raises_with_its_id(tmp_path: Path) -> None:
    write_shards(_units()[:1], tmp_path, OPTIONS)
    shard = next((tmp_path / "shards").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(InputError, match="proc-00000013/0"):
        ShardDataset(tmp_path)[0]


def test_parallel_workers_write_the_same_samples(tmp_path: Path) -> None:
    units = _units()[:2]
    write_shards(units, tmp_path / "serial", OPTIONS)
    summary = write_shards(units, tmp_path / "parallel", OPTIONS, workers=2)
    assert summary.units_written == 2
    serial, parallel = ShardDataset(tmp_path / "serial"), ShardDataset(tmp_path / "parallel")
    for i in range(2):
        assert torch.equal(serial[i].image, parallel[i].image)


def test_cli_batch_gives_the_same_index_and_shards(tmp_path: Path) -> None:
    args = ["data", "generate", "--procedural", "3", "--seed-offset", "13", "--views", "2", "--size", "32",
            "--resolution", "64", "--coarse", "16"]
    assert main([*args, "-o", str(tmp_path / "one")]) == 0
    assert main([*args, "-o", str(tmp_path / "two"), "--batch", "2"]) == 0  # jobs of 2 and 1 objects
    one, two = tmp_path / "one", tmp_path / "two"
    assert (one / "index.json").read_bytes() == (two / "index.json").read_bytes()
    shards = sorted(p.name for p in (one / "shards").iterdir())
    assert len(shards) == 3 and shards == sorted(p.name for p in (two / "shards").iterdir())
    for name in shards:  # same tensors and metadata (the file bytes are not: safetensors orders its header freely)
        with safe_open(str(one / "shards" / name), "pt") as a, safe_open(str(two / "shards" / name), "pt") as b:
            assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    assert main([*args, "-o", str(two), "--batch", "3"]) == 0  # resumed with another batch: nothing to redo
    assert json.loads((two / "summary.json").read_text())["units_already_done"] == 3
    assert main([*args, "-o", str(two), "--batch", "0"]) == 2


def test_cli_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    args = ["data", "generate", "--procedural", "1", "--seed-offset", "14", "--views", "2", "-o", str(out),
            "--size", "32", "--resolution", "64", "--coarse", "16"]
    assert main(args) == 0
    assert main(args) == 0  # resumed: nothing to do
    assert "2 units already done" not in capsys.readouterr().out
    assert len(ShardDataset(out)) == 2
    sheet = tmp_path / "sheet.png"
    assert main(["data", "show", str(out), "--index", "1", "-o", str(sheet)]) == 0
    assert sheet.is_file()
    assert main(["data", "show", str(out), "--index", "5", "-o", str(sheet)]) == 2


def test_engine_batch_defaults_by_device_and_refuses_bad_values() -> None:
    from pixal3d.data.units import ENGINE_BATCH_CUDA, engine_batch

    assert engine_batch(None, "cpu") == 1
    assert engine_batch(None, "cuda:1") == ENGINE_BATCH_CUDA > 1  # a device name needs no GPU to be read
    assert engine_batch(3, "cuda") == 3
    for bad in (0, -2, 1.5, True):
        with pytest.raises(InputError, match="batch"):
            engine_batch(bad, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_units_on_a_gpu_give_the_same_bytes_every_run() -> None:
    options = SampleOptions(image_size=64, resolution=64, coarse=16)
    units = units_module.procedural_units(3, 1)

    def tensors() -> list[dict[str, torch.Tensor]]:
        return [sample_tensors(s, "0") for r in units_module.make_units(units, options, "cuda") for s in r.samples]

    first, second = tensors(), tensors()
    assert len(first) == 3
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
