"""Test helper: run the Khronos glTF validator (npm package `gltf-validator`) on a GLB and return its report.

The package is found in `$PIXAL3D_GLTF_VALIDATOR_DIR` (set by `.ci/run`), else in `.ci/node` of this checkout
(`npm install --prefix .ci/node gltf-validator`). When node or the package is missing, the calling test fails under
CI (`CI=true`) and is skipped with the reason elsewhere: it never passes without validation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_SCRIPT = r"""
const fs = require('fs');
const [packageDir, file] = process.argv.slice(-2);
const validator = require(packageDir);
const data = fs.readFileSync(file);
validator.validateBytes(new Uint8Array(data), {maxIssues: 200})
  .then((report) => { process.stdout.write(JSON.stringify(report)); })
  .catch((err) => { process.stderr.write(String(err)); process.exit(1); });
"""


def _unavailable(reason: str) -> None:
    message = f"glTF validator unavailable: {reason}; install it with `npm install --prefix .ci/node gltf-validator`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def validate_glb(path: str | os.PathLike) -> dict:
    """The validator's JSON report for a GLB file (`report["issues"]["numErrors"]` etc.)."""
    node = shutil.which("node")
    if node is None:
        _unavailable("`node` is not on PATH")
    folder = Path(os.environ.get("PIXAL3D_GLTF_VALIDATOR_DIR", _REPO / ".ci" / "node"))
    package = folder / "node_modules" / "gltf-validator"
    if not (package / "package.json").is_file():
        _unavailable(f"no gltf-validator package in {folder}")
    result = subprocess.run(
        [node, "-e", _SCRIPT, str(package), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gltf-validator crashed on {path}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def assert_valid_glb(path: str | os.PathLike) -> dict:
    """Validate a GLB and fail the test, listing the errors, unless the validator reports none."""
    report = validate_glb(path)
    issues = report["issues"]
    errors = [m for m in issues["messages"] if m["severity"] == 0]
    assert issues["numErrors"] == 0, f"{path}: {issues['numErrors']} glTF errors: {errors}"
    return report
