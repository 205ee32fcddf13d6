"""Crash safety of training checkpoints (issue 17): a trainer SIGKILLed while writing leaves nothing stale behind
after the next start, resume falls back past a corrupt latest checkpoint, a torn metrics line does not block
resume, and a checkpoint index cannot point outside its folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pixal3d.errors import InputError
from pixal3d.training.checkpoint import (
    check_checkpoint,
    load_checkpoint,
    remove_stale_temps,
    resumable_checkpoint,
    save_checkpoint,
)
from pixal3d.training.config import DataConfig, TrainConfig
from pixal3d.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
MICRO = {"resolution": 8, "latent_resolution": 2, "latent_channels": 2, "channels": [4, 8, 8], "norm_groups": 2}

# Run in a child process: resume the run and SIGKILL the process in the middle of the next checkpoint write, at
# the point named by argv[2] ("shard": while writing a shard into the temporary folder; "latest": after the
# latest.json temporary file is written, before its rename). A torn metrics line is appended first, as a kill
# during `_append_metrics` would leave.
CHILD = textwrap.dedent("""
    import json, os, signal, sys, tempfile
    import torch
    torch.set_num_threads(1)
    from pixal3d import tensor_files
    from pixal3d.training import checkpoint
    from pixal3d.training.config import TrainConfig
    from pixal3d.config import config_from_dict

    config = config_from_dict(TrainConfig, json.loads(sys.argv[1]))
    where = sys.argv[2]

    def die():
        with open(os.path.join(config.out_dir, "metrics.jsonl"), "a") as f:
            f.write('{"step": 99, "lo')
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "shard":
        real = tensor_files.save_safetensors
        def save_safetensors(tensors, path, metadata=None):
            real(tensors, path, metadata)
            die()
        tensor_files.save_safetensors = save_safetensors
    else:
        def write_json_atomic(path, data):
            fd, _ = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".latest.json.", suffix=".tmp")
            os.write(fd, b'{"step": ')
            die()
        checkpoint.write_json_atomic = write_json_atomic
    from pixal3d.training.loop import train
    train(config, resume=True)
""")


def micro_config(out_dir: Path, **overrides) -> TrainConfig:
    fields = dict(model="structure_vae", model_config=dict(MICRO), out_dir=str(out_dir),
                  data=DataConfig(resolution=8, coarse_resolution=8, max_primitives=2), batch_size=2, max_steps=24,
                  lr=2e-3, min_lr=1e-4, warmup_steps=3, log_interval=2, checkpoint_interval=6, ema_decay=0.9,
                  progress=False, keep_checkpoints=3)
    fields.update(overrides)
    return TrainConfig(**fields)


def kill_during_checkpoint(config: TrainConfig, where: str) -> None:
    from pixal3d.config import config_to_dict

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config_to_dict(config)), where], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))


def test_killed_writes_leave_no_stale_temps_and_resume_falls_back(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    config = micro_config(run)
    assert train(config, stop_at=6).step == 6
    kill_during_checkpoint(config, "shard")  # dies writing step 12's shards: a .step_00000012.* folder stays
    assert [name[:14] for name in leftovers(run)] == [".step_00000012"]
    kill_during_checkpoint(config, "latest")  # step 12 is in place, latest.json still names step 6
    stale = leftovers(run)
    assert any(n.startswith(".latest.json.") and n.endswith(".tmp") for n in stale), stale
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["path"] == "step_00000006"
    # Corrupt what latest.json names: the newest intact checkpoint (step 12, never pointed to) is used.
    shard = run / "checkpoints" / "step_00000006" / "model-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        result = train(config, resume=True)
    assert result.step == 24
    assert leftovers(run) == []
    assert "falling back" in caplog.text and "interrupted checkpoint write" in caplog.text
    assert "partial last line" in caplog.text
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 25, 2))  # no torn line, no repeated step


def test_resume_falls_back_past_a_damaged_pointer_and_refuses_when_nothing_is_intact(tmp_path: Path) -> None:
    run = tmp_path / "run"
    tensors = {"model": {"w": torch.arange(6.0)}}
    save_checkpoint(run, 1, tensors, {"note": 1}, keep=5)
    save_checkpoint(run, 2, tensors, {"note": 2}, keep=5)
    (run / "checkpoints" / "latest.json").write_text('{"step": 2, "pa')  # torn pointer
    assert resumable_checkpoint(run).name == "step_00000002"
    (run / "checkpoints" / "step_00000002" / "checkpoint.json").write_text("{")
    assert resumable_checkpoint(run).name == "step_00000001"
    (run / "checkpoints" / "step_00000001" / "model-00000.safetensors").unlink()
    with pytest.raises(InputError, match="no intact checkpoint"):
        resumable_checkpoint(run)
    assert resumable_checkpoint(tmp_path / "empty") is None
    (run / "checkpoints" / "latest.json").write_text('{"step": 2, "path": "../../elsewhere"}')
    with pytest.raises(InputError, match="not a step_NNNNNNNN"):
        from pixal3d.training.checkpoint import latest_checkpoint

        latest_checkpoint(run)


@pytest.mark.parametrize("name", ["/etc/hostname", "../model-00000.safetensors", "sub/model-00000.safetensors",
                                  "model-00000.safetensors/../../x"])
def test_index_may_only_name_files_in_its_folder(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(3)}}, {})
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["index"]["model"]["w"]["pieces"] = [[name, "w"]]
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    opened = []
    real_open = open

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    for load in (load_checkpoint, check_checkpoint):
        with pytest.raises(InputError, match="outside its folder"):
            load(folder)
    assert not any("hostname" in p or "model-00000" in p for p in opened), opened


def test_remove_stale_temps_only_touches_crash_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    (root / ".step_00000005.abc").mkdir(parents=True)
    (root / ".step_00000005.abc" / "model-00000.safetensors").write_bytes(b"half")
    (root / ".latest.json.x1.tmp").write_text("{")
    keep = [root / "step_00000004", root / "latest.json", root / "notes.txt"]
    keep[0].mkdir()
    keep[1].write_text("{}")
    keep[2].write_text("mine")
    assert len(remove_stale_temps(tmp_path)) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in keep)
