"""Fine-tuning a VAE's decoder alone (`TrainConfig.freeze`) and widening an "edges" shape decoder to "corners"."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pixal3d.config import config_to_dict, load_config
from pixal3d.errors import InputError
from pixal3d.models.shape_vae import ShapeVAE, ShapeVAEConfig, narrow_corner_head, widen_corner_head
from pixal3d.training.checkpoint import load_checkpoint
from pixal3d.training.config import DataConfig, TrainConfig
from pixal3d.training.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def micro_shape_run(out_dir: Path, **overrides) -> TrainConfig:
    config = load_config(TrainConfig, CONFIGS / "shape_vae_micro.json")
    fields = dict(out_dir=str(out_dir), max_steps=3, progress=False, log_interval=1, checkpoint_interval=3)
    return dataclasses.replace(config, **(fields | overrides))


def test_freeze_keeps_the_encoder_and_trains_the_decoder(tmp_path):
    start = train(micro_shape_run(tmp_path / "start", max_steps=1))
    groups, _ = load_checkpoint(start.checkpoint)
    before = groups["model"]
    result = train(micro_shape_run(tmp_path / "ft", init_weights=str(start.checkpoint), freeze=["encoder."]))
    after, _ = load_checkpoint(result.checkpoint)
    encoder = [k for k in before if k.startswith("encoder.")]
    decoder = [k for k in before if k.startswith("decoder.")]
    assert encoder and decoder
    assert all(torch.equal(before[k], after["model"][k]) for k in encoder)
    assert all(torch.equal(before[k], after["ema"][k]) for k in encoder)
    assert not any(k.removeprefix("param.").startswith("encoder") for k in after.get("optimizer", {}))
    assert sum(not torch.equal(before[k], after["model"][k]) for k in decoder) > len(decoder) // 2


def test_freeze_names_unknown_or_total_prefixes(tmp_path):
    with pytest.raises(InputError, match="no parameter name starts with"):
        train(micro_shape_run(tmp_path / "a", freeze=["encodr."]))
    with pytest.raises(InputError, match="freezes every parameter"):
        train(micro_shape_run(tmp_path / "b", freeze=["encoder.", "decoder."]))


def test_widened_corner_decoder_starts_at_the_edges_decoder():
    """Every voxel starts open, so the widened decoder decodes exactly the old surface (same voxels and flags)."""
    torch.manual_seed(0)
    edges = ShapeVAEConfig(resolution=32, token_resolution=8, latent_channels=8, channels=(16, 32, 32))
    old = ShapeVAE(edges).eval()
    corners = dataclasses.replace(edges, decoder_target="corners")
    new = ShapeVAE(corners).eval()
    new.load_state_dict(widen_corner_head(old.state_dict(), corners))
    _assert_same_decode(old, new)
    with pytest.raises(ValueError, match="corners"):
        widen_corner_head(old.state_dict(), edges)
    with pytest.raises(ValueError, match="edges"):
        widen_corner_head(new.state_dict(), corners)


def test_corners_decoder_written_as_edges_decodes_its_open_voxels_alike():
    """`narrow_corner_head` undoes `widen_corner_head`, and `as_edges_decoder` of a trained-looking corners VAE whose
    voxels are all open (open logit high) decodes the same voxels and edge flags: the edge rows are kept intact."""
    from pixal3d.training.assemble import as_edges_decoder

    torch.manual_seed(0)
    edges = ShapeVAEConfig(resolution=32, token_resolution=8, latent_channels=8, channels=(16, 32, 32))
    corners = dataclasses.replace(edges, decoder_target="corners")
    old = ShapeVAE(edges).state_dict()
    back = narrow_corner_head(widen_corner_head(old, corners))
    assert all(torch.equal(back[k], old[k]) for k in old)
    with pytest.raises(ValueError, match="corners"):
        narrow_corner_head(old)
    vae = ShapeVAE(corners).eval()
    with torch.no_grad():
        vae.decoder.proj_out.weight[12:].normal_()  # the corner and open rows have opinions ...
        vae.decoder.proj_out.bias[20] = 50.0  # ... but every voxel is open
    narrow = as_edges_decoder(vae)
    assert narrow.config.decoder_target == "edges" and as_edges_decoder(narrow) is narrow
    _assert_same_decode(vae, narrow)


def _assert_same_decode(a_vae: ShapeVAE, b_vae: ShapeVAE) -> None:
    """Both VAEs decode `a_vae`'s latent of a synthetic shape to the same, non-empty voxels, edge flags and vertices."""
    from pixal3d.training.synthetic import SyntheticSource

    data = DataConfig(kind="synthetic", resolution=32, coarse_resolution=8, max_primitives=2)
    batch = next(iter(SyntheticSource(data, 1, 0, 1, torch.device("cpu"))))
    with torch.no_grad():
        latent, _ = a_vae.encode(batch["coords"], batch["vertex"], batch["edges"])
        a, b = a_vae.decode(latent)[0], b_vae.decode(latent)[0]
    assert len(a.coords) > 0
    assert torch.equal(a.coords, b.coords) and torch.equal(a.edges, b.edges) and torch.equal(a.vertex, b.vertex)


def test_pipeline_init_widens_a_shipped_edges_decoder_and_refuses_the_reverse(tmp_path):
    from pixal3d.training.conditioned import pipeline_init_tensors, widen_shape_decoder

    edges = ShapeVAEConfig(resolution=32, token_resolution=8, latent_channels=8, channels=(16, 32, 32))
    corners = dataclasses.replace(edges, decoder_target="corners")
    tensors = ShapeVAE(edges).state_dict()
    wide = widen_shape_decoder(tensors, edges, corners)
    assert wide["decoder.proj_out.weight"].shape[0] == 21
    assert widen_shape_decoder(tensors, edges, edges) is tensors
    with pytest.raises(InputError, match="corners"):
        widen_shape_decoder(wide, corners, edges)
    shipped = tmp_path / "pipe" / "shape_vae"
    shipped.mkdir(parents=True)
    from pixal3d.weights import save_component

    save_component(ShapeVAE(edges), shipped)
    (tmp_path / "pipe" / "pipeline.json").write_text("{}")
    run = dataclasses.replace(micro_shape_run(tmp_path / "run"), model_config=config_to_dict(corners))
    loaded = pipeline_init_tensors(tmp_path / "pipe", run)
    assert loaded["decoder.proj_out.bias"][-1] > 0 and loaded["decoder.proj_out.weight"].shape[0] == 21


def test_lr_scale_multiplies_the_learning_rate_of_a_prefix(tmp_path):
    from pixal3d.training.loop import configure_optimizer

    config = micro_shape_run(tmp_path / "a", lr_scale={"decoder.proj_out.": 30.0})
    model = ShapeVAE(config_from_dict_shape(config))
    optimizer = configure_optimizer(model, config)
    scaled = {id(p) for g in optimizer.param_groups if g["lr_scale"] == 30.0 for p in g["params"]}
    assert scaled == {id(model.decoder.proj_out.weight), id(model.decoder.proj_out.bias)}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    result = train(config)
    _, meta = load_checkpoint(result.checkpoint)
    lrs = {g["lr_scale"]: g["lr"] for g in meta["optimizer"]["param_groups"]}
    assert lrs[30.0] == pytest.approx(30 * lrs[1.0])
    with pytest.raises(InputError, match="lr_scale"):
        train(micro_shape_run(tmp_path / "b", lr_scale={"decodr.": 2.0}))
    with pytest.raises(InputError, match="lr_scale"):
        micro_shape_run(tmp_path / "c", lr_scale={"decoder.": 0.0})


def test_lr_scale_resumes_bitwise(tmp_path):
    straight = train(micro_shape_run(tmp_path / "a", max_steps=4, lr_scale={"decoder.proj_out.": 10.0}))
    train(micro_shape_run(tmp_path / "b", max_steps=4, lr_scale={"decoder.proj_out.": 10.0}), stop_at=2)
    resumed = train(micro_shape_run(tmp_path / "b", max_steps=4, lr_scale={"decoder.proj_out.": 10.0}), resume=True)
    a, _ = load_checkpoint(straight.checkpoint)
    b, _ = load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def config_from_dict_shape(config: TrainConfig) -> ShapeVAEConfig:
    from pixal3d.config import config_from_dict

    return config_from_dict(ShapeVAEConfig, config.model_config)
