"""How much of its isolated step rate each training run sustained, data included (issue 16: >= 80 %).

Reads each run's `metrics.jsonl` (the samples/s the trainer logged per interval, held-out evaluation left out)
and a `bench/train_bench.py --json` result (the step alone, on a pre-made pool), matches each run to its model by
the run's `config.json`, and prints per run: the median and the 10th percentile of the logged samples/s, the
bench's samples/s at the run's batch, and their ratio. Runs that shared one GPU with others are compared with a
step that had the GPU alone, so the ratio then also holds the sharing; say so where you quote it.

    python scripts/sustained_rate.py runs/shape_vae_tiny runs/structure_flow_tiny --bench train_after.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def run_model(run: Path) -> tuple[str, int]:
    """The bench's model name of a run (`structure_vae`, ..., `<stage>_flow`) and its batch size."""
    config = json.loads((run / "config.json").read_text())
    name = f"{config['flow']['stage']}_flow" if config["model"] == "flow" else config["model"]
    return name, int(config["batch_size"])


def logged_rates(run: Path, skip: int) -> list[float]:
    """The run's logged samples/s, without the first `skip` intervals (warm-up, compilation, cache filling)."""
    rates = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if "samples_per_s" in record:
            rates.append(float(record["samples_per_s"]))
    return rates[skip:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (config.json and metrics.jsonl)")
    parser.add_argument("--bench", type=Path, required=True, help="a bench/train_bench.py --json result")
    parser.add_argument("--skip", type=int, default=2, help="first logged intervals to leave out (default 2)")
    args = parser.parse_args(argv)
    bench = json.loads(args.bench.read_text())
    rows = {row["model"]: row for row in bench["models"]}
    print("| run | model | batch | logged samples/s (median, p10) | bench samples/s (batch) | sustained |")
    print("|---|---|---|---|---|---|")
    status = 0
    for run in args.runs:
        model, batch = run_model(run)
        rates = logged_rates(run, args.skip)
        if model not in rows or not rates:
            print(f"| {run.name} | {model} | {batch} | {'no intervals' if not rates else '-'} | "
                  f"{'not in the bench' if model not in rows else '-'} | - |")
            status = 1
            continue
        row = rows[model]
        median = statistics.median(rates)
        p10 = sorted(rates)[len(rates) // 10]
        note = "" if row["batch_per_gpu"] * row["gpus"] == batch else " (other batch)"
        print(f"| {run.name} | {model} | {batch} | {median:,.1f}, {p10:,.1f} | {row['samples_per_s']:,.1f} "
              f"({row['batch_per_gpu']}){note} | {100 * median / row['samples_per_s']:.0f} % |")
    return status


if __name__ == "__main__":
    sys.exit(main())
