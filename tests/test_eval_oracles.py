"""`pixal3d eval --oracle` and scripts/ceilings.py (issue 15) with micro64 random weights on tiny sizes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

from pixal3d.cli import main
from pixal3d.errors import InputError
from pixal3d.eval.ceilings import COLUMNS, largest_losses, link_losses
from pixal3d.eval.oracles import VARIANTS
from pixal3d.eval.runner import EvalOptions

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--random-weights", "micro64", "--device", "cpu", "--samples", "4000", "--image-size", "48", "--views", "1"]
SCORED = ("fscore@0.02", "fscore@0.05", "volume_iou_64", "silhouette_iou", "base_color_psnr", "components",
          "boundary_edge_ratio", "components_raw", "boundary_edge_ratio_raw", "coarse_iou", "coarse_precision",
          "coarse_recall")
"""Metrics every variant reports (defined for every run that made a mesh)."""


def test_every_variant_on_one_procedural_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "ceilings"
    assert main(["eval", "--procedural", "3:4", "--oracle", "all", "--fov-mode", "true", "-o", str(output),
                 *TINY]) == 0
    printed = capsys.readouterr().out
    assert "ceilings.md" in printed and "gt: 1 runs, 0 failed" in printed
    data = json.loads((output / "metrics.json").read_text())
    keys = [v for v in VARIANTS if v != "full"] + ["true"]
    assert list(data["aggregate"]) == keys
    runs = data["assets"][0]["views"][0]["modes"]
    for key in keys:
        assert "failure" not in runs[key], (key, runs[key])
        for metric in SCORED:
            assert isinstance(runs[key][metric], (int, float)) and math.isfinite(runs[key][metric]), (key, metric)
    # The representation's ceiling: the ground-truth voxels, meshed and exported, are the asset.
    gt = runs["gt"]
    assert gt["fscore@0.02"] > 0.95 and gt["fscore@0.05"] > 0.99 and gt["volume_iou_64"] > 0.95
    assert gt["coarse_iou"] == 1.0 and gt["components"] >= 1 and gt["boundary_edge_ratio"] < 0.05
    # The texture VAE changes colours only; vae-shape and gt-shape share their geometry (the shape VAE's decode).
    assert runs["vae-texture"]["fscore@0.02"] == gt["fscore@0.02"]
    assert runs["gt-shape"]["chamfer_l1"] == runs["vae-shape"]["chamfer_l1"]
    assert runs["gt-structure"]["coarse_iou"] > 0.9  # decoded on the true coarse voxels
    assert runs["true"]["fov_error_deg"] == 0.0
    table = json.loads((output / "ceilings.json").read_text())
    (rows,) = [t["rows"] for t in table["sets"].values()]
    assert list(rows) == keys and all(set(COLUMNS) <= set(row) for row in rows.values())
    report = (output / "ceilings.md").read_text()
    assert "| gt |" in report and "| full (true FoV) |" in report and "Largest loss" in report
    # A merged oracle report gets its table too.
    assert main(["eval", "--merge", str(output), "-o", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "ceilings.md").is_file()


def test_oracles_refuse_a_resolution_the_voxeliser_cannot_make(tmp_path: Path) -> None:
    argv = ["eval", "--procedural", "3:4", "--oracle", "gt", "-o", str(tmp_path / "r"), *TINY]
    argv[argv.index("micro64")] = "micro"  # decodes at R_hr = 32
    assert main(argv) == 2
    with pytest.raises(InputError, match="variants"):
        EvalOptions(variants=("gt", "oracle-of-delphi"))


def test_link_losses_pick_the_largest_drop() -> None:
    row = dict.fromkeys(COLUMNS, 1.0)
    rows = {"gt": row, "vae-shape": {**row, "fscore@0.02": 0.6}, "gt-shape": {**row, "fscore@0.02": 0.6},
            "gt-structure": {**row, "fscore@0.02": 0.5},
            "true": {**row, "fscore@0.02": 0.05, "coarse_iou": None}}
    losses = link_losses(rows)
    assert set(losses) == {"shape VAE", "stage 3 (texture flow)", "stage 2 (shape flow)", "stage 1 (structure flow)"}
    assert losses["stage 2 (shape flow)"]["fscore@0.02"] == pytest.approx(0.1)
    assert losses["stage 1 (structure flow)"]["fscore@0.02"] == pytest.approx(0.45)
    assert losses["stage 1 (structure flow)"]["coarse_iou"] is None
    largest = largest_losses(losses)
    assert largest["fscore@0.02"] == "stage 1 (structure flow)"


def test_ceilings_script_runs_chunks_and_a_folder_then_resumes(tmp_path: Path) -> None:
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    box.visual.face_colors = (200, 60, 60, 255)
    box.export(meshes / "box.glb")
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "scripts" / "ceilings.py"), "--random-weights", "micro64", "--device",
               "cpu", "--procedural", "3:5", "--chunk", "1", "--lanes", "2", "--data", str(meshes), "-o", str(out),
               "--samples", "2000", "--image-size", "48"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((out / "ceilings.json").read_text())
    assert len(table["sets"]) == 2
    options = json.loads((out / "procedural" / "metrics.json").read_text())["options"]
    assert options["variants"] == list(VARIANTS) and not options["silhouette"] and not options["image_texels"]
    assert [r["asset_id"] for r in json.loads((out / "dev" / "metrics.json").read_text())["assets"]] == ["mesh-box"]
    # A second call finds every chunk finished and only rebuilds the table.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 of 3 chunks to run" in again.stderr


def test_oracle_stages_run_depth_lift_flows_with_the_depth_heads_map() -> None:
    """`gt-structure` / `gt-shape` sample the flows on the condition the pipeline builds: with `depth_lift` flows
    (the shipped model's since fidelity round 2) it carries the depth head's map, and the shape flow runs on it."""
    import dataclasses
    from types import SimpleNamespace

    import torch

    from pixal3d.eval.oracles import condition
    from pixal3d.pipeline import Pixal3DPipeline
    from pixal3d.presets import micro_config
    from pixal3d.sparse import SparseTensor

    config = micro_config()
    for name in ("structure_flow", "shape_flow", "texture_flow"):
        setattr(config, name, dataclasses.replace(getattr(config, name), depth_lift=True))
    pipe = Pixal3DPipeline.from_config(config)
    image = torch.zeros(64, 64, 4, dtype=torch.uint8)
    image[16:48, 20:44] = torch.tensor([200, 40, 40, 255], dtype=torch.uint8)
    cond = condition(pipe, SimpleNamespace(image=image, fov=0.7))
    assert cond.depth is not None and torch.isfinite(cond.depth).all() and bool((cond.depth > 0).all())
    flow = pipe.shape_flow
    ijk = torch.tensor([[3, 3, 3], [3, 3, 4], [4, 3, 3]], dtype=torch.int32)
    x = SparseTensor(torch.cat([torch.zeros_like(ijk[:, :1]), ijk], 1), torch.randn(3, flow.config.in_channels),
                     flow.config.resolution)
    with torch.no_grad():
        out = flow(x, torch.tensor([0.5]), cond)
    assert torch.isfinite(out.feats).all()
