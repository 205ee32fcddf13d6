"""`pixal3d eval`: a held-out set -> `metrics.json` + `report.md` with images (DESIGN section 10).

`evaluate(pipe, assets, output, options)` runs `pixal3d.eval.runner.evaluate_asset` on every asset, then writes
into `output/`:
- `metrics.json`: the settings, per asset every view x run's metrics and their per-asset means, and the
  aggregate (mean, median, min, max over all views of all assets) per run key. Undefined values are `null`.
  A run key is a FoV mode of the full cascade ("true", "estimated") or an oracle variant's name
  (`EvalOptions.runs`, `pixal3d.eval.oracles`).
- `report.md`: the aggregate table, then one section per asset, worst first (lowest mean F-score@0.05 of the
  first run key), each with a strip image: input | our render | ground-truth render | error map.
- `images/<asset_id>_<key>.png`: those strips (first view of each asset).
Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pixal3d.atomic import write_json_atomic, write_text_atomic
from pixal3d.bench import machine_info
from pixal3d.errors import InputError
from pixal3d.eval.oracles import check_pipeline
from pixal3d.eval.runner import FSCORE_THRESHOLDS, EvalOptions, HeldOutAsset, evaluate_asset
from pixal3d.preprocess import save_png

if TYPE_CHECKING:
    from pixal3d.pipeline import Pixal3DPipeline

logger = logging.getLogger(__name__)

SORT_KEY = "fscore@0.05"
"""Metric that orders the report, worst (lowest) first."""
TILE = 128
"""Side of each image tile in the report, pixels."""
SUMMARY_KEYS = (
    "chamfer_l1", *(f"fscore@{t:g}" for t in FSCORE_THRESHOLDS), "volume_iou_64", "silhouette_iou", "input_psnr",
    "input_ssim", "novel_psnr", "novel_ssim", "base_color_psnr", "base_color_error", "components",
    "boundary_edge_ratio", "components_raw", "boundary_edge_ratio_raw", "coarse_iou", "fov_error_deg",
    "depth_absrel", "depth_delta1", "time_pipeline_s", "peak_memory_mb",
)
"""Rows of the report's tables (every numeric metric is in metrics.json)."""
MEDIAN_KEYS = ("components", "boundary_edge_ratio", "components_raw", "boundary_edge_ratio_raw")
"""Metrics whose aggregate row shows the median over runs (a few shattered meshes would dominate a mean)."""


def evaluate(
    pipe: Pixal3DPipeline,
    assets: Iterable[HeldOutAsset],
    output: str | os.PathLike,
    options: EvalOptions | None = None,
    description: dict[str, object] | None = None,
) -> dict[str, object]:
    """Evaluate every asset and write `metrics.json`, `report.md` and `images/` into `output` (created).

    Args:
        pipe: the pipeline, on its device.
        assets: held-out assets (`runner.procedural_assets`, `runner.folder_assets`).
        output: the report folder.
        options: what to measure (`EvalOptions()` by default).
        description: free-form facts stored under `"run"` in metrics.json (model, command).

    Returns:
        The metrics.json content.
    """
    options = options or EvalOptions()
    check_pipeline(pipe, options.variants)
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)
    results = []
    for held in assets:
        logger.info("evaluating %s (%s)", held.asset_id, held.source)
        result = evaluate_asset(pipe, held, options)
        result["image_files"] = write_images(result.pop("images"), held.asset_id, output / "images")
        result["mean"] = {key: mean_metrics([v["modes"][key] for v in result["views"]])
                          for key in options.run_keys()}
        results.append(result)
    run = {**(description or {}), "machine": machine_info(pipe.device)}
    options_record = {**vars(options), "fov_range_deg": [math.degrees(x) for x in options.fov_range]}
    del options_record["fov_range"]
    return write_report(output, run, options_record, results, options)


def write_report(output: Path, run: dict[str, object], options_record: dict[str, object],
                 results: list[dict[str, object]], options: EvalOptions) -> dict[str, object]:
    """Aggregate per-asset results and write `metrics.json` and `report.md` (atomically) into `output`."""
    data = {
        "run": run,
        "options": options_record,
        "aggregate": {key: aggregate([v["modes"][key] for r in results for v in r["views"]])
                      for key in options.run_keys()},
        "assets": results,
    }
    write_json_atomic(output / "metrics.json", data)
    write_text_atomic(output / "report.md", markdown_report(data, options))
    logger.info("wrote %s and %s", output / "metrics.json", output / "report.md")
    return data


def merge_reports(folders: Iterable[str | os.PathLike], output: str | os.PathLike) -> dict[str, object]:
    """One report from several `pixal3d eval` folders of the same model and options (e.g. seed ranges run as
    separate, time-limited jobs): assets concatenated, aggregates recomputed, images copied. An image a folder
    lacks (only metrics.json brought back from a remote machine) is left out of the merged report with a warning.

    Raises `InputError` when a folder has no metrics.json, the options differ, or an asset appears twice.
    """
    output = Path(output)
    parts = []
    for folder in folders:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            raise InputError(f"{folder} holds no metrics.json; pass folders written by pixal3d eval")
        parts.append((Path(folder), json.loads(path.read_text())))
    if not parts:
        raise InputError("merge: give at least one report folder")
    first = parts[0][1]
    for folder, data in parts[1:]:
        if data["options"] != first["options"]:
            raise InputError(f"{folder} was evaluated with other options than {parts[0][0]}; merge like with like")
    results, seen = [], set()
    (output / "images").mkdir(parents=True, exist_ok=True)
    for folder, data in parts:
        for result in data["assets"]:
            if result["asset_id"] in seen:
                raise InputError(f"asset {result['asset_id']} appears in more than one folder ({folder})")
            seen.add(result["asset_id"])
            kept = {}
            for mode, rel in result.get("image_files", {}).items():
                if not (folder / rel).is_file():
                    logger.warning("merge: %s has no %s; its image is left out of the report", folder, rel)
                    continue
                if (folder / rel).resolve() != (output / rel).resolve():
                    shutil.copyfile(folder / rel, output / rel)
                kept[mode] = rel
            results.append({**result, "image_files": kept})
    record = dict(first["options"])
    fields = {k: v for k, v in record.items() if k not in ("fov_modes", "fov_range_deg", "variants")}
    options = EvalOptions(**fields, fov_modes=tuple(record["fov_modes"]),
                          fov_range=tuple(math.radians(x) for x in record["fov_range_deg"]),
                          variants=tuple(record.get("variants", ("full",))))
    run = dict(first["run"])
    run["merged_from"] = [str(folder) for folder, _ in parts]
    return write_report(output, run, record, results, options)


# ------------------------------------------------------------------------------------------------ statistics
def _numbers(rows: list[dict[str, object]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def _metric_keys(rows: list[dict[str, object]]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def mean_metrics(rows: list[dict[str, object]]) -> dict[str, float | None]:
    """Per-key mean of the numeric metrics over runs (None where no run defines it); `failures` counts."""
    means: dict[str, float | None] = {k: statistics.fmean(_numbers(rows, k)) for k in _metric_keys(rows)}
    means["failures"] = sum("failure" in r for r in rows)
    return means


def aggregate(rows: list[dict[str, object]]) -> dict[str, object]:
    """Mean, median, min, max and count of every numeric metric over runs; `failures` counts the failed runs."""
    stats: dict[str, object] = {}
    for key in _metric_keys(rows):
        x = _numbers(rows, key)
        stats[key] = {"mean": statistics.fmean(x), "median": statistics.median(x), "min": min(x), "max": max(x),
                      "count": len(x)}
    stats["runs"] = len(rows)
    stats["failures"] = sum("failure" in r for r in rows)
    return stats


# ------------------------------------------------------------------------------------------------ files
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_images(images: dict[str, dict[str, np.ndarray]], asset_id: str, folder: Path) -> dict[str, str]:
    """One strip PNG per FoV mode (input | ours | ground truth | error); returns mode -> path relative to the
    report folder."""
    files = {}
    for mode, tiles in images.items():
        if not tiles:
            continue
        row = [Image.fromarray(tiles[k]).resize((TILE, TILE), Image.Resampling.BILINEAR)
               for k in ("input", "prediction", "ground_truth", "error")]
        strip = Image.fromarray(np.concatenate([np.asarray(t) for t in row], axis=1))
        name = f"{_safe(asset_id)}_{mode}.png"
        save_png(strip, folder / name)
        files[mode] = f"images/{name}"
    return files


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _statistic(key: str) -> str:
    return "median" if key in MEDIAN_KEYS else "mean"


def markdown_report(data: dict[str, object], options: EvalOptions) -> str:
    """The report's Markdown: run facts, aggregate table per run key, per-asset sections worst first."""
    modes = options.run_keys()
    run = data["run"]
    lines = ["# pixal3d evaluation", ""]
    lines += [f"- {k}: `{v}`" for k, v in run.items() if k != "machine"]
    lines += [f"- machine: {run['machine']['processor']}, {run['machine']['device']}, torch {run['machine']['torch']}",
              f"- {len(data['assets'])} assets x {options.views} views; runs: {', '.join(modes)}; "
              f"{options.samples} surface samples; renders {options.image_size} px",
              "- metrics: docs/evaluation.md", "",
              f"## Aggregate (mean over all views; median for {', '.join(MEDIAN_KEYS)})", ""]
    lines += ["| metric | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for key in SUMMARY_KEYS:
        cells = [_cell(data["aggregate"][m].get(key, {}).get(_statistic(key))) for m in modes]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("| failed runs | " + " | ".join(str(data["aggregate"][m]["failures"]) for m in modes) + " |")
    lines += ["", f"## Assets, worst first (by {SORT_KEY}, {modes[0]})", ""]

    def score(result: dict[str, object]) -> float:
        value = result["mean"][modes[0]].get(SORT_KEY)
        return -1.0 if value is None else float(value)

    for result in sorted(data["assets"], key=score):
        fovs = ", ".join(f"{v['fov_true_deg']:.1f}" for v in result["views"])
        lines += [f"### {result['asset_id']}", "", f"Source: {result['source']}; true FoV per view: {fovs} deg.", ""]
        lines += ["| metric | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
        for key in (*SUMMARY_KEYS, "failures"):
            lines.append(f"| {key} | " + " | ".join(_cell(result["mean"][m].get(key)) for m in modes) + " |")
        lines.append("")
        for mode, path in result["image_files"].items():
            lines += [f"{mode}, view 0: input | ours | ground truth | error (x4)", "",
                      f"![{result['asset_id']} {mode}]({path})", ""]
    return "\n".join(lines)
