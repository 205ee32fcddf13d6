"""Atomic writes: whole-or-nothing files with the permissions a plain `open()` gives (issue 19)."""

from __future__ import annotations

import os
import stat

import pytest

from pixal3d.atomic import atomic_path, current_umask, write_bytes_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_mode_follows_umask(tmp_path, umask_022) -> None:
    target = tmp_path / "a.bin"
    write_bytes_atomic(target, b"x")
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as f:
        f.write(b"x")
    assert _mode(target) == _mode(plain) == 0o644


def test_atomic_path_mode_and_umask_077(tmp_path) -> None:
    old = os.umask(0o077)
    try:
        assert current_umask() == 0o077
        with atomic_path(tmp_path / "b.png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "b.png") == 0o600


def test_existing_file_keeps_its_mode(tmp_path, umask_022) -> None:
    target = tmp_path / "c.json"
    target.write_text("{}")
    os.chmod(target, 0o640)
    write_bytes_atomic(target, b"[]")
    assert _mode(target) == 0o640 and target.read_bytes() == b"[]"


def test_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "d.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_cli_output_is_not_owner_only(tmp_path) -> None:
    """`pixal3d preprocess` run under umask 022 writes a -rw-r--r-- PNG, like any other tool."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = 255
    Image.fromarray(rgba).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    subprocess.run([sys.executable, "-m", "pixal3d", "preprocess", str(tmp_path / "in.png"), "-o", str(out),
                    "--size", "16"], check=True, capture_output=True, preexec_fn=lambda: os.umask(0o022))
    assert _mode(out) == 0o644


def test_saved_pipeline_folder_is_not_owner_only(tmp_path, umask_022) -> None:
    """`save_pretrained` fills a temporary folder and renames it: the result is drwxr-xr-x like `mkdir`'s."""
    from pixal3d import Pixal3DPipeline

    folder = Pixal3DPipeline.from_config("micro").save_pretrained(tmp_path / "pipe")
    assert _mode(folder) == 0o755
    assert {_mode(p) for p in folder.rglob("*") if p.is_file()} == {0o644}


def test_checkpoint_and_shard_files_are_not_owner_only(tmp_path, umask_022) -> None:
    """safetensors' `save_file` creates 0o600 files; checkpoints and sample shards get a plain open()'s mode."""
    import torch

    from pixal3d.training.checkpoint import save_checkpoint

    folder = save_checkpoint(tmp_path / "run", 3, {"model": {"w": torch.zeros(4)}}, {"config": {}})
    assert _mode(folder) == 0o755
    assert {_mode(p) for p in (tmp_path / "run").rglob("*") if p.is_file()} == {0o644}
