"""Every quality figure in README.md comes from the eval reports behind docs/results.md (docs/results/*.json).

A figure in the README is written between two HTML comments (invisible on GitHub) that say where it comes from:

    F-score@0.05 = <!-- figure: procedural_metrics.json true fscore@0.05 .3f -->0.711<!-- /figure -->

The spec is `FILE MODE METRIC FORMAT [over=OTHER.json]`: the mean of METRIC over the view-0 runs in FoV mode MODE
of `docs/results/FILE` (the per-asset reports that `pixal3d eval` writes and docs/results.md's tables are printed
from, see scripts/results_tables.py), formatted with FORMAT; `over=OTHER.json` restricts the mean to the assets
OTHER.json also holds (the paired ablation). Runs without the metric (failures) are left out, as in the tables.

    python scripts/readme_figures.py           # rewrite the marked figures of README.md from the JSON
    python scripts/readme_figures.py --check   # exit 1, listing each stale figure, when they disagree

`tests/test_readme_figures.py` runs the check, so a new results JSON that is not carried into the README fails
the tests until this script is run. It also fails on a quality figure written into the README without a marker.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"

MARKED = re.compile(r"<!-- figure: (?P<spec>[^>]*?) -->(?P<value>[^<]*)<!-- /figure -->")
"""A marked figure: its spec and its current text."""

UNMARKED = re.compile(
    r"(?P<metric>F-score@0\.0\d|Chamfer-L1|silhouette IoU|volume IoU|PSNR)(?P<gap>[^0-9<\n|]{0,12}?)"
    r"(?P<value>\d+\.\d+)"
)
"""A quality metric's name followed closely by a bare number: a figure that the check cannot keep true."""


@cache
def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def _view0_runs(data: dict, mode: str) -> dict[str, dict]:
    """asset id -> the metrics of view 0 in `mode` (as scripts/results_tables.py reads them)."""
    return {r["asset_id"]: r["views"][0]["modes"].get(mode, {}) for r in data["assets"]}


def figure(spec: str, results: Path = RESULTS) -> str:
    """The text of one figure from its spec `FILE MODE METRIC FORMAT [over=OTHER.json]`."""
    parts = spec.split()
    if len(parts) not in (4, 5) or (len(parts) == 5 and not parts[4].startswith("over=")):
        raise ValueError(f"figure spec {spec!r}: expected 'FILE MODE METRIC FORMAT [over=OTHER.json]'")
    name, mode, metric, fmt = parts[:4]
    runs = _view0_runs(_report(results / name), mode)
    if len(parts) == 5:
        other = _view0_runs(_report(results / parts[4][len("over="):]), mode)
        runs = {asset: run for asset, run in runs.items() if asset in other}
    values = [run[metric] for run in runs.values() if isinstance(run.get(metric), (int, float))]
    if not values:
        raise ValueError(f"figure spec {spec!r}: no run in {name} has {metric!r} in mode {mode!r}")
    return format(statistics.fmean(values), fmt)


def render(text: str, results: Path = RESULTS) -> str:
    """`text` with every marked figure recomputed."""
    return MARKED.sub(lambda m: f"<!-- figure: {m['spec']} -->{figure(m['spec'], results)}<!-- /figure -->", text)


def problems(text: str, results: Path = RESULTS) -> list[str]:
    """Stale marked figures and unmarked quality figures in `text`, one line each (empty: all agree)."""
    found = []
    for m in MARKED.finditer(text):
        want = figure(m["spec"], results)
        if m["value"] != want:
            found.append(f"stale figure: README says {m['value']!r}, {m['spec']} gives {want!r}")
    for m in UNMARKED.finditer(MARKED.sub("<figure>", text)):  # a marked figure ends the search
        found.append(f"unmarked figure {m.group(0)!r}: wrap the number in <!-- figure: SPEC -->...<!-- /figure -->")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report disagreements (exit 1) instead of rewriting")
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the eval JSON reports")
    args = p.parse_args(argv)
    text = args.readme.read_text()
    if args.check:
        found = problems(text, args.results)
        for line in found:
            print(f"{args.readme}: {line}", file=sys.stderr)
        return 1 if found else 0
    new = render(text, args.results)
    if new != text:
        tmp = args.readme.with_name(f".{args.readme.name}.tmp")
        tmp.write_text(new)
        tmp.replace(args.readme)
    print(f"{args.readme}: {len(MARKED.findall(new))} figures from {args.results}"
          + (" (updated)" if new != text else " (already current)"))
    unmarked = [line for line in problems(new, args.results) if line.startswith("unmarked")]
    for line in unmarked:
        print(f"{args.readme}: {line}", file=sys.stderr)
    return 1 if unmarked else 0


if __name__ == "__main__":
    sys.exit(main())
