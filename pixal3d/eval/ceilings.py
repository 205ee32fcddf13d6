"""The ceilings table (issue 15): `pixal3d eval --oracle` reports -> `ceilings.md` + `ceilings.json`.

One row per run of an eval report whose variants include oracles (`pixal3d.eval.oracles`): the ground truth, each
VAE's round trip, stages 2-3 and stage 3 from the ground truth, the full cascade (one row per FoV mode). Columns are
the aggregate means over all views (medians for the mesh topology, `report.MEDIAN_KEYS`). Then, per cascade link,
how much each headline metric drops across it (from the variant that has the link exact to the one that runs it),
and the link with the largest drop per metric: where the quality is lost.
"""

from __future__ import annotations

import os
from pathlib import Path

from pixal3d.atomic import write_json_atomic, write_text_atomic
from pixal3d.eval.report import MEDIAN_KEYS

COLUMNS = ("fscore@0.02", "fscore@0.05", "volume_iou_64", "silhouette_iou", "base_color_psnr", "base_color_error",
           "coarse_iou", "coarse_precision", "coarse_recall", "components", "boundary_edge_ratio")
"""Metrics of the ceilings table (aggregate mean, or median for `MEDIAN_KEYS`)."""
LOSS_METRICS = ("fscore@0.02", "volume_iou_64", "silhouette_iou", "base_color_psnr", "coarse_iou")
"""Higher-is-better metrics whose drop across each link is tabulated."""
LINKS = (
    ("structure VAE", "gt", "vae-structure"),
    ("shape VAE", "gt", "vae-shape"),
    ("texture VAE", "gt", "vae-texture"),
    ("stage 3 (texture flow)", "vae-shape", "gt-shape"),
    ("stage 2 (shape flow)", "gt-shape", "gt-structure"),
    ("stage 1 (structure flow)", "gt-structure", "true"),
)
"""`(link, run key with the link exact, run key that runs it)`: "true" is the full cascade with the true FoV.
vae-shape -> gt-shape changes only the colours (ground truth -> the texture flow's, same geometry); gt-shape ->
gt-structure replaces the true shape latent by the shape flow's (both textured by the texture flow);
gt-structure -> full replaces the true coarse structure by stage 1's."""


def _label(key: str) -> str:
    return f"full ({key} FoV)" if key in ("true", "estimated") else key


def ceilings_rows(data: dict[str, object]) -> dict[str, dict[str, float | None]]:
    """Run key -> column -> aggregate value, in the report's run order (a metrics.json of `pixal3d eval`)."""
    rows = {}
    for key, stats in data["aggregate"].items():
        row: dict[str, float | None] = {}
        for column in COLUMNS:
            row[column] = stats.get(column, {}).get("median" if column in MEDIAN_KEYS else "mean")
        row["runs"], row["failures"] = stats["runs"], stats["failures"]
        rows[key] = row
    return rows


def link_losses(rows: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """Link -> metric -> drop (value with the link exact minus value with it run) for the links whose two rows
    exist; None where either value is undefined."""
    losses = {}
    for link, exact, run in LINKS:
        if exact in rows and run in rows:
            a, b = rows[exact], rows[run]
            losses[link] = {m: (a[m] - b[m] if a[m] is not None and b[m] is not None else None) for m in LOSS_METRICS}
    return losses


def largest_losses(losses: dict[str, dict[str, float | None]]) -> dict[str, str | None]:
    """Metric -> the link with the largest drop (None when no link defines it)."""
    out: dict[str, str | None] = {}
    for metric in LOSS_METRICS:
        defined = {link: d[metric] for link, d in losses.items() if d[metric] is not None}
        out[metric] = max(defined, key=defined.get) if defined else None
    return out


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def ceilings_markdown(tables: dict[str, dict[str, object]]) -> str:
    """The Markdown of `write_ceilings` (one section per evaluated set)."""
    lines = ["# Ceilings", "",
             "Aggregate over all views: means, medians for " + ", ".join(MEDIAN_KEYS) + ". Variants: "
             "docs/evaluation.md#ceilings.", ""]
    for name, table in tables.items():
        rows, losses = table["rows"], table["losses"]
        lines += [f"## {name}", "", "| variant | " + " | ".join(COLUMNS) + " | runs (failed) |",
                  "|---|" + "---|" * (len(COLUMNS) + 1)]
        for key, row in rows.items():
            cells = [_cell(row[c]) for c in COLUMNS] + [f"{row['runs']} ({row['failures']})"]
            lines.append(f"| {_label(key)} | " + " | ".join(cells) + " |")
        if losses:
            lines += ["", "Drop across each link (positive = lost there):", "",
                      "| link | " + " | ".join(LOSS_METRICS) + " |", "|---|" + "---|" * len(LOSS_METRICS)]
            for link, drops in losses.items():
                lines.append(f"| {link} | " + " | ".join(_cell(drops[m]) for m in LOSS_METRICS) + " |")
            lines += ["", "Largest loss: " + "; ".join(f"{m}: {link or '-'}" for m, link in table["largest"].items())]
        lines.append("")
    return "\n".join(lines)


def write_ceilings(output: str | os.PathLike, reports: dict[str, dict[str, object]]) -> tuple[Path, Path]:
    """Write `ceilings.md` and `ceilings.json` into `output` (atomically) from eval reports.

    Args:
        output: a folder (created).
        reports: set name (e.g. "procedural seeds 1000000:1000050") -> that set's metrics.json content.

    Returns:
        The paths of the Markdown and the JSON file.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, data in reports.items():
        rows = ceilings_rows(data)
        losses = link_losses(rows)
        tables[name] = {"rows": rows, "losses": losses, "largest": largest_losses(losses),
                        "run": data.get("run", {}), "options": data.get("options", {})}
    md, js = output / "ceilings.md", output / "ceilings.json"
    write_json_atomic(js, {"columns": list(COLUMNS), "links": [list(link) for link in LINKS], "sets": tables})
    write_text_atomic(md, ceilings_markdown(tables))
    return md, js
