"""What the CLI shows a user (issue 19, items 4 and 6): a progress bar while `data generate` makes samples, help
text without internal notes, rounded `eval` figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pixal3d.cli import main


def test_data_generate_shows_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar counts samples, with samples/s and the ETA; sample making is faked (this tests the reporting)."""
    from pixal3d.data import shards

    def fake_units(job: tuple) -> list[dict]:
        return [{"unit": u.unit_id, "status": "written", "shard": f"{u.unit_id}.safetensors",
                 "samples": [f"{u.asset_id}-v{v}" for v in range(*u.views)], "skipped": []} for u in job[0]]

    monkeypatch.setattr(shards, "_run_units", fake_units)
    assert main(["data", "generate", "--procedural", "3", "--views", "2", "--size", "32", "--resolution", "64",
                 "--coarse", "16", "-o", str(tmp_path / "data")]) == 0
    out, err = capsys.readouterr()
    bar = err.replace("\r", "\n")
    assert re.search(r"samples: 100%.* 6/6 \[\d\d:\d\d<00:00, *[\d.]+ ?sample/s, 6 written, 0 skipped", bar), err
    assert "6 samples in 3 units written" in out


def test_data_help_has_no_internal_notes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    text = capsys.readouterr().out
    assert "_add_data" not in text and "DATA_COMMANDS" not in text and "procedural" in text


def test_no_help_text_shows_internal_names() -> None:
    import argparse

    from pixal3d.cli import build_parser

    def helps(parser: argparse.ArgumentParser) -> list[str]:
        texts = [parser.format_help()]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    texts += helps(sub)
        return texts

    texts = helps(build_parser())
    assert len(texts) > 10
    for text in texts:
        assert not re.search(r"_add_|_run_|COMMANDS|TODO", text), text


def test_eval_prints_rounded_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from pixal3d.cli.eval import _print_aggregate

    _print_aggregate({"aggregate": {
        "true": {"runs": 4, "failures": 0, "fscore@0.05": {"mean": 0.5324786901473999},
                 "chamfer_l1": {"mean": 0.041234567}},
        "estimated": {"runs": 4, "failures": 4},
    }})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["true FoV: 4 runs, 0 failed; mean F-score@0.05 0.532, Chamfer-L1 0.0412",
                     "estimated FoV: 4 runs, 4 failed; mean F-score@0.05 n/a, Chamfer-L1 n/a"]
