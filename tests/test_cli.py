"""The `pixal3d` command: --help, --version, and `preprocess` end to end (in-process and as a console script)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixal3d import __version__
from pixal3d.cli import main


def _write_disc(path: Path) -> None:
    yy, xx = np.mgrid[:80, :100]
    rgba = np.zeros((80, 100, 4), np.uint8)
    rgba[(xx - 60) ** 2 + (yy - 40) ** 2 < 20**2] = (30, 200, 60, 255)
    Image.fromarray(rgba).save(path)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "preprocess" in capsys.readouterr().out


def test_preprocess_writes_the_crop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    _write_disc(src)
    assert main(["preprocess", str(src), "-o", str(out), "--size", "64"]) == 0
    image = Image.open(out)
    assert image.size == (64, 64) and image.mode == "RGBA"
    assert str(out) in capsys.readouterr().out


def test_preprocess_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["preprocess", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "in.png" in err and "not an image" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_console_script_is_installed(tmp_path: Path) -> None:
    exe = shutil.which("pixal3d") or str(Path(sys.executable).with_name("pixal3d"))
    if not Path(exe).exists():
        pytest.fail("the `pixal3d` console script is not installed: run `pip install -e .`")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"pixal3d {__version__}"
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    _write_disc(src)
    subprocess.run([exe, "preprocess", str(src), "-o", str(out), "--size", "32"], check=True, capture_output=True)
    assert Image.open(out).size == (32, 32)
