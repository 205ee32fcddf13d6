"""The trainer: schedule, exact resume, DDP equivalence, checkpoint sharding and every bad-input error."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import socket
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from pixal3d.cli import main
from pixal3d.config import config_from_dict, config_to_dict, load_config
from pixal3d.errors import InputError
from pixal3d.models import model_classes
from pixal3d.models.structure_vae import StructureVAE, StructureVAEConfig
from pixal3d.training.checkpoint import (
    load_checkpoint,
    load_sharded,
    load_weights,
    read_safetensors,
    save_sharded,
)
from pixal3d.training.config import DataConfig, TrainConfig
from pixal3d.training.loop import get_lr, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MICRO = {"resolution": 8, "latent_resolution": 2, "latent_channels": 2, "channels": [4, 8, 8], "norm_groups": 2}


def micro_config(out_dir: Path, **overrides) -> TrainConfig:
    """A structure-VAE run small enough for tens of CPU steps per second."""
    fields = dict(model="structure_vae", model_config=dict(MICRO), out_dir=str(out_dir),
                  data=DataConfig(resolution=8, coarse_resolution=8, max_primitives=2), batch_size=2, max_steps=20,
                  lr=2e-3, min_lr=1e-4, warmup_steps=3, log_interval=5, checkpoint_interval=7, ema_decay=0.9,
                  progress=False)
    fields.update(overrides)
    return TrainConfig(**fields)


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-5, warmup_steps=10, max_steps=110)
    lrs = [get_lr(s, cfg) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[110] == pytest.approx(1e-5)


def test_resume_is_bitwise_exact(tmp_path):
    straight = train(micro_config(tmp_path / "a"))
    first = train(micro_config(tmp_path / "b"), stop_at=10)
    assert first.step == 10
    resumed = train(micro_config(tmp_path / "b"), resume=True)
    assert resumed.step == straight.step == 20
    a, meta_a = load_checkpoint(straight.checkpoint)
    b, meta_b = load_checkpoint(resumed.checkpoint)
    for group in ("model", "ema", "optimizer"):
        for name, tensor in a[group].items():
            assert torch.equal(tensor, b[group][name]), f"{group}.{name} differs after resume"
    assert meta_a["rng"] == meta_b["rng"] and meta_a["data"] == meta_b["data"] == {"position": 20}
    # The metrics log of the resumed run has one line per logged step, none repeated.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]
    # The logged means too: the checkpoint at step 14 carries the open log window (steps 11-14) over.
    logs = [[{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "eval_s")}
             for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("a", "b")]
    assert logs[0] == logs[1]
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("step_*")) == ["step_00000014",
                                                                                       "step_00000020"]


def test_existing_run_needs_resume(tmp_path):
    train(micro_config(tmp_path, max_steps=1))
    with pytest.raises(InputError, match="--resume"):
        train(micro_config(tmp_path, max_steps=2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, configs: list[dict]) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # One process group for both runs (train() then leaves it alone): re-initialising one on the same port
    # right after destroying it can meet the other rank's stale store.
    torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    for config in configs:
        train(config_from_dict(TrainConfig, config))
    torch.distributed.destroy_process_group()


def test_ddp_two_gloo_ranks_match_one_process(tmp_path):
    """2 ranks x 2 samples give the same update as 1 rank x 4 samples, for a dense and a sparse VAE (and for the
    dense one, 2 ranks x 2 accumulated micro-batches of 1 sample).

    The posterior is deterministic here: each rank draws its own noise, so sampled posteriors would differ.
    """
    runs = {
        "structure": dict(model_config=dict(MICRO, sample_posterior=False)),
        "shape": dict(model="shape_vae", data=DataConfig(resolution=16, coarse_resolution=4, max_primitives=2),
                      model_config={"resolution": 16, "token_resolution": 4, "channels": [8, 8, 16],
                                    "latent_channels": 4, "sample_posterior": False}),
    }
    common = dict(batch_size=4, max_steps=2, ema_decay=0.0)
    references = {name: train(micro_config(tmp_path / f"{name}-one", **kw, **common)) for name, kw in runs.items()}
    configs = [config_to_dict(micro_config(tmp_path / f"{name}-two", **kw, **common)) for name, kw in runs.items()]
    # And 2 ranks x 2 micro-batches of 1 sample (gradients all-reduced once, on the second micro-batch).
    configs.append(config_to_dict(micro_config(tmp_path / "structure-accum", **runs["structure"], **common,
                                               grad_accum_steps=2)))
    mp.spawn(_ddp_worker, args=(2, _free_port(), configs), nprocs=2, join=True)
    for name, reference in [*references.items(), ("structure-accum", references["structure"])]:
        a, _ = load_checkpoint(reference.checkpoint)
        folder = tmp_path / (name if name.endswith("accum") else f"{name}-two")
        b, _ = load_checkpoint(folder / "checkpoints" / "step_00000002")
        worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
        # Accumulated micro-batches of 1 sum the gradients in another order; AdamW's early steps (about
        # lr * sign(g)) make that visible on near-zero gradients (test_grad_accumulation_matches_one_big_batch).
        assert worst <= (1e-4 if name.endswith("accum") else 1e-6), f"{name}: DDP differs from one process by {worst}"
    initial = StructureVAE(StructureVAEConfig(**MICRO)).state_dict()
    a, _ = load_checkpoint(references["structure"].checkpoint)
    assert any(not torch.equal(v, initial[k]) for k, v in a["model"].items())  # the steps did change the weights


def test_checkpoint_shards_stay_under_the_limit(tmp_path):
    limit = 20_000
    tensors = {"big": torch.randn(7000), "small": torch.randn(3, 5), "int": torch.arange(600)}
    index = save_sharded(tensors, tmp_path, "model", limit)
    files = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(files) > 1 and all(f.stat().st_size <= limit for f in files)
    assert len(index["big"]["pieces"]) > 1  # a tensor bigger than a shard is split
    back = load_sharded(tmp_path, index)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    # The same through the trainer: a 0.01 MiB limit forces several files per group.
    result = train(micro_config(tmp_path / "run", max_steps=1, max_shard_mib=0.01))
    files = list(result.checkpoint.glob("*.safetensors"))
    assert len(files) > 3 and all(f.stat().st_size <= 0.01 * 2**20 for f in files)


def test_safetensors_with_a_header_length_starting_0x80_is_not_a_pickle(tmp_path):
    from safetensors.torch import save_file

    for n in range(1, 200):  # find a header whose length's low byte is 0x80 (the pickle magic byte)
        path = tmp_path / "w.safetensors"
        save_file({f"t{i}": torch.zeros(1) for i in range(n)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with low byte 0x80 found")
    assert len(read_safetensors(path)) == n


def test_bad_weights_files_raise_one_clear_error(tmp_path):
    model = StructureVAE(StructureVAEConfig(**MICRO))
    good = tmp_path / "good.safetensors"
    save_file(model.state_dict(), str(good))
    load_weights(model, good)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated or not a safetensors"):
        load_weights(model, truncated)

    pickled = tmp_path / "weights.pt"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(InputError, match="pickle"):
        read_safetensors(pickled)

    other = StructureVAE(StructureVAEConfig(**dict(MICRO, channels=[4, 8, 12])))
    wrong = tmp_path / "wrong.safetensors"
    save_file(other.state_dict(), str(wrong))
    with pytest.raises(InputError, match=r"shape mismatch: .*checkpoint \[12") as err:
        load_weights(model, wrong)
    assert "different model config" in str(err.value)

    with pytest.raises(InputError, match="pickle"):
        train(micro_config(tmp_path / "run", init_weights=str(pickled)))


def test_resume_with_another_model_config_names_the_mismatch(tmp_path):
    train(micro_config(tmp_path, max_steps=1))
    with pytest.raises(InputError, match="shape mismatch"):
        train(micro_config(tmp_path, max_steps=2, model_config=dict(MICRO, latent_channels=3)), resume=True)
    shard = next((tmp_path / "checkpoints" / "step_00000001").glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(InputError, match="truncated"):
        train(micro_config(tmp_path, max_steps=2), resume=True)


def test_bad_configs_raise_one_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "structure_vae", "btach_size": 4}))
    with pytest.raises(InputError, match=r"unknown key\(s\) \['btach_size'\]"):
        load_config(TrainConfig, path)
    path.write_text(json.dumps({"model": "structure_vae", "lr": "fast"}))
    with pytest.raises(InputError, match="'lr' must be a number"):
        load_config(TrainConfig, path)
    with pytest.raises(InputError, match="unknown key"):
        train(micro_config(tmp_path, model_config=dict(MICRO, depth=3)))
    with pytest.raises(InputError, match="unknown model"):
        train(micro_config(tmp_path, model="structure_vea"))
    with pytest.raises(InputError, match="coarse_resolution"):
        train(micro_config(tmp_path, data=DataConfig(resolution=16, coarse_resolution=16)))


def test_shipped_configs_load_strictly():
    paths = sorted(CONFIGS.glob("*_vae_*.json"))
    assert {p.stem for p in paths} >= {"structure_vae_tiny", "shape_vae_tiny", "texture_vae_tiny"}
    for path in paths:
        config = load_config(TrainConfig, path)
        config_cls, _ = model_classes(config.model)
        config_from_dict(config_cls, config.model_config, where=str(path))


def test_cli_train_runs_and_reports_bad_input(tmp_path, capsys):
    config = config_to_dict(micro_config(tmp_path / "run", max_steps=2))
    path = tmp_path / "micro.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path)]) == 0
    assert (tmp_path / "run" / "checkpoints" / "latest.json").is_file()
    assert main(["train", str(path)]) == 2  # exists, no --resume
    config["max_steps"] = 3
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--resume"]) == 0
    path.write_text(json.dumps({**config, "colour": "red"}))
    assert main(["train", str(path)]) == 2
    assert "unknown key(s) ['colour']" in capsys.readouterr().err


def test_cli_init_weights_overrides_the_config(tmp_path, capsys):
    first = train(micro_config(tmp_path / "a", max_steps=3))
    config = config_to_dict(micro_config(tmp_path / "b", max_steps=2, lr=1e-12, min_lr=1e-12, ema_decay=0.0))
    path = tmp_path / "b.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--init-weights", str(tmp_path / "missing")]) == 2
    assert "--init-weights" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["train", str(path), "--init-weights", str(first.checkpoint)]) == 0
    start, _ = load_checkpoint(first.checkpoint)
    after, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000002")
    assert start["model"].keys() == after["model"].keys()
    assert all(torch.allclose(start["model"][k], after["model"][k], atol=1e-6) for k in start["model"])  # lr ~0


def test_flow_objective_on_dense_and_sparse_latents():
    from pixal3d.models.flow import FlowConfig, FlowTransformer
    from pixal3d.training.objectives import flow_loss

    g = torch.Generator().manual_seed(0)
    dense = FlowTransformer(FlowConfig(in_channels=2, resolution=4, patch_size=2, dim=16, depth=1, heads=2,
                                       feature_channels=8))
    loss, _ = flow_loss(dense, {"latent": torch.randn(2, 2, 4, 4, 4)}, g)
    loss.backward()
    assert torch.isfinite(loss) and dense.input.weight.grad is not None
    sparse = FlowTransformer(FlowConfig(tokens="sparse", in_channels=3, cond_channels=2, resolution=8, dim=16,
                                        depth=1, heads=2, feature_channels=8))
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 4], [1, 0, 0, 0]], dtype=torch.int32)
    batch = {"latent_coords": coords, "latent_feats": torch.randn(3, 3), "concat_feats": torch.randn(3, 2)}
    loss, _ = flow_loss(sparse, batch, g)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", ["structure_vae_micro", "shape_vae_micro", "texture_vae_micro"])
def test_micro_configs_train_through_the_loop(tmp_path, name):
    config = load_config(TrainConfig, CONFIGS / f"{name}.json")
    config = dataclasses.replace(config, out_dir=str(tmp_path), max_steps=2, log_interval=1)
    result = train(config)
    assert result.step == 2 and all(math.isfinite(v) for v in result.metrics.values())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    model_config_cls, model_cls = model_classes(config.model)
    model = model_cls(config_from_dict(model_config_cls, config.model_config))
    load_weights(model, tmp_path / "checkpoints", group="ema")


def _step_gradients(config: TrainConfig) -> list[torch.Tensor]:
    """The (clipped) gradients the optimizer sees in the first `train_step` of `config`, on synthetic batches."""
    from pixal3d.training.loop import build_model, configure_optimizer, train_step
    from pixal3d.training.synthetic import SyntheticSource

    torch.manual_seed(config.seed)
    model, objective, _ = build_model(config, torch.device("cpu"))
    optimizer = configure_optimizer(model, config)
    seen = []
    optimizer.step = lambda: seen.extend(p.grad.clone() for p in model.parameters())
    source = SyntheticSource(config.data, config.batch_size // config.grad_accum_steps)
    train_step(model, model, objective, optimizer, None, iter(source), torch.Generator(), config, nullcontext(),
               torch.device("cpu"))
    return seen


def test_grad_accumulation_matches_one_big_batch(tmp_path):
    """2 (or 4) micro-batches give the update of one batch of 4 (deterministic structure VAE, mean losses).

    The gradients agree to float rounding (another summation order). The weights after a few AdamW steps are
    compared more loosely: Adam's first steps move each weight by about lr * sign(gradient), so an element whose
    gradient is near zero turns rounding into a visible fraction of one step (4.8e-5 of lr / 3 = 6.7e-4 seen).
    """
    common = dict(model_config=dict(MICRO, sample_posterior=False), batch_size=4, max_steps=3, ema_decay=0.0,
                  log_interval=1)
    reference = _step_gradients(micro_config(tmp_path, **common))
    for accum in (2, 4):
        grads = _step_gradients(micro_config(tmp_path, grad_accum_steps=accum, **common))
        worst = max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) for a, b in zip(reference, grads,
                                                                                                  strict=True))
        assert worst <= 1e-5, f"{accum} micro-batches: gradient differs by {worst} (relative)"
    one = train(micro_config(tmp_path / "one", **common))
    two = train(micro_config(tmp_path / "two", grad_accum_steps=2, **common))
    a, meta_a = load_checkpoint(one.checkpoint)
    b, meta_b = load_checkpoint(two.checkpoint)
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert worst <= 1e-4, f"accumulated update differs by {worst}"
    assert meta_a["data"] == {"position": 3} and meta_b["data"] == {"position": 6}  # micro-batches drawn
    for key in ("loss", "bce", "kl", "grad_norm"):  # equal-size micro-batches: mean of means = mean
        assert two.metrics[key] == pytest.approx(one.metrics[key], rel=1e-4), key
    initial = StructureVAE(StructureVAEConfig(**MICRO)).state_dict()
    assert any(float((v - initial[k]).abs().max()) > 1e-3 for k, v in a["model"].items())  # the steps moved it
    with pytest.raises(InputError, match="grad_accum_steps"):
        micro_config(tmp_path, batch_size=4, grad_accum_steps=3)


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_optimizer_implementations_give_the_same_update(tmp_path, impl):
    reference = train(micro_config(tmp_path / "default", max_steps=4, ema_decay=0.0))
    other = train(micro_config(tmp_path / impl, max_steps=4, ema_decay=0.0, optimizer_impl=impl))
    a, _ = load_checkpoint(reference.checkpoint)
    b, _ = load_checkpoint(other.checkpoint)
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    assert worst <= 1e-6, f"{impl} AdamW differs from the default by {worst}"


def test_multi_tensor_ema_equals_per_tensor_lerp():
    from pixal3d.training.loop import update_ema

    model = StructureVAE(StructureVAEConfig(**MICRO))
    ema = StructureVAE(StructureVAEConfig(**MICRO))
    expected = {k: v.clone() for k, v in ema.state_dict().items()}
    for (name, e), p in zip(ema.named_parameters(), model.parameters(), strict=True):
        expected[name] = e.detach().clone().lerp_(p.detach(), 1 - 0.9)
    expected.update({name: b.clone() for name, b in model.named_buffers()})
    update_ema(ema, model, 0.9)
    assert all(torch.equal(v, expected[k]) for k, v in ema.state_dict().items())


def test_a_training_step_never_waits_for_the_host(tmp_path, monkeypatch):
    """No `.item()`, `.tolist()`, `bool/int/float(tensor)` in a step: logged values stay on device until a log line.

    With the fused AdamW: the default one reads its per-parameter step counters with `.item()`, which torch keeps
    on the CPU for that reason (no device sync), but which this CPU test cannot tell from a sync.
    """
    from pixal3d.training.loop import LogWindow, build_model, configure_optimizer, train_step
    from pixal3d.training.synthetic import SyntheticSource

    config = micro_config(tmp_path, grad_accum_steps=2, batch_size=4, optimizer_impl="fused")
    torch.manual_seed(0)
    model, objective, _ = build_model(config, torch.device("cpu"))
    optimizer = configure_optimizer(model, config)
    source = SyntheticSource(config.data, 2)
    batches = iter([source.next_batch() for _ in range(4)])
    ema = StructureVAE(StructureVAEConfig(**MICRO)).requires_grad_(False)
    window, calls = LogWindow(), []
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _n=name, _o=original: calls.append(_n) or _o(self, *a))
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        loss, metrics = train_step(model, model, objective, optimizer, ema, batches, generator, config, nullcontext(),
                                   torch.device("cpu"))
        window.add({"loss": loss, **metrics})
    assert calls == [], f"host syncs in the step: {calls}"
    record = window.means(ddp=False)
    assert calls == ["tolist"] and set(record) == {"loss", "bce", "dice", "kl", "iou", "grad_norm"}
