"""The Gradio demo's limits, in process (issue 17): upload size, temporary files swept and removed at exit.

The browser test (`test_demo_browser.py`) drives the UI; this one checks what `run_demo` hands Gradio and that an
upload over the limit is refused by the app it builds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs pixal3d[demo] (gradio)")

from pixal3d.serve import build_pipeline  # noqa: E402
from pixal3d.serve.demo import CACHE_AGE_S, CACHE_SWEEP_S, run_demo  # noqa: E402


def test_run_demo_limits_uploads_and_cleans_its_temp_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_launch(self, **kwargs):  # instead of serving: record the settings, upload to the real app
        from fastapi.testclient import TestClient
        from gradio.routes import App

        seen.update(kwargs, delete_cache=self.delete_cache, temp=os.environ.get("GRADIO_TEMP_DIR"))
        self.max_file_size = kwargs["max_file_size"]  # what launch() itself does with it
        with TestClient(App.create_app(self)) as client:
            small = client.post("/gradio_api/upload", files={"files": ("a.png", b"\x89PNG" + b"0" * 100)})
            big = client.post("/gradio_api/upload", files={"files": ("b.png", b"\x89PNG" + b"0" * 5000)})
        seen["codes"] = (small.status_code, big.status_code)
        assert small.json()[0].startswith(seen["temp"])  # the upload landed in the run's own folder
        seen["scratch"] = Path(seen["temp"]).parent
        assert seen["scratch"].is_dir()

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    run_demo(lambda: build_pipeline(random_weights="micro"), max_upload_bytes=2000)
    assert seen["max_file_size"] == 2000 and seen["delete_cache"] == (CACHE_SWEEP_S, CACHE_AGE_S)
    assert seen["codes"] == (200, 413)
    assert not seen["scratch"].exists() and "GRADIO_TEMP_DIR" not in os.environ


def test_generate_returns_the_pixel_alignment_check(tmp_path: Path) -> None:
    """The demo shows the input beside the asset rendered from the input camera and their overlay (issue 14)."""
    from PIL import Image

    from pixal3d.serve.demo import DemoRunner, create_demo

    pipe = build_pipeline(random_weights="micro")
    runner = DemoRunner(pipe, output_dir=tmp_path)
    image = Image.new("RGBA", (96, 96))
    image.paste((200, 60, 40, 255), (24, 24, 72, 72))
    seen, path, summary, check = runner.generate(image, 40.0, 0, 2, 2.0, pipe.shape_vae.config.resolution, 2000,
                                                 256, lambda progress: None)
    assert path.is_file() and "FoV" in summary
    assert check.size == (3 * 256, 256)  # input | input-camera render | overlay
    tiles = [check.crop((256 * i, 0, 256 * (i + 1), 256)) for i in range(3)]
    assert tiles[1].getbbox() is not None and tiles[0].tobytes() != tiles[1].tobytes()
    create_demo(pipe, output_dir=tmp_path)  # the app builds with the alignment output wired in
