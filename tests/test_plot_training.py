"""scripts/plot_training.py: reading metrics.jsonl into curves, and the PNG (when matplotlib is installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot_training.py"


@pytest.fixture(scope="module")
def plot_training():
    spec = importlib.util.spec_from_file_location("plot_training", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(folder: Path) -> Path:
    records = [{"step": s, "loss": 1.0 / s, "lr": 1e-3, "samples_per_s": 10.0} for s in (10, 20, 30, 40)]
    records[1] |= {"heldout_loss": 0.6, "heldout_voxel_iou": 0.5, "heldout_edge_recall": 0.4}
    records[3] |= {"heldout_loss": 0.3, "heldout_voxel_iou": 0.7, "heldout_edge_recall": 0.6}
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + ["", json.dumps(records[3] | {"loss": 0.02})]  # step 40 again
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_read_metrics_gives_step_ordered_series(plot_training, tmp_path):
    series = plot_training.read_metrics(write_log(tmp_path / "run"))
    assert series["loss"] == [(10, 0.1), (20, 0.05), (30, 1 / 30), (40, 0.02)]  # the later step-40 line wins
    assert series["heldout_loss"] == [(20, 0.6), (40, 0.3)]
    assert plot_training.heldout_metric_keys(series) == ["heldout_voxel_iou", "heldout_edge_recall"]
    assert plot_training.heldout_metric_keys({"heldout_loss": [], "heldout_kl": [], "heldout_bce": []}) == [
        "heldout_bce", "heldout_kl"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        plot_training.read_metrics(tmp_path / "bad")
    assert plot_training.main([str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")]) == 2


def test_plot_writes_a_png(plot_training, tmp_path):
    runs = {"run": plot_training.read_metrics(write_log(tmp_path / "run"))}
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(SystemExit, match="pip install matplotlib"):
            plot_training.plot(runs, tmp_path / "curves.png")
        pytest.skip("matplotlib is not installed: only the install hint was checked")
    assert plot_training.main([str(tmp_path / "run"), "-o", str(tmp_path / "out" / "curves.png")]) == 0
    assert (tmp_path / "out" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
