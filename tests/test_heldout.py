"""The held-out set and metrics of a run: logged at the interval, EMA weights, the same fixed set every time."""

from __future__ import annotations

import dataclasses
import json
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pixal3d.config import load_config
from pixal3d.errors import InputError
from pixal3d.geometry.voxels import SparseVoxels
from pixal3d.models.structure_vae import StructureVAE, StructureVAEConfig
from pixal3d.training.checkpoint import load_checkpoint
from pixal3d.training.config import DataConfig, TrainConfig
from pixal3d.training.heldout import (
    estimate_heldout,
    fixed_batches,
    heldout_data_config,
    shape_reconstruction,
    structure_reconstruction,
    texture_reconstruction,
)
from pixal3d.training.loop import batch_to, train
from pixal3d.training.objectives import structure_vae_loss
from pixal3d.training.synthetic import SyntheticSource

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MICRO = {"resolution": 8, "latent_resolution": 2, "latent_channels": 2, "channels": [4, 8, 8], "norm_groups": 2}


def micro_config(out_dir: Path, **overrides) -> TrainConfig:
    fields = dict(model="structure_vae", model_config=dict(MICRO), out_dir=str(out_dir),
                  data=DataConfig(resolution=8, coarse_resolution=8, max_primitives=2), batch_size=2, max_steps=12,
                  lr=2e-3, min_lr=1e-4, warmup_steps=3, log_interval=2, checkpoint_interval=4, keep_checkpoints=10,
                  ema_decay=0.9, eval_interval=4, eval_batches=2, progress=False)
    fields.update(overrides)
    return TrainConfig(**fields)


def test_heldout_metric_is_logged_at_the_interval_on_the_same_fixed_set(tmp_path):
    config = micro_config(tmp_path, max_steps=10)
    train(config)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10]
    evaluated = [r["step"] for r in records if "heldout_loss" in r]
    assert evaluated == [4, 8, 10]  # every eval_interval, and at max_steps
    keys = {"heldout_loss", "heldout_bce", "heldout_iou", "heldout_occupancy_iou", "heldout_occupancy_recall"}
    assert all(keys <= set(r) and "loss" in r for r in records if r["step"] in evaluated)

    # Recompute each logged value from that step's checkpointed EMA weights on the held-out source's first
    # batches: the same numbers, so every evaluation used the EMA weights and the same fixed set.
    heldout = fixed_batches(SyntheticSource(heldout_data_config(config), 2), 2)
    training = SyntheticSource(config.data, 2).next_batch()
    assert not torch.equal(heldout[0]["occupancy"], training["occupancy"])  # unseen objects
    values = []
    for step in evaluated:
        tensors, _ = load_checkpoint(tmp_path / "checkpoints" / f"step_{step:08d}")
        ema = StructureVAE(StructureVAEConfig(**MICRO))
        ema.load_state_dict(tensors["ema"])
        out = estimate_heldout(ema, "structure_vae", structure_vae_loss, heldout, torch.Generator(),
                               nullcontext(), lambda b: batch_to(b, torch.device("cpu")))
        logged = next(r for r in records if r["step"] == step)
        for key, value in out.items():
            assert logged[key] == pytest.approx(value, rel=1e-6, abs=1e-8), (step, key)
        values.append(out["heldout_loss"])
    assert len(set(values)) == len(values)  # the weights moved, and the metric with them


def test_heldout_survives_resume_and_chunks(tmp_path):
    train(micro_config(tmp_path / "a"))
    train(micro_config(tmp_path / "b"), stop_at=6)
    train(micro_config(tmp_path / "b"), resume=True)
    logs = [[{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "eval_s")}
             for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("a", "b")]
    assert logs[0] == logs[1]
    assert [r["step"] for r in logs[1] if "heldout_loss" in r] == [4, 8, 12]


def test_heldout_config_errors(tmp_path):
    with pytest.raises(InputError, match="multiple of log_interval"):
        micro_config(tmp_path, eval_interval=5)
    shards = heldout_data_config(micro_config(tmp_path, data=DataConfig(kind="shards", root=str(tmp_path),
                                                                          image_size=64, resolution=32, coarse_resolution=8)))
    assert (shards.kind, shards.seed_offset, shards.views, shards.image_size, shards.resolution) == (
        "procedural", 1_000_000, 1, 64, 32)
    with pytest.raises(InputError, match="num_objects"):
        heldout_data_config(micro_config(tmp_path, data=DataConfig(resolution=8, coarse_resolution=8, num_objects=2)))
    procedural = micro_config(tmp_path, data=DataConfig(kind="procedural", workers=3))
    assert heldout_data_config(procedural).seed_offset == 1_000_000 and heldout_data_config(procedural).workers == 0
    assert heldout_data_config(procedural, "cuda").engine_device == "cuda"
    own = DataConfig(resolution=8, coarse_resolution=8, seed=7)
    assert heldout_data_config(micro_config(tmp_path, heldout_data=own)) is own


def test_shipped_configs_name_a_heldout_set():
    """Every tiny run evaluates a held-out set: the procedural configs by default, the shard ones explicitly."""
    for path in sorted(CONFIGS.glob("*_tiny*.json")):
        config = load_config(TrainConfig, path)
        assert config.eval_interval > 0, path.name
        heldout = heldout_data_config(config)
        assert heldout.kind == "procedural" and heldout.seed_offset >= 1_000_000, path.name
        assert (heldout.image_size, heldout.resolution, heldout.coarse_resolution) == (
            config.data.image_size, config.data.resolution, config.data.coarse_resolution), path.name


# ------------------------------------------------------------------------------------------------ metrics
def test_reconstruction_metrics_on_known_decodings():
    occupancy = torch.zeros(1, 1, 4, 4, 4)
    occupancy[0, 0, :2] = 1.0  # 32 voxels
    half = torch.full_like(occupancy, -1.0)
    half[0, 0, :1] = 1.0  # 16 of them, nothing else
    structure = SimpleNamespace(encode=lambda occ: (occ, occ), decode=lambda mean: half)
    out = structure_reconstruction(structure, {"occupancy": occupancy})
    assert {k: float(v) for k, v in out.items()} == {"occupancy_iou": 0.5, "occupancy_precision": 1.0,
                                                      "occupancy_recall": 0.5}

    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [1, 0, 0, 1], [1, 3, 3, 3]], dtype=torch.int32)
    edges = torch.tensor([[1, 0, 0], [0, -1, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.int8)  # 4 crossed edges
    back = [  # sample 0 comes back whole but one flag flipped; sample 1 loses (1, 0, 0, 1) and gains a voxel
        SparseVoxels(coords[:2, 1:], torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 1, 0]], dtype=torch.int8),
                     None, 4),
        SparseVoxels(torch.tensor([[2, 2, 2], [3, 3, 3]], dtype=torch.int32), torch.zeros(2, 3),
                     torch.zeros(2, 3, dtype=torch.int8), None, 4),
    ]
    shape = SimpleNamespace(config=SimpleNamespace(resolution=4), encode=lambda c, v, e: (None, None),
                            decode=lambda mean: back)
    out = shape_reconstruction(shape, {"coords": coords, "vertex": torch.zeros(4, 3), "edges": edges})
    assert float(out["voxel_iou"]) == pytest.approx(3 / 5) and float(out["voxel_recall"]) == pytest.approx(3 / 4)
    assert float(out["edge_recall"]) == pytest.approx(1 / 4)

    attrs = torch.rand(4, 6)
    texture = SimpleNamespace(encode=lambda c, a: (None, None),
                              decode=lambda mean, c: torch.cat([attrs[:, :3] + 0.25, attrs[:, 3:] - 0.5], dim=1))
    out = texture_reconstruction(texture, {"coords": coords, "attrs": attrs})
    assert float(out["base_color_mae"]) == pytest.approx(0.25)


@pytest.mark.parametrize("name", ["shape_vae_micro", "texture_vae_micro"])
def test_sparse_vaes_log_their_reconstruction_metrics(tmp_path, name):
    config = load_config(TrainConfig, CONFIGS / f"{name}.json")
    config = dataclasses.replace(config, out_dir=str(tmp_path), max_steps=2, log_interval=1, eval_interval=2,
                                 eval_batches=1, progress=False)
    result = train(config)
    wanted = {"shape_vae_micro": {"heldout_voxel_iou", "heldout_edge_recall", "heldout_edge_acc"},
              "texture_vae_micro": {"heldout_base_color_mae", "heldout_l1"}}[name]
    assert wanted <= set(result.metrics)
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in wanted)
