"""Shards on disk (DESIGN section 7): round trip, resume without duplicates, rank split, bad samples, the CLI.

Sizes: S = 32, R_hr = 64, coarse 16; cheap procedural seeds (13 house, 14 sign, 1 table).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixal3d.cli import main
from pixal3d.data.dataset import ShardDataset
from pixal3d.data.procedural import generate
from pixal3d.data.samples import make_sample, view_generator
from pixal3d.data.shards import (
    SampleOptions,
    WorkUnit,
    make_unit,
    procedural_units,
    sample_scalars,
    sample_tensors,
    write_shards,
)
from pixal3d.errors import InputError

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
