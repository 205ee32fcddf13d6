"""The Gradio demo in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Starts `pixal3d demo --random-weights micro` on 127.0.0.1 (a free port) as a subprocess, uploads an image, checks
that the preprocessed crop appears, clicks Generate, waits for the 3D view and the GLB download link, downloads
the GLB, and saves a screenshot: to `$PIXAL3D_DEMO_SCREENSHOT` when set (the committed one is
`docs/images/demo.png`), else into the test's temporary folder.

Skipped, with the reason, when Chromium, Playwright's Python package or Gradio is missing. Playwright's own browser
download is never used: `executable_path` points at the system Chromium.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
    # WebGL without a GPU: software rendering through SwiftShader, so the 3D view can draw.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            raise AssertionError(f"the demo exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not answer at {url} within {timeout} s")


def input_image(path: Path) -> Path:
    """A shaded orange ball on a transparent background."""
    yy, xx = np.mgrid[:160, :160]
    nx, ny = (xx - 80) / 55, (yy - 84) / 55
    inside = nx**2 + ny**2 < 1
    shade = np.clip(0.3 + 0.7 * np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1)) - 0.3 * ny, 0, 1)
    rgba = np.zeros((160, 160, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 235 * shade, 130 * shade, 40 * shade
    rgba[..., 3] = 255 * inside
    Image.fromarray(rgba).save(path)
    return path


def test_demo_in_headless_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright's Python package (pip install "
                                   "playwright; its browser download is not needed)")
    pytest.importorskip("gradio", reason="the demo needs pixal3d[demo] (gradio)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "pixal3d", "demo", "--random-weights", "micro", "--device", "cpu",
             "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_http(url, server)
        shot = Path(os.environ.get("PIXAL3D_DEMO_SCREENSHOT") or tmp_path / "demo.png")
        example = ROOT / "examples" / "chair.png"  # the project's own example, else a drawn ball
        image = example if example.is_file() else input_image(tmp_path / "ball.png")
        glb = drive_browser(sync_api, url, image, shot)
        assert glb[:4] == b"glTF"
        assert Image.open(shot).size[0] >= 1200
    except Exception:
        sys.stderr.write(log.read_text()[-4000:])
        raise
    finally:
        server.terminate()
        server.wait(30)


def drive_browser(sync_api, url: str, image: Path, shot: Path) -> bytes:
    """Upload, check the crop, generate, wait for the 3D view; screenshot; return the downloaded GLB's bytes."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1100})
            page.goto(url, wait_until="networkidle")
            page.locator("#input-image input[type=file]").set_input_files(str(image))
            page.locator("#crop img").wait_for(timeout=60_000)
            page.locator("#generate").click()
            page.locator("#result-3d canvas").wait_for(timeout=240_000)
            link = page.locator("#result-glb a").first
            link.wait_for(timeout=60_000)
            page.locator("#result-info", has_text="FoV").wait_for(timeout=60_000)
            page.locator("#result-alignment img").wait_for(timeout=60_000)  # input vs input-camera render
            page.wait_for_timeout(3000)  # let the viewer load the GLB and draw a few frames
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            href = link.get_attribute("href")
            with urllib.request.urlopen(href if href.startswith("http") else url.rstrip("/") + href) as response:
                return response.read()
        finally:
            browser.close()
