"""`pixal3d generate` with micro random weights: one image with a preview, a folder batch, and bad input -> exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gltf_validator import assert_valid_glb
from PIL import Image

from pixal3d.cli import main

FAST = ["--random-weights", "micro", "--steps", "1", "--faces", "2000", "--texture-size", "256", "--device", "cpu"]


def write_image(path: Path, colour: tuple[int, int, int]) -> Path:
    image = np.zeros((80, 80, 4), dtype=np.uint8)
    image[15:65, 25:55] = (*colour, 255)
    Image.fromarray(image).save(path)
    return path


def test_generate_one_image_with_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_image(tmp_path / "vase.png", (200, 60, 60))
    out = tmp_path / "out" / "vase.glb"
    out.parent.mkdir()
    assert main(["generate", str(src), "-o", str(out), "--fov", "40", "--preview", *FAST]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "fov 40.0 deg, given" in printed
    assert "time: preprocess" in printed and "export" in printed
    assert_valid_glb(out)
    preview = out.with_name("vase_preview.png")
    assert f"wrote {preview}" in printed
    assert Image.open(preview).size == (7 * 256, 256)  # input, input camera, overlay, four orbit views
    assert sorted(p.name for p in out.parent.iterdir()) == ["vase.glb", "vase_preview.png"]


def test_generate_folder_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    write_image(folder / "a.png", (40, 160, 90))
    write_image(folder / "b.png", (40, 60, 200))
    (folder / "notes.txt").write_text("not an image")
    assert main(["generate", str(folder), "-o", str(tmp_path / "results"), *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["a.glb", "b.glb"]
    assert capsys.readouterr().out.count("wrote ") == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fov", "400"], "in degrees and must be in (0, 180)"),
        (["--faces", "0"], "face"),
        (["--resolution", "64"], "decodes at resolution 32 only"),
        (["--device", "tpu"], "--device must be"),
    ],
)
def test_bad_options_exit_2_without_output(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                           message: str) -> None:
    src = write_image(tmp_path / "in.png", (200, 200, 60))
    out = tmp_path / "out.glb"
    assert main(["generate", str(src), "-o", str(out), *FAST, *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_bad_inputs_and_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_image(tmp_path / "in.png", (200, 200, 60))
    cases = [
        (["generate", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.glb"), *FAST], "no such image"),
        (["generate", str(src), str(src), "-o", str(tmp_path / "x.glb"), *FAST], "must be a folder"),
        (["generate", str(src), "-o", str(tmp_path / "x.glb"), "--model", str(src)], "is a file"),
        (["generate", str(src), "-o", str(tmp_path / "x.glb"), "--model", str(tmp_path / "nope")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(src), "-o", str(tmp_path / "x.glb"), "--colour", "red"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["generate", str(src), "-o", str(tmp_path / "x.glb"), "--model", "m", "--random-weights", "micro"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


# ------------------------------------------------------------------------------------ issue 19: the first hour
@pytest.mark.parametrize("name", ["out.stl", "out.txt"])
def test_unsupported_output_suffix_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    src = write_image(tmp_path / "ball.png", (200, 60, 60))
    assert main(["generate", str(src), "-o", str(tmp_path / name), *FAST]) == 2
    err = capsys.readouterr().err
    assert "unsupported output format" in err and ".glb" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ball.png"]


def test_failed_run_leaves_no_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pixal3d.pipeline import Pixal3DPipeline

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("model failure")

    monkeypatch.setattr(Pixal3DPipeline, "__call__", fail)
    src = write_image(tmp_path / "a.png", (200, 60, 60))
    with pytest.raises(RuntimeError, match="model failure"):
        main(["generate", str(src), str(write_image(tmp_path / "b.png", (9, 9, 9))), "-o", str(tmp_path / "res"),
              *FAST])
    assert not (tmp_path / "res").exists()


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load or build a model fails the test."""
    from pixal3d.pipeline import Pixal3DPipeline

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(Pixal3DPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(Pixal3DPipeline, "from_config", refuse)
    monkeypatch.setattr("pixal3d.weights.read_pipeline", refuse)


@pytest.mark.parametrize("model", [[], ["--random-weights", "micro"]])
def test_image_errors_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             no_model_loading: None, model: list[str]) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tiny)
    good = write_image(tmp_path / "good.png", (200, 60, 60))
    for bad, message in ((corrupt, "not an image"), (tiny, "--background none")):
        assert main(["generate", str(good), str(bad), "-o", str(tmp_path / "out"), *model]) == 2
        assert message in capsys.readouterr().err
    assert main(["generate", str(good), "-o", str(tmp_path / "x.glb"), "--faces", "0", *model]) == 2
    assert "face" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.png", "good.png", "tiny.png"]


def test_background_none_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The empty-mask error advises `--background none`; generate takes it (an opaque image = all object)."""
    src = tmp_path / "opaque.png"
    Image.new("RGB", (48, 32), (90, 140, 200)).save(src)
    out = tmp_path / "opaque.glb"
    assert main(["generate", str(src), "-o", str(out), "--background", "none", *FAST]) == 0
    assert out.is_file()


def test_every_suggested_option_exists() -> None:
    """Error messages that name a command-line option name one that `generate` accepts."""
    import re

    import pixal3d.pipeline
    import pixal3d.preprocess
    import pixal3d.stages
    from pixal3d.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for module in (pixal3d.pipeline, pixal3d.preprocess, pixal3d.stages):
        source = Path(module.__file__).read_text()
        for match in re.finditer(r"(pixal3d (\w+) )?(--[a-z][a-z-]+)\b", source):
            command, option = match.group(2) or "generate", match.group(3)  # "pixal3d preprocess --max-pixels"
            assert option in commands[command].format_help(), f"{module.__name__} suggests {match.group(0)!r}"
