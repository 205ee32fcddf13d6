"""Conditioned flow training on the data engine: the three stages through `train()`, resume, dropout, shards."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from pixal3d.config import load_config
from pixal3d.data.shards import write_shards
from pixal3d.data.units import SampleOptions, procedural_units
from pixal3d.encoder import EncoderConfig, FeatureMaps
from pixal3d.errors import InputError
from pixal3d.models.flow import FlowCondition, FlowConfig, FlowTransformer
from pixal3d.training.checkpoint import latest_checkpoint, load_checkpoint
from pixal3d.training.conditioned import flow_run_components
from pixal3d.training.config import TrainConfig
from pixal3d.training.data import ProceduralSource
from pixal3d.training.loop import build_model, init_weights, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def micro(name: str, out_dir: Path, **changes) -> TrainConfig:
    """A shipped micro config, shrunk to a few quiet CPU steps in `out_dir`."""
    config = load_config(TrainConfig, CONFIGS / f"{name}.json")
    defaults = dict(out_dir=str(out_dir), max_steps=2, log_interval=1, checkpoint_interval=100, progress=False,
                    warmup_steps=1)
    return dataclasses.replace(config, **(defaults | changes))


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory) -> dict[str, Path]:
    """One-step procedural runs of the three micro VAEs (the flows' frozen VAE checkpoints)."""
    root = tmp_path_factory.mktemp("vaes")
    torch.set_num_threads(1)
    runs = {}
    for stage in ("structure", "shape", "texture"):
        runs[stage] = root / stage
        result = train(micro(f"{stage}_vae_micro_procedural", runs[stage], max_steps=1))
        assert result.step == 1 and math.isfinite(result.metrics["loss"])
    return runs


def flow_config(stage: str, out_dir: Path, runs: dict[str, Path], **changes) -> TrainConfig:
    config = micro(f"{stage}_flow_micro", out_dir, **changes)
    flow = dataclasses.replace(config.flow, vae_checkpoint=str(runs[stage]), encoder_checkpoint=None,
                               shape_vae_checkpoint=str(runs["shape"]) if stage == "texture" else None)
    return dataclasses.replace(config, flow=flow)


@pytest.mark.parametrize("stage", ["structure", "shape", "texture"])
def test_flow_stage_trains_and_checkpoint_loads_back(stage, vae_runs, tmp_path):
    result = train(flow_config(stage, tmp_path, vae_runs))
    assert result.step == 2 and all(math.isfinite(v) for v in result.metrics.values())
    assert result.metrics["tokens"] > 0
    tensors, meta = load_checkpoint(result.checkpoint)
    prefixes = {name.split(".")[0] for name in tensors["ema"]}
    assert prefixes == ({"encoder", "flow", "fov_head"} if stage == "structure" else {"encoder", "flow"})
    assert meta["data"]["next_index"] == 2 * 2  # procedural stream position: 2 steps x batch 2
    modules = flow_run_components(tmp_path, group="model")
    assert set(modules) == {"encoder", f"{stage}_flow"} | ({"fov_head"} if stage == "structure" else set())
    for name, module in modules.items():
        prefix = "flow." if name.endswith("_flow") else f"{name}."
        for key, value in module.state_dict().items():
            assert torch.equal(value, tensors["model"][prefix + key])


def test_cross_attention_variant_trains_through_the_same_path(vae_runs, tmp_path):
    config = flow_config("shape", tmp_path, vae_runs, max_steps=1)
    config = dataclasses.replace(config, model_config=config.model_config | {"conditioning": "cross"})
    result = train(config)
    assert result.step == 1 and math.isfinite(result.metrics["loss"])


def test_flow_resume_is_exact(vae_runs, tmp_path):
    """4 steps in one go == 2 steps, resume, 2 steps: bitwise, weights, EMA and optimizer state (CPU).

    With a held-out evaluation every 2 steps (procedural objects from seed 1,000,000): it leaves the training
    noise alone, and logs the same held-out flow loss and FoV error in both runs.
    """
    kwargs = dict(max_steps=4, batch_size=1, checkpoint_interval=2, eval_interval=2, eval_batches=1)
    whole = train(flow_config("structure", tmp_path / "a", vae_runs, **kwargs))
    train(flow_config("structure", tmp_path / "b", vae_runs, **kwargs), stop_at=2)
    resumed = train(flow_config("structure", tmp_path / "b", vae_runs, **kwargs), resume=True)
    a, meta_a = load_checkpoint(whole.checkpoint)
    b, meta_b = load_checkpoint(resumed.checkpoint)
    assert meta_a["data"] == meta_b["data"] and meta_a["rng"] == meta_b["rng"]
    for group in ("model", "ema", "optimizer"):
        assert a[group].keys() == b[group].keys()
        for name in a[group]:
            assert torch.equal(a[group][name], b[group][name]), (group, name)
    logs = [[{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "eval_s")}
             for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("a", "b")]
    assert logs[0] == logs[1]
    assert [r["step"] for r in logs[0] if "heldout_mse" in r and "heldout_fov_l1" in r] == [2, 4]
    assert all(r["heldout_keep"] == 1.0 for r in logs[0] if "heldout_keep" in r)  # held out: always conditioned


def test_frozen_encoder_keeps_its_weights(vae_runs, tmp_path):
    config = flow_config("shape", tmp_path, vae_runs, max_steps=2, ema_decay=0.0, checkpoint_interval=1)
    config = dataclasses.replace(config, flow=dataclasses.replace(config.flow, train_encoder=False))
    train(config)
    first, _ = load_checkpoint(tmp_path / "checkpoints" / "step_00000001")
    second, _ = load_checkpoint(tmp_path / "checkpoints" / "step_00000002")
    changed = {k.split(".")[0] for k in first["model"] if not torch.equal(first["model"][k], second["model"][k])}
    assert changed == {"flow"}


def test_condition_dropout_drops_both_inputs_together():
    """A dropped element's output equals the unconditional one; a kept element's does not."""
    torch.manual_seed(0)
    model = FlowTransformer(FlowConfig(tokens="dense", in_channels=2, resolution=4, patch_size=2, dim=32, depth=1,
                                       heads=2, feature_channels=8)).eval()
    for p in model.parameters():  # zero-initialised output layers would hide the condition
        torch.nn.init.normal_(p, std=0.2)
    features = FeatureMaps(maps=[torch.rand(4, 4, 32, 32), torch.randn(4, 8, 8, 8)],
                           global_tokens=torch.randn(4, 2, 8))
    from pixal3d.camera import Camera
    cond = FlowCondition(features, [Camera(fov=0.6, size=32)] * 4)
    drops = (cond.with_dropout(0.5, torch.Generator().manual_seed(s)) for s in range(50))
    dropped = next(d for d in drops if d.keep.any() and not d.keep.all())
    keep = dropped.keep
    assert keep.any() and not keep.all()
    x, t = torch.randn(4, 2, 4, 4, 4), torch.full((4,), 0.5)
    with torch.no_grad():
        out, uncond, full = model(x, t, dropped), model(x, t, None), model(x, t, cond)
    assert torch.allclose(out[~keep], uncond[~keep], atol=1e-6)
    assert torch.allclose(out[keep], full[keep], atol=1e-6)
    assert not torch.allclose(full[~keep], uncond[~keep], atol=1e-4)
    rate = FlowCondition(features, cond.cameras).with_dropout(0.1, torch.Generator().manual_seed(0))
    many = torch.stack([cond.with_dropout(0.1, torch.Generator().manual_seed(s)).keep for s in range(200)])
    assert rate.keep.shape == (4,) and 0.05 < 1 - many.float().mean() < 0.15


def test_shard_data_kind_reads_a_written_folder(vae_runs, tmp_path):
    options = SampleOptions(image_size=64, resolution=64, coarse=16)
    summary = write_shards(procedural_units(2, 1), tmp_path / "data", options)
    assert summary is not None
    config = flow_config("structure", tmp_path / "run", vae_runs, max_steps=2)
    data = dataclasses.replace(config.data, kind="shards", root=str(tmp_path / "data"))
    result = train(dataclasses.replace(config, data=data))
    assert result.step == 2 and math.isfinite(result.metrics["loss"])
    _, meta = load_checkpoint(result.checkpoint)
    assert meta["data"] == {"position": 2, "samples": 2}
    wrong = dataclasses.replace(data, image_size=128)
    with pytest.raises(InputError, match="image_size"):
        train(dataclasses.replace(config, data=wrong, out_dir=str(tmp_path / "other")))


def test_shard_workers_read_ahead_the_same_batches(tmp_path):
    """Loader workers give the batches that the training process reads itself, in order, and the position counts
    only the batches handed out (a resume continues after the last one trained on)."""
    from pixal3d.training.config import DataConfig
    from pixal3d.training.data import ShardSource

    options = SampleOptions(image_size=32, resolution=64, coarse=16)
    assert write_shards(procedural_units(3, 2), tmp_path / "data", options) is not None
    config = DataConfig(kind="shards", root=str(tmp_path / "data"), image_size=32, resolution=64, coarse_resolution=16)
    plain = ShardSource(config, batch_size=2)
    expected = [plain.batch_at(p) for p in range(5)]  # 6 samples: position 3 starts the reshuffled epoch 2
    ahead = ShardSource(dataclasses.replace(config, workers=2), batch_size=2)
    ahead.load_state_dict({"position": 1, "samples": 6})
    got = iter(ahead)
    for want in expected[1:]:
        batch = next(got)
        assert batch["sample_ids"] == want["sample_ids"]
        assert torch.equal(batch["image"], want["image"]) and torch.equal(batch["coords"], want["coords"])
    assert ahead.state_dict()["position"] == 5
    assert expected[0]["sample_ids"] != expected[1]["sample_ids"]


def test_collate_builds_images_cameras_and_voxels():
    config = load_config(TrainConfig, CONFIGS / "structure_flow_micro.json").data
    source = ProceduralSource(config, batch_size=2)
    batch = next(iter(source))
    assert batch["image"].shape == (2, 4, 64, 64) and batch["image"].dtype == torch.float32
    assert 0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1
    assert [c.size for c in batch["cameras"]] == [64, 64]
    assert torch.allclose(torch.tensor([c.fov for c in batch["cameras"]]), batch["fov"])
    assert batch["occupancy"].shape == (2, 1, 16, 16, 16)
    assert batch["coarse_coords"].shape[1] == 4 and batch["coords"].shape[1] == 4
    b, i, j, k = batch["coarse_coords"].long().T
    occupied = batch["occupancy"][b, 0, i, j, k]
    assert bool((occupied == 1).all()) and int(batch["occupancy"].sum()) == batch["coarse_coords"].shape[0]
    assert source.state_dict()["next_index"] == 2


def test_flow_config_errors(tmp_path):
    config = load_config(TrainConfig, CONFIGS / "structure_flow_micro.json")
    with pytest.raises(InputError, match="vae_checkpoint"):
        dataclasses.replace(config.flow, vae_checkpoint=None, vae_config={})
    with pytest.raises(InputError, match='"flow"'):
        dataclasses.replace(config, flow=None)
    bad = dataclasses.replace(config, out_dir=str(tmp_path), model_config=config.model_config | {"in_channels": 3},
                              flow=dataclasses.replace(config.flow, vae_checkpoint=None, vae_config={
                                  "resolution": 16, "latent_resolution": 4, "latent_channels": 4,
                                  "channels": [8, 16, 16], "norm_groups": 4}))
    with pytest.raises(InputError, match="in_channels"):
        train(bad)
    assert EncoderConfig(**{**config.flow.encoder.__dict__}).channels == 16
    # Stage 3: the texture and shape VAEs must pool to the same tokens (the step compares only their counts).
    texture = load_config(TrainConfig, CONFIGS / "texture_flow_micro.json")
    tex_vae = load_config(TrainConfig, CONFIGS / "texture_vae_micro_procedural.json").model_config
    shape_vae = load_config(TrainConfig, CONFIGS / "shape_vae_micro_procedural.json").model_config
    shape_vae = shape_vae | {"token_resolution": shape_vae["token_resolution"] * 2}
    shape_vae["channels"] = shape_vae["channels"][:-1]  # one level fewer for the finer tokens
    bad = dataclasses.replace(texture, out_dir=str(tmp_path / "t"), flow=dataclasses.replace(
        texture.flow, vae_checkpoint=None, vae_config=tex_vae, shape_vae_checkpoint=None, shape_vae_config=shape_vae,
        encoder_checkpoint=None))
    with pytest.raises(InputError, match="texture_vae.token_resolution"):
        build_model(bad, torch.device("cpu"))


def test_procedural_position_maps_across_rank_counts():
    """A checkpoint of 2 ranks resumes on 1 or 4 ranks at the same global sample count."""
    config = load_config(TrainConfig, CONFIGS / "structure_flow_micro.json").data
    two = ProceduralSource(config, batch_size=1, rank=1, world_size=2)
    two.stream.next_index = 6  # 3 steps x 2 per rank: 12 samples consumed globally
    one, four = ProceduralSource(config, 2), ProceduralSource(config, 1, rank=3, world_size=4)
    one.load_state_dict(two.state_dict())
    four.load_state_dict(two.state_dict())
    assert one.stream.next_index == 12 and four.stream.next_index == 3
    assert four.stream.item(four.stream.next_index) == one.stream.item(12 + 3)  # global item 15 on both
    odd = ProceduralSource(config, 1, rank=0, world_size=5)
    with pytest.raises(InputError, match="divides"):
        odd.load_state_dict(two.state_dict())


def test_later_stages_reuse_the_stage1_encoder(vae_runs, tmp_path):
    """The shipped shape/texture configs freeze the encoder that the structure run trained (one encoder in the
    pipeline): `encoder_checkpoint` reads its EMA weights from the structure run's checkpoint."""
    train(flow_config("structure", tmp_path / "structure", vae_runs, max_steps=1))
    config = flow_config("shape", tmp_path / "shape", vae_runs, max_steps=1)
    assert config.flow.train_encoder is False
    config = dataclasses.replace(config, flow=dataclasses.replace(config.flow,
                                                                  encoder_checkpoint=str(tmp_path / "structure")))
    result = train(config)
    stage1, _ = load_checkpoint(tmp_path / "structure" / "checkpoints" / "step_00000001")
    stage2, _ = load_checkpoint(result.checkpoint)
    encoder = [k for k in stage2["model"] if k.startswith("encoder.")]
    assert encoder and all(torch.equal(stage1["ema"][k], stage2["model"][k]) for k in encoder)


def test_assemble_builds_a_loadable_pipeline_from_runs(vae_runs, tmp_path):
    """`pixal3d assemble`: three VAE runs + three flow runs sharing one frozen encoder -> a pipeline folder."""
    from pixal3d.pipeline import Pixal3DPipeline
    from pixal3d.training.assemble import assemble_pipeline, make_encoder_component

    encoder_config = flow_config("structure", tmp_path / "x", vae_runs).flow.encoder
    make_encoder_component(tmp_path / "encoder", encoder_config)
    runs = {f"{stage}_vae": vae_runs[stage] for stage in ("structure", "shape", "texture")}
    for stage in ("structure", "shape", "texture"):
        config = flow_config(stage, tmp_path / stage, vae_runs, max_steps=1)
        flow = dataclasses.replace(config.flow, train_encoder=False, encoder_checkpoint=str(tmp_path / "encoder"))
        train(dataclasses.replace(config, flow=flow))
        runs[f"{stage}_flow"] = tmp_path / stage
    folder = assemble_pipeline(runs, tmp_path / "pipe", weights="model")
    pipe = Pixal3DPipeline.from_pretrained(folder)
    assert pipe.fov_head is not None
    trained, _ = load_checkpoint(latest_checkpoint(tmp_path / "shape"))
    for key, value in pipe.components["shape_flow"].state_dict().items():  # float16 on disk, float32 loaded
        assert torch.allclose(value, trained["model"]["flow." + key].float(), atol=2e-3, rtol=1e-3)

    # Fine-tuning the shipped kind of model: a flow run starts from the pipeline folder, on its component VAEs.
    config = flow_config("texture", tmp_path / "tuned", vae_runs, max_steps=1, init_weights=str(folder))
    config = dataclasses.replace(config, flow=dataclasses.replace(
        config.flow, vae_checkpoint=str(folder / "texture_vae"), shape_vae_checkpoint=str(folder / "shape_vae"),
        encoder_checkpoint=str(folder / "encoder"), train_encoder=False))
    torch.manual_seed(config.seed)
    model, _, _ = build_model(config, torch.device("cpu"))
    init_weights(model, config)
    for key, value in pipe.components["texture_flow"].state_dict().items():
        assert torch.equal(model.flow.state_dict()[key], value)
    assert math.isfinite(train(config).metrics["loss"])
    partial = Path(shutil.copytree(folder, tmp_path / "partial"))
    shutil.rmtree(partial / "texture_flow")
    with pytest.raises(InputError, match="no texture_flow component"):
        init_weights(model, dataclasses.replace(config, init_weights=str(partial)))

    other = flow_config("texture", tmp_path / "other", vae_runs, max_steps=1)  # trains its own encoder
    train(other)
    with pytest.raises(InputError, match="encoder differs"):
        assemble_pipeline(runs | {"texture_flow": tmp_path / "other"}, tmp_path / "pipe2")
    assert not (tmp_path / "pipe2").exists()


@pytest.mark.parametrize("stage", ["structure", "shape"])
def test_depth_lift_flow_trains_on_ground_truth_depth(stage, vae_runs, tmp_path):
    """A depth_lift flow's condition reads the batch's splat depth (with noise); the step runs, the loss is finite."""
    config = flow_config(stage, tmp_path, vae_runs, max_steps=1)
    config = dataclasses.replace(config, model_config=config.model_config | {"depth_lift": True},
                                 flow=dataclasses.replace(config.flow, depth_noise=0.05))
    result = train(config)
    assert result.step == 1 and all(math.isfinite(v) for v in result.metrics.values())
    modules = flow_run_components(tmp_path, group="model")
    assert modules[f"{stage}_flow"].config.depth_lift


def test_lift_depth_is_the_splat_along_the_axis_with_noise():
    from pixal3d.camera import Camera
    from pixal3d.training.conditioned import lift_depth

    cams = [Camera(fov=0.6, size=64), Camera(fov=1.0, size=64)]
    z = torch.full((2, 1, 16, 16), 0.1)
    z[:, :, 0, 0] = -math.inf  # no surface
    clean = lift_depth(z, cams, 0.0, torch.Generator())
    assert torch.allclose(clean[:, 0, 1, 1], torch.tensor([c.eye_distance - 0.1 for c in cams]))
    assert torch.isinf(clean[:, 0, 0, 0]).all()
    noisy = lift_depth(z, cams, 0.02, torch.Generator().manual_seed(0))
    assert torch.isinf(noisy[:, 0, 0, 0]).all()
    finite = torch.isfinite(clean)
    assert 0.015 < float((noisy - clean)[finite].std()) < 0.025
    with pytest.raises(InputError, match="ground-truth depth"):
        lift_depth(None, cams, 0.0, torch.Generator())


def test_init_weights_widens_a_pipeline_flow_with_zero_depth_columns(tmp_path):
    """A depth_lift run started from a pipeline without it: the lift columns of the depth channels start at zero,
    every other weight is the pipeline's, so the fine-tune starts at the pipeline's behaviour."""
    from pixal3d.config import config_to_dict
    from pixal3d.pipeline import Pixal3DPipeline
    from pixal3d.training.conditioned import pipeline_init_tensors

    pipe = Pixal3DPipeline.from_config("micro")
    folder = pipe.save_pretrained(tmp_path / "pipe", dtype=torch.float32)
    base = load_config(TrainConfig, CONFIGS / "structure_flow_micro.json")
    shipped = pipe.structure_flow.config
    config = dataclasses.replace(base, model_config=config_to_dict(shipped) | {"depth_lift": True},
                                 flow=dataclasses.replace(base.flow, fov_head=None))
    tensors = pipeline_init_tensors(folder, config)
    p3, features = shipped.patch**3, shipped.lift_channels - 1
    for i, block in enumerate(pipe.structure_flow.blocks):
        old, new = block.lift.weight, tensors[f"flow.blocks.{i}.lift.weight"]
        assert new.shape == (old.shape[0], old.shape[1] + 5 * p3)
        assert torch.equal(new[:, : features * p3], old[:, : features * p3])
        assert torch.equal(new[:, -p3:], old[:, -p3:])
        assert (new[:, features * p3 : -p3] == 0).all()
    others = {k: v for k, v in pipe.structure_flow.state_dict().items() if not k.endswith(".lift.weight")}
    assert all(torch.equal(tensors["flow." + k], v) for k, v in others.items())
    backwards = dataclasses.replace(config, model_config=config_to_dict(shipped))
    widened = tmp_path / "wide"
    pipe.structure_flow = FlowTransformer(dataclasses.replace(shipped, depth_lift=True))
    pipe.save_pretrained(widened, dtype=torch.float32)
    with pytest.raises(InputError, match="depth_lift"):
        pipeline_init_tensors(widened, backwards)


@pytest.mark.parametrize("stage", ["structure", "shape", "texture"])
def test_depthlift_configs_start_at_the_shipped_flows(stage):
    """`configs/*_tiny_depthlift.json` from the shipped weights (depth-lift flows since fidelity round 2): the run's
    flow gives the shipped flow's output on the same depth-aware condition, and the structure run carries the
    shipped FoV and depth heads. (Widening a flow without the depth lift: tests/test_flow.py.)"""
    from pixal3d.camera import Camera
    from pixal3d.sparse import SparseTensor
    from pixal3d.weights import load_component

    root = CONFIGS.parent
    config = load_config(TrainConfig, CONFIGS / f"{stage}_flow_tiny_depthlift.json")
    fix = lambda path: str(root / path) if path else path  # noqa: E731  (paths are relative to the repo root)
    flow = dataclasses.replace(config.flow, vae_checkpoint=fix(config.flow.vae_checkpoint),
                               shape_vae_checkpoint=fix(config.flow.shape_vae_checkpoint),
                               encoder_checkpoint=fix(config.flow.encoder_checkpoint))
    config = dataclasses.replace(config, flow=flow, init_weights=fix(config.init_weights))
    assert config.model_config["depth_lift"] and config.flow.depth_noise > 0
    torch.manual_seed(0)
    model, _, _ = build_model(config, torch.device("cpu"))
    init_weights(model, config)
    shipped = root / "pixal3d" / "weights" / "default"
    reference = load_component(shipped / f"{stage}_flow", "flow").eval()
    tuned = model.flow.eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 4, 64, 64, generator=gen)
    features = FeatureMaps([image, torch.randn(1, 64, 16, 16, generator=gen)], torch.randn(1, 5, 64, generator=gen))
    camera = Camera(fov=0.7, size=64)
    depth = torch.full((1, 1, 16, 16), camera.eye_distance)
    cfg = tuned.config
    if cfg.tokens == "dense":
        x = torch.randn(1, cfg.in_channels, cfg.resolution, cfg.resolution, cfg.resolution, generator=gen)
    else:
        ijk = torch.unique(torch.randint(8, 24, (40, 3), generator=gen), dim=0)
        coords = torch.cat([torch.zeros_like(ijk[:, :1]), ijk], dim=1).int()
        x = SparseTensor(coords, torch.randn(len(coords), cfg.in_channels, generator=gen), cfg.resolution)
    kwargs = {"concat": x.replace(feats=torch.randn(len(x.coords), cfg.cond_channels, generator=gen))} \
        if cfg.cond_channels else {}
    t = torch.tensor([0.7])
    with torch.no_grad():
        old = reference(x, t, FlowCondition(features, camera, depth=depth), **kwargs)
        new = tuned(x, t, FlowCondition(features, camera, depth=depth), **kwargs)
    old, new = (v.feats if isinstance(v, SparseTensor) else v for v in (old, new))
    assert torch.allclose(new, old, atol=1e-5)
    if stage == "structure":
        for head in ("fov_head", "depth_head"):
            ref = load_component(shipped / head, head).state_dict()
            assert all(torch.equal(v, ref[k]) for k, v in getattr(model, head).state_dict().items())


def test_lift_reads_the_frozen_depth_heads_map_for_the_drawn_fraction(vae_runs, tmp_path, monkeypatch):
    """`lift_depth_head_fraction` 1: the depth lift reads the frozen head's map (as inference does), 0: the ground
    truth; a run with a fraction trains, and the head stays out of the run's weights."""
    import pixal3d.training.conditioned as conditioned
    from pixal3d.models.depth_head import DepthHead, DepthHeadConfig
    from pixal3d.weights import save_component

    config = flow_config("shape", tmp_path / "run", vae_runs, max_steps=1)
    config = dataclasses.replace(config, model_config={**config.model_config, "depth_lift": True})
    channels = config.flow.encoder.channels
    head = DepthHead(DepthHeadConfig(feature_channels=channels, image_channels=4, hidden=8, layers=1))
    with torch.no_grad():
        head.net[-1].bias.fill_(0.3)  # a recognisable map: z = 0.5 tanh(0.3 + ...)
    save_component(head, tmp_path / "depth_head")
    seen = []
    real = conditioned.lift_depth
    monkeypatch.setattr(conditioned, "lift_depth", lambda z, *args: seen.append(z.clone()) or real(z, *args))
    for fraction in (1.0, 0.0):
        flow = dataclasses.replace(config.flow, lift_depth_head=str(tmp_path / "depth_head"),
                                   lift_depth_head_fraction=fraction, depth_noise=0.0)
        run = dataclasses.replace(config, flow=flow, out_dir=str(tmp_path / f"run{fraction}"), eval_interval=0)
        model, objective, _ = build_model(run, torch.device("cpu"))
        batch = next(iter(ProceduralSource(run.data, batch_size=2)))
        seen.clear()
        loss, _ = objective(model, batch, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss)
        with torch.no_grad():
            predicted = head(model.encoder(batch["image"])).float()
        truth = conditioned.depth_target(batch).float()
        assert torch.equal(seen[0], predicted if fraction == 1.0 else truth)
        assert not any(k.startswith("_lift") or "lift_head" in k for k in model.state_dict())
    with pytest.raises(InputError, match="lift_depth_head"):
        dataclasses.replace(config.flow, lift_depth_head_fraction=0.5)
    result = train(dataclasses.replace(run, flow=dataclasses.replace(run.flow, lift_depth_head_fraction=0.5)))
    assert result.step == 1 and math.isfinite(result.metrics["loss"])


def test_latent_normalisation_round_trips_and_is_checked():
    from pixal3d.models.flow import denormalize_latent, normalize_latent
    from pixal3d.sparse import SparseTensor

    config = FlowConfig(in_channels=2, resolution=4, patch_size=2, dim=16, depth=1, heads=2,
                        latent_mean=[1.0, -2.0], latent_std=[0.5, 4.0])
    dense = torch.randn(3, 2, 4, 4, 4)
    norm = normalize_latent(dense, config)
    assert torch.allclose(norm[:, 0], (dense[:, 0] - 1.0) / 0.5) and torch.allclose(norm[:, 1], (dense[:, 1] + 2) / 4)
    assert torch.allclose(denormalize_latent(norm, config), dense, atol=1e-6)
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 2]], dtype=torch.int32)
    sparse = SparseTensor(coords, torch.randn(2, 2), 4)
    back = denormalize_latent(normalize_latent(sparse, config), config)
    assert torch.allclose(back.feats, sparse.feats, atol=1e-6)
    assert torch.allclose(normalize_latent(sparse, config).feats[:, 1], (sparse.feats[:, 1] + 2) / 4)
    plain = dataclasses.replace(config, latent_mean=None, latent_std=None)
    assert normalize_latent(dense, plain) is dense and denormalize_latent(sparse, plain) is sparse
    with pytest.raises(InputError, match="go together"):
        dataclasses.replace(config, latent_std=None)
    with pytest.raises(InputError, match="in_channels"):
        dataclasses.replace(config, latent_mean=[0.0], latent_std=[1.0])
    with pytest.raises(InputError, match="> 0"):
        dataclasses.replace(config, latent_std=[1.0, 0.0])


def test_latent_stats_make_the_flow_targets_unit_variance_and_sampling_maps_back(vae_runs, tmp_path, monkeypatch):
    """scripts/latent_stats.py measures the run's latents; a flow trained with them sees standardised targets, and
    the stage's sample is mapped back to the VAE's latent before decoding."""
    import importlib.util

    import pixal3d.stages as stages
    import pixal3d.training.conditioned as conditioned
    from pixal3d.config import config_to_dict
    from pixal3d.sparse import SparseTensor

    spec = importlib.util.spec_from_file_location("latent_stats", CONFIGS.parent / "scripts" / "latent_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = flow_config("shape", tmp_path / "run", vae_runs, max_steps=1, eval_interval=0)
    path = tmp_path / "shape.json"
    path.write_text(json.dumps(config_to_dict(config)))
    assert module.main([str(path), "--batches", "1", "--write"]) == 0
    written = json.loads(path.read_text())["model_config"]
    assert len(written["latent_mean"]) == len(written["latent_std"]) == config.model_config["in_channels"]
    stats_config = load_config(TrainConfig, path)
    seen = []
    real = conditioned.flow_matching_loss
    monkeypatch.setattr(conditioned, "flow_matching_loss", lambda flow, x0, *a, **k: seen.append(x0) or real(flow, x0, *a, **k))
    model, objective, _ = build_model(stats_config, torch.device("cpu"))
    batch = next(iter(ProceduralSource(stats_config.data, batch_size=stats_config.batch_size)))
    objective(model, batch, torch.Generator().manual_seed(0))  # the batch the stats were measured on
    feats = seen[0].feats.float()
    assert torch.allclose(feats.mean(0), torch.zeros(feats.shape[1]), atol=2e-3)
    assert torch.allclose(feats.std(0), torch.ones(feats.shape[1]), atol=2e-2)
    flow = model.flow
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1]], dtype=torch.int32)
    unit = SparseTensor(coords, torch.ones(2, flow.config.in_channels), flow.config.resolution)
    monkeypatch.setattr(stages, "sample", lambda *a, **k: unit)
    out = stages.sample_shape(flow, None, coords, torch.Generator(), flow.config.sampler, False, False)
    std, mean = torch.tensor(written["latent_std"]), torch.tensor(written["latent_mean"])
    assert torch.allclose(out.feats, (std + mean).expand(2, -1), atol=1e-5)


def test_head_flip_mirrors_training_samples_and_their_depth_targets(vae_runs, tmp_path, monkeypatch):
    """`head_flip` (heads-only runs): the drawn samples reach the model mirrored, image and depth target together;
    the held-out pass (eval mode) sees them as they are; a mirrored object's splat is the mirrored splat."""
    import pixal3d.training.conditioned as conditioned
    from pixal3d.models.depth_head import DepthHeadConfig, splat_depth

    config = flow_config("structure", tmp_path / "run", vae_runs, max_steps=1, batch_size=8)
    channels = config.flow.encoder.channels
    flow = dataclasses.replace(config.flow, train_flow=False, head_flip=1.0,
                               depth_head=DepthHeadConfig(feature_channels=channels, hidden=8, layers=1))
    run = dataclasses.replace(config, flow=flow, eval_interval=0)
    model, objective, _ = build_model(run, torch.device("cpu"))
    batch = next(iter(ProceduralSource(run.data, batch_size=8)))
    truth = conditioned.depth_target(batch)
    seen = []
    real = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, image, *a, depth=None, **k:
                        seen.append((image, depth)) or real(self, image, *a, depth=depth, **k))
    for training, probability in ((True, 1.0), (False, 1.0), (True, 0.5)):
        run_flow = dataclasses.replace(flow, head_flip=probability)
        objective = conditioned.make_flow_objective(run_flow, {})
        model.train(training)
        seen.clear()
        loss, _ = objective(model, batch, torch.Generator().manual_seed(3))
        assert torch.isfinite(loss)
        image, depth = seen[0]
        mirrored = [torch.equal(image[b], batch["image"][b].flip(-1)) for b in range(8)]
        kept = [torch.equal(image[b], batch["image"][b]) for b in range(8)]
        assert all(m or k for m, k in zip(mirrored, kept))
        for b in range(8):
            assert torch.equal(depth[b], truth[b].flip(-1) if mirrored[b] else truth[b])
        expected = 8 if training and probability == 1.0 else 0 if not training else None
        if expected is not None:
            assert sum(mirrored) == expected
        else:
            assert 0 < sum(mirrored) < 8
    # The geometry behind it: negating x in the volume (camera) frame mirrors the splat left-right (but for the
    # points that round across a pixel edge: 2 of 2,048 pixels here).
    coords, resolution = batch["coords"], batch["resolution"]
    points = (coords[:, 1:].float() + batch["vertex"].float()) / resolution - 0.5
    size = batch["image"].shape[-1] // 4
    flipped = splat_depth(points * torch.tensor([-1.0, 1.0, 1.0]), coords[:, 0], batch["cameras"], size)
    same = (flipped == truth.flip(-1)) | (flipped.isinf() & truth.flip(-1).isinf())
    assert same.float().mean() > 0.995 and (~same).sum() < (truth.isfinite()).sum() / 100
    with pytest.raises(InputError, match="head_flip"):
        dataclasses.replace(config.flow, head_flip=0.5)
