"""Tables for docs/results.md from `pixal3d eval` reports (the default model and the cross-attention ablation).

    python scripts/results_tables.py --main REPORT --cross REPORT --dev REPORT --out docs/results

Prints Markdown tables (aggregate metrics, the paired ablation on the assets both reports share, the five worst
procedural cases) and copies the worst cases' image strips and the reports' metrics.json into --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

KEYS = [("fscore@0.05", "F-score@0.05", "{:.3f}"), ("fscore@0.02", "F-score@0.02", "{:.3f}"),
        ("chamfer_l1", "Chamfer-L1", "{:.4f}"), ("volume_iou_64", "volume IoU 64^3", "{:.3f}"),
        ("silhouette_iou", "silhouette IoU", "{:.3f}"), ("base_color_psnr", "input-view base-colour PSNR (dB)",
                                                          "{:.2f}"),
        ("input_psnr", "input-view PSNR (dB)", "{:.2f}"), ("novel_psnr", "novel-view PSNR (dB)", "{:.2f}"),
        ("base_color_error", "base-colour error", "{:.3f}"), ("time_pipeline_s", "pipeline time (s)", "{:.2f}")]
MEDIAN_KEYS = [("components", "exported mesh: connected components (median)", "{:.1f}"),
               ("boundary_edge_ratio", "exported mesh: boundary-edge ratio (median)", "{:.4f}")]
"""Rows given as the median over assets (reports written before these metrics existed show "-")."""


def runs(data: dict, mode: str) -> dict[str, dict]:
    """asset id -> the metrics of view 0 in `mode`."""
    return {r["asset_id"]: r["views"][0]["modes"][mode] for r in data["assets"]}


def mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else float("nan")


def median(rows: list[dict], key: str, fmt: str) -> str:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return fmt.format(statistics.median(values)) if values else "-"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--main", type=Path, required=True)
    p.add_argument("--cross", type=Path, required=True)
    p.add_argument("--dev", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    main_data = json.loads((args.main / "metrics.json").read_text())
    cross_data = json.loads((args.cross / "metrics.json").read_text())
    dev_data = json.loads((args.dev / "metrics.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)

    print("## Default model\n")
    print("| metric | procedural, true FoV | procedural, estimated FoV | dev assets, true FoV | dev, estimated FoV |")
    print("|---|---|---|---|---|")
    cols = [runs(main_data, "true"), runs(main_data, "estimated"), runs(dev_data, "true"), runs(dev_data, "estimated")]
    for key, label, fmt in KEYS:
        print(f"| {label} | " + " | ".join(fmt.format(mean(list(c.values()), key)) for c in cols) + " |")
    for key, label, fmt in MEDIAN_KEYS:
        print(f"| {label} | " + " | ".join(median(list(c.values()), key, fmt) for c in cols) + " |")
    for name, c in (("procedural", cols[1]), ("dev", cols[3])):
        errors = [r["fov_error_deg"] for r in c.values()]
        print(f"\nFoV head on {name} ({len(errors)} views): median error {statistics.median(errors):.2f} deg, "
              f"mean {statistics.fmean(errors):.2f} deg")

    lift, cross = runs(main_data, "true"), runs(cross_data, "true")
    common = sorted(set(lift) & set(cross))
    print(f"\n## Ablation ({len(common)} held-out procedural assets both reports hold, true FoV)\n")
    print("| metric | pixel-aligned (lift) | cross-attention only | lift better on |")
    print("|---|---|---|---|")
    for key, label, fmt in KEYS[:8]:
        a = [lift[i][key] for i in common]
        b = [cross[i][key] for i in common]
        lower_better = key == "chamfer_l1"
        wins = sum((x < y) if lower_better else (x > y) for x, y in zip(a, b, strict=True))
        print(f"| {label} | {fmt.format(statistics.fmean(a))} | {fmt.format(statistics.fmean(b))} | "
              f"{wins}/{len(common)} |")

    print("\n## Five worst procedural cases (true FoV, by F-score@0.05)\n")
    worst = sorted(main_data["assets"], key=lambda r: r["views"][0]["modes"]["true"]["fscore@0.05"])[:5]
    (args.out / "images").mkdir(exist_ok=True)
    for r in worst:
        m = r["views"][0]["modes"]["true"]
        rel = r["image_files"]["true"]
        shutil.copyfile(args.main / rel, args.out / rel)
        print(f"- `{r['asset_id']}`: F-score@0.05 {m['fscore@0.05']:.3f}, Chamfer-L1 {m['chamfer_l1']:.4f}, "
              f"silhouette IoU {m['silhouette_iou']:.3f}\n\n  ![{r['asset_id']}](results/{rel})\n")
    for name, data in (("procedural", main_data), ("ablation_cross", cross_data), ("dev", dev_data)):
        (args.out / f"{name}_metrics.json").write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
