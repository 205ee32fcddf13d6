"""bench/train_bench.py on the CPU at micro size: the MFU table, the batch overrides and the profiler mode."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_overrides(bench):
    assert bench.parse_batches(["64", "shape_vae=16"]) == {"*": 64, "shape_vae": 16}
    with pytest.raises(SystemExit, match="unknown model 'shape'"):
        bench.parse_batches(["shape=16"])
    with pytest.raises(SystemExit, match="positive integer"):
        bench.parse_batches(["structure_vae=0"])


def test_micro_bench_prints_the_mfu_table_and_a_profile(bench, tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["train_bench.py", "--device", "cpu", "--size", "micro", "--models",
                                      "structure_vae", "--steps", "1", "--warmup", "0", "--pool", "1", "--batch", "1",
                                      "--optimizer-impl", "fused", "--profile", "--profile-steps", "1", "--top", "3",
                                      "--peak-tflops", "1", "--json", str(out)])
    bench.main()
    text = capsys.readouterr().out
    assert "| model | batch | ms/step | GFLOP/step | TFLOP/s | MFU % | peak GiB | samples/s |" in text
    assert "### structure_vae: profile of 1 steps" in text and "Self CPU" in text
    assert "tensor value reads (a host sync each on a GPU) per step: 0" in text  # the dense step reads none
    row = json.loads(out.read_text())["models"][0]
    assert row["batch_per_gpu"] == 1 and row["optimizer_impl"] == "fused" and row["gflop_per_step"] > 0
    assert row["mfu_pct"] == pytest.approx(100 * row["tflops"] / 1.0)
