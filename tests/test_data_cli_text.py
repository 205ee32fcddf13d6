"""What `pixal3d data` shows a user (issue 19, items 4 and 6): a progress bar while samples are made, and help
text without internal notes."""

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
