"""`pixal3d eval` and `pixal3d bench` end to end with micro random weights on tiny sizes."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import trimesh

from pixal3d.bench import STAGES
from pixal3d.cli import main
from pixal3d.eval.report import SUMMARY_KEYS

TINY = ["--random-weights", "micro", "--device", "cpu"]
DEFINED = [k for k in SUMMARY_KEYS if k != "peak_memory_mb"] + ["time_structure_s", "fov_used_deg"]


def check_metrics(data: dict, modes: list[str], assets: int, views: int) -> None:
    assert sorted(data["aggregate"]) == sorted(modes)
    assert len(data["assets"]) == assets
    for result in data["assets"]:
        assert len(result["views"]) == views
        for view in result["views"]:
            assert 20.0 <= view["fov_true_deg"] <= 60.0
            for mode in modes:
                metrics = view["modes"][mode]
                assert "failure" not in metrics
                for key in DEFINED:
                    assert math.isfinite(metrics[key]), (key, metrics[key])
                assert 0.0 <= metrics["fscore@0.05"] <= 1.0 and 0.0 <= metrics["volume_iou_64"] <= 1.0
                assert metrics["peak_memory_mb"] > 0
        assert set(result["mean"]) == set(modes)
    for mode in modes:
        for key in DEFINED:
            stats = data["aggregate"][mode][key]
            assert all(math.isfinite(stats[s]) for s in ("mean", "median", "min", "max")), key
    assert data["aggregate"]["true"]["fov_error_deg"]["max"] == 0.0


def check_report(output: Path, data: dict) -> None:
    report = (output / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert links and all((output / link).is_file() for link in links)
    assert len(links) == sum(len(r["image_files"]) for r in data["assets"])
    # Worst first: the asset sections follow increasing F-score@0.05 of the first mode.
    order = [line[4:] for line in report.splitlines() if line.startswith("### ")]
    scores = {r["asset_id"]: r["mean"]["true"]["fscore@0.05"] for r in data["assets"]}
    assert [scores[a] for a in order] == sorted(scores.values())


def test_eval_procedural_both_fov_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "report"
    argv = ["eval", "--procedural", "3:5", "--views", "1", "-o", str(output), "--samples", "2000",
            "--image-size", "48", *TINY]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    data = json.loads((output / "metrics.json").read_text())
    check_metrics(data, ["true", "estimated"], assets=2, views=1)
    assert data["options"]["samples"] == 2000 and data["options"]["fov_range_deg"] == pytest.approx([20, 60])
    check_report(output, data)


def test_eval_mesh_folder(tmp_path: Path) -> None:
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.3))
    box.visual.face_colors = (200, 60, 60, 255)
    box.export(meshes / "box.glb")
    trimesh.creation.icosphere(subdivisions=2, radius=0.3).export(meshes / "ball.obj")
    (meshes / "broken.glb").write_bytes(b"glTF but not really")  # skipped with a warning, the run goes on
    output = tmp_path / "report"
    argv = ["eval", "--data", str(meshes), "--views", "1", "-o", str(output), "--samples", "2000",
            "--image-size", "48", "--fov-mode", "true", *TINY]
    assert main(argv) == 0
    data = json.loads((output / "metrics.json").read_text())
    check_metrics(data, ["true"], assets=2, views=1)
    assert sorted(r["asset_id"] for r in data["assets"]) == ["mesh-ball", "mesh-box"]
    check_report(output, data)


def test_eval_merge_of_two_seed_ranges(tmp_path: Path) -> None:
    parts = []
    for seeds in ("3:4", "4:5"):
        parts.append(tmp_path / seeds.replace(":", "_"))
        argv = ["eval", "--procedural", seeds, "--views", "1", "-o", str(parts[-1]), "--samples", "2000",
                "--image-size", "48", "--fov-mode", "true", *TINY]
        assert main(argv) == 0
    merged = tmp_path / "merged"
    assert main(["eval", "--merge", *map(str, parts), "-o", str(merged)]) == 0
    data = json.loads((merged / "metrics.json").read_text())
    check_metrics(data, ["true"], assets=2, views=1)
    check_report(merged, data)
    singles = [json.loads((p / "metrics.json").read_text())["aggregate"]["true"]["chamfer_l1"]["mean"] for p in parts]
    assert data["aggregate"]["true"]["chamfer_l1"]["mean"] == pytest.approx(sum(singles) / 2)
    assert main(["eval", "--merge", str(parts[0]), str(parts[0]), "-o", str(tmp_path / "twice")]) == 2
    # Only metrics.json brought back from one part: its metrics merge, its image is left out of the report.
    shutil.rmtree(parts[1] / "images")
    bare = tmp_path / "bare"
    assert main(["eval", "--merge", *map(str, parts), "-o", str(bare)]) == 0
    data = json.loads((bare / "metrics.json").read_text())
    assert len(data["assets"]) == 2 and [len(r["image_files"]) for r in data["assets"]] == [1, 0]
    assert data["aggregate"]["true"]["chamfer_l1"]["mean"] == pytest.approx(sum(singles) / 2)
    check_report(bare, data)


def test_eval_rejects_a_bad_seed_range(tmp_path: Path) -> None:
    assert main(["eval", "--procedural", "5:2", "-o", str(tmp_path / "r"), *TINY]) == 2


def test_bench_micro_writes_every_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", *TINY, "--runs", "2", "--export", "--faces", "2000", "--texture-size", "256", "-o", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert list(data["stages"]) == list(STAGES)
    for name in STAGES:
        assert f"| {name} |" in table
        stage = data["stages"][name]
        assert len(stage["runs_s"]) == 2 and 0 <= stage["min_s"] <= stage["median_s"]
    assert data["total_median_s"] > 0 and data["peak_memory_mb"] > 0
    assert data["machine"]["device"] == "cpu" and data["model"] == "random micro"
    # The export's sub-steps (CPU path: no GPU here, so --export-device auto takes it).
    steps = data["export_steps"]
    assert {"clean-up + simplify", "unwrap (xatlas)", "write (encode + file)"} <= set(steps)
    assert "| export: unwrap (xatlas) |" in table
    floor = data["floor"]
    assert floor["model_flops"] > 0 and floor["matmul_flops_per_s"] > 0 and floor["export_bytes"] > 0
    assert "floor:" in table


def test_eval_with_the_rendered_depth_leaves_out_the_depth_head_metrics(tmp_path: Path) -> None:
    """`--depth-source render`: the pipeline takes the ground truth's depth (the head's error removed), so the
    depth-head metrics, which would score the render against itself, are not reported."""
    reports = {}
    for source in ("head", "render"):
        output = tmp_path / source
        argv = ["eval", "--procedural", "3:4", "--views", "1", "-o", str(output), "--samples", "2000",
                "--image-size", "48", "--fov-mode", "true", "--depth-source", source, *TINY]
        assert main(argv) == 0
        reports[source] = json.loads((output / "metrics.json").read_text())
    head, render = (reports[s]["assets"][0]["views"][0]["modes"]["true"] for s in ("head", "render"))
    assert "depth_absrel" in head and "depth_absrel" not in render
    assert reports["render"]["options"]["depth_source"] == "render"
    assert math.isfinite(render["silhouette_iou"]) and math.isfinite(render["fscore@0.05"])
