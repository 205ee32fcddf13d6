"""README.md's quality figures agree with docs/results.md's JSON reports (issue 19, item 6).

The figures are written by scripts/readme_figures.py; when new results land, run it (the test says which figure
is stale). A figure written without a marker fails too, so no number escapes the check.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "scripts" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_agree_with_the_results() -> None:
    figures = _script()
    readme = (ROOT / "README.md").read_text()
    assert figures.problems(readme) == []
    marked = figures.MARKED.findall(readme)
    assert len(marked) >= 4  # the status box and the status table
    results_md = (ROOT / "docs" / "results.md").read_text()
    for _, value in marked:  # and docs/results.md, printed from the same JSON, shows each of them
        assert value in results_md, f"README figure {value} is not in docs/results.md"


def _report(path: Path, values: dict[str, float]) -> None:
    assets = [{"asset_id": asset, "views": [{"modes": {"true": {"fscore@0.05": v}}}]} for asset, v in values.items()]
    path.write_text(json.dumps({"assets": assets}))


def test_the_script_rewrites_stale_figures_and_flags_unmarked_ones(tmp_path: Path) -> None:
    figures = _script()
    _report(tmp_path / "a.json", {"x": 0.5, "y": 0.7})
    _report(tmp_path / "b.json", {"y": 0.1})
    readme = tmp_path / "README.md"
    readme.write_text("F-score@0.05 <!-- figure: a.json true fscore@0.05 .3f -->0.111<!-- /figure --> and "
                      "<!-- figure: a.json true fscore@0.05 .2f over=b.json -->0.1<!-- /figure -->\n")
    args = ["--readme", str(readme), "--results", str(tmp_path)]
    assert figures.main([*args, "--check"]) == 1
    assert figures.main(args) == 0
    assert readme.read_text() == ("F-score@0.05 <!-- figure: a.json true fscore@0.05 .3f -->0.600<!-- /figure --> "
                                  "and <!-- figure: a.json true fscore@0.05 .2f over=b.json -->0.70<!-- /figure -->\n")
    assert figures.main([*args, "--check"]) == 0
    assert figures.problems("old: F-score@0.05 = 0.68 (target 0.80)", tmp_path) == [
        "unmarked figure 'F-score@0.05 = 0.68': wrap the number in <!-- figure: SPEC -->...<!-- /figure -->"]
