"""Plot a run's training curves from its metrics.jsonl: training loss and held-out metrics against the step, one PNG.

The top panel holds the training loss and the held-out loss (`heldout_loss`, on the steps where the held-out
set was evaluated; `pixal3d.training.heldout`); the bottom panel the headline held-out metrics (`HEADLINE`:
occupancy or voxel IoU, crossed-edge recall, base-colour MAE, flow mse, FoV error), or those named with
`--metrics`. Several runs
(folders or metrics.jsonl files) plot into the same panels, labelled by folder name.

    python scripts/plot_training.py runs/structure_vae_tiny -o docs/images/structure_vae_tiny_curves.png
    python scripts/plot_training.py runs/shape_vae_tiny runs/shape_vae_tiny_fast -o docs/images/shape_vae.png \
        --metrics heldout_voxel_iou heldout_edge_recall

Needs matplotlib (`pip install matplotlib`, or `pip install pixal3d[dev]`); reading the log does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LOSS_KEYS = ("loss", "heldout_loss")
"""Keys drawn in the loss panel."""
HEADLINE = ("heldout_occupancy_iou", "heldout_voxel_iou", "heldout_edge_recall", "heldout_base_color_mae",
            "heldout_mse", "heldout_fov_l1")
"""The held-out metrics the lower panel shows by default when a run has them (reconstruction quality per VAE;
the flow loss and FoV error per flow), rather than every loss term."""


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`metrics.jsonl` (or its run folder) -> {key: [(step, value), ...]} in step order, numeric values only.

    Records logged twice for one step (a run resumed past a crash before `--resume` truncated the log) keep
    the last one.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log; give a run folder or its metrics.jsonl")
    by_step: dict[int, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
        by_step[int(record["step"])] = record
    series: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(by_step):
        for key, value in by_step[step].items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                series.setdefault(key, []).append((step, float(value)))
    return series


def heldout_metric_keys(series: dict[str, list[tuple[int, float]]]) -> list[str]:
    """The run's headline held-out metrics (`HEADLINE`), or else all its held-out metrics but the loss."""
    headline = [k for k in HEADLINE if k in series]
    return headline or sorted(k for k in series if k.startswith("heldout_") and k not in LOSS_KEYS)


def plot(runs: dict[str, dict[str, list[tuple[int, float]]]], out: Path, metrics: list[str] | None = None,
         title: str | None = None) -> Path:
    """Draw the runs' curves (see the module docstring) into the PNG `out`; returns it."""
    try:
        import matplotlib
    except ImportError as err:
        raise SystemExit("plot_training.py needs matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    keys = metrics or sorted({k for series in runs.values() for k in heldout_metric_keys(series)})
    fig, axes = plt.subplots(2 if keys else 1, 1, figsize=(8, 7 if keys else 4), sharex=True, squeeze=False)
    loss_ax = axes[0, 0]
    for name, series in runs.items():
        for key, style in zip(LOSS_KEYS, ("-", "o-"), strict=True):
            if key in series:
                steps, values = zip(*series[key], strict=True)
                loss_ax.plot(steps, values, style, markersize=3, label=f"{name} {key}" if len(runs) > 1 else key)
    loss_ax.set_ylabel("loss")
    if all(v > 0 for series in runs.values() for k in LOSS_KEYS for _, v in series.get(k, [])):
        loss_ax.set_yscale("log")
    loss_ax.legend(fontsize=8)
    loss_ax.grid(alpha=0.3)
    if keys:
        metric_ax = axes[1, 0]
        for name, series in runs.items():
            for key in keys:
                if key in series:
                    steps, values = zip(*series[key], strict=True)
                    label = key.removeprefix("heldout_")
                    metric_ax.plot(steps, values, "o-", markersize=3, label=f"{name} {label}" if len(runs) > 1 else label)
        metric_ax.set_ylabel("held-out metric")
        metric_ax.legend(fontsize=8)
        metric_ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title or ", ".join(runs))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or metrics.jsonl files")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--metrics", nargs="+", default=None, help="held-out keys for the lower panel (default: all)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for path in args.runs:
        name = (path.parent if path.suffix == ".jsonl" else path).name
        try:
            runs[name] = read_metrics(path)
        except (FileNotFoundError, ValueError) as err:
            sys.stderr.write(f"error: {err}\n")
            return 2
    sys.stdout.write(f"{plot(runs, args.out, args.metrics, args.title)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
