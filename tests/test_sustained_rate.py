"""scripts/sustained_rate.py: a run's logged samples/s against the bench's isolated step rate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sustained_rate.py"


@pytest.fixture(scope="module")
def sustained():
    spec = importlib.util.spec_from_file_location("sustained_rate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, config: dict, rates: list[float]) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    lines = [{"step": 10 * (i + 1), "loss": 1.0, "samples_per_s": r} for i, r in enumerate(rates)]
    lines.insert(2, {"step": 25, "heldout_loss": 1.0})  # an evaluation line has no rate
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return folder


def test_ratio_of_the_median_logged_rate_to_the_bench(tmp_path, sustained, capsys):
    vae = _run(tmp_path / "vae", {"model": "shape_vae", "batch_size": 32}, [5.0, 5.0, 40.0, 50.0, 60.0])
    flow = _run(tmp_path / "flow", {"model": "flow", "flow": {"stage": "texture"}, "batch_size": 16},
                [1.0, 1.0, 30.0, 30.0, 30.0])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"models": [
        {"model": "shape_vae", "batch_per_gpu": 32, "gpus": 1, "samples_per_s": 100.0},
        {"model": "texture_flow", "batch_per_gpu": 64, "gpus": 1, "samples_per_s": 60.0}]}))
    assert sustained.main([str(vae), str(flow), "--bench", str(bench)]) == 0
    out = capsys.readouterr().out
    assert "| vae | shape_vae | 32 | 50.0, 40.0 | 100.0 (32) | 50 % |" in out
    assert "| flow | texture_flow | 16 | 30.0, 30.0 | 60.0 (64) (other batch) | 50 % |" in out
    missing = _run(tmp_path / "missing", {"model": "structure_vae", "batch_size": 8}, [1.0, 1.0, 2.0])
    assert sustained.main([str(missing), "--bench", str(bench)]) == 1
    assert "not in the bench" in capsys.readouterr().out
