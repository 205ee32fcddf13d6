"""Under CI (CI=true) a missing glTF validator fails the run instead of skipping the GLB checks (issue 19, item 6)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gltf_validator import validate_glb

ROOT = Path(__file__).resolve().parents[1]


def _install_without_npm(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"  # a PATH with bash and the coreutils the script uses, but no node and no npm
    bin_dir.mkdir(parents=True)
    for tool in ("bash", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {"PATH": str(bin_dir), "CI": ci}
    return subprocess.run([str(bin_dir / "bash"), str(ROOT / ".ci" / "install_validator")], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def test_ci_run_fails_without_the_validator_under_ci(tmp_path: Path) -> None:
    under_ci = _install_without_npm(tmp_path, "true")
    assert under_ci.returncode == 1 and "required under CI" in under_ci.stderr
    local = _install_without_npm(tmp_path / "local", "")
    assert local.returncode == 0 and "will be skipped" in local.stderr and local.stdout == ""
    assert 'validator_env="$(.ci/install_validator)"' in (ROOT / ".ci" / "run").read_text()  # set -e sees it


def test_missing_validator_fails_a_test_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXAL3D_GLTF_VALIDATOR_DIR", str(tmp_path))  # no package there
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="glTF validator unavailable"):
        validate_glb(tmp_path / "any.glb")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        validate_glb(tmp_path / "any.glb")
