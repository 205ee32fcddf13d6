"""`pixal3d demo`: a Gradio app over one `Pixal3DPipeline` (extra `demo`: gradio).

Upload an image; the preprocessed crop (what the model sees) appears at once. Choose the FoV (auto: the model's
estimate, or manual in DEGREES), seed, sampler steps, guidance, resolution (each checkpoint decodes at one), face
budget and texture size; Generate shows the stage running (the pipeline's `callback` -> `gr.Progress`), then the GLB in an
interactive 3D view (`gr.Model3D`: PBR materials, orbit/zoom) with a download link and the time of every step.

The pipeline is built by `run_demo` from a factory, never at import; one generation runs at a time (the queue's
concurrency limit is 1).

Uploads and temporary files: Gradio refuses an upload over `max_upload_bytes` (HTTP 413, counted while it streams
in), deletes the files it keeps for this app (uploads, served GLB copies) every `CACHE_SWEEP_S` once they are older
than `CACHE_AGE_S`, and `run_demo` gives Gradio a temporary folder of its own (unless `GRADIO_TEMP_DIR` is set)
and removes it, with the demo's output folder, when the demo stops. Example inputs are the project's own
`examples/*.png` (drawn by `scripts/make_examples.py` and `scripts/make_demo_examples.py`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixal3d.errors import InputError
from pixal3d.pipeline import Pixal3DPipeline
from pixal3d.serve import bind_socket
from pixal3d.serve.progress import STAGES, StageProgress, stage_callback

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
"""The repository's example inputs (absent in an installed wheel: the demo then shows none)."""

TEXTURE_SIZES = (256, 512, 1024, 2048, 4096)
KEEP_OUTPUTS = 20
"""GLBs kept in the demo's output folder (older ones are deleted; Gradio serves its own copies)."""
MAX_UPLOAD_BYTES = 20 * 2**20
"""Default largest upload, bytes (the REST server's default too)."""
CACHE_SWEEP_S, CACHE_AGE_S = 600, 3600
"""Every CACHE_SWEEP_S seconds Gradio deletes this app's temporary files older than CACHE_AGE_S seconds."""


def _import_gradio() -> Any:
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError(f"the demo needs its extra: pip install 'pixal3d[demo]' ({err})") from err
    return gr


class DemoRunner:
    """The demo's calls into the library: preview crop, generate + export. Owns the pipeline."""

    def __init__(self, pipe: Pixal3DPipeline, low_vram: bool = False, output_dir: str | Path | None = None) -> None:
        self.pipe, self.low_vram = pipe, low_vram
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="pixal3d-demo-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def crop(self, image: Any) -> Any:
        """The model's input for `image` (PIL): the square RGBA crop on black, or None for no image."""
        from pixal3d.preprocess import preprocess_image

        if image is None:
            return None
        return _enlarge(preprocess_image(image, size=self.pipe.settings.image_size).image)

    def generate(
        self, image: Any, fov_degrees: float | None, seed: int, steps: int, guidance: float, resolution: int,
        faces: int, texture_size: int, report: Callable[[StageProgress], None],
    ) -> tuple[Any, Path, str, Any]:
        """Run the pipeline and export; returns (the crop the model saw, GLB path, a Markdown summary, the alignment
        check: input | the asset from the input camera | their overlay, magenta where only one has the object)."""
        from pixal3d.asset import contact_sheet

        if image is None:
            raise InputError("upload an image first (or pick an example)")
        fov = None if fov_degrees is None else math.radians(fov_degrees)
        progress = StageProgress(on_change=report)
        asset = self.pipe(image, fov=fov, seed=int(seed), steps=int(steps), guidance=float(guidance),
                          resolution=int(resolution), faces=int(faces), texture_size=int(texture_size),
                          low_vram=self.low_vram, callback=stage_callback(progress))
        progress.advance("export")
        path = asset.export(self.output_dir / f"pixal3d-{seed}-{uuid.uuid4().hex[:8]}.glb")
        progress.finish(asset.timings)
        self._prune()
        times = " | ".join(f"{k} {v:.2f} s" for k, v in progress.timings.items())
        summary = (f"**FoV** {math.degrees(asset.camera.fov):.1f} deg ({asset.fov_source}) · **seed** {seed} · "
                   f"**mesh** {len(asset.mesh.faces)} faces before simplification (budget {faces}) · "
                   f"**total** {sum(progress.timings.values()):.2f} s\n\n{times}")
        alignment = contact_sheet(path, asset.image, camera=asset.camera, orbit=False)
        return _enlarge(asset.image), path, summary, alignment

    def _prune(self) -> None:
        files = sorted(self.output_dir.glob("pixal3d-*.glb"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP_OUTPUTS:]:
            old.unlink(missing_ok=True)


def _enlarge(image: Any, side: int = 256) -> Any:
    """Show a small model input (e.g. the micro model's 64 px) at `side` pixels, each pixel a visible block."""
    from PIL import Image

    if image.width >= side:
        return image
    return image.resize((side, side), Image.Resampling.NEAREST)


def create_demo(pipe: Pixal3DPipeline, low_vram: bool = False, output_dir: str | Path | None = None) -> Any:
    """Build the Gradio Blocks app over `pipe` (not launched); its temporary files are swept (module docstring)."""
    gr = _import_gradio()
    runner = DemoRunner(pipe, low_vram, output_dir)
    sampler = pipe.settings.shape_sampler
    resolution = pipe.shape_vae.config.resolution

    with gr.Blocks(title="pixal3d demo", analytics_enabled=False, delete_cache=(CACHE_SWEEP_S, CACHE_AGE_S)) as demo:
        gr.Markdown("## pixal3d: one image → a textured 3D asset (GLB)\nUpload an image of one object "
                    "(a transparent background is used as the mask; otherwise the background is removed).")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Input image", type="pil", image_mode="RGBA", elem_id="input-image",
                                 sources=["upload", "clipboard"])
                crop = gr.Image(label="Model input (preprocessed crop)", type="pil", interactive=False,
                                elem_id="crop", height=220)
                with gr.Accordion("Settings", open=True):
                    fov_mode = gr.Radio(["auto", "manual"], value="auto", label="Field of view",
                                        info="auto: estimated by the model")
                    fov = gr.Slider(10, 100, value=40, step=0.5, label="FoV (degrees, horizontal)", visible=False)
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    steps = gr.Slider(1, 50, value=sampler.steps, step=1, label="Sampler steps per stage")
                    guidance = gr.Slider(0, 10, value=sampler.guidance, step=0.1, label="Guidance (1 = none)")
                    res = gr.Dropdown([resolution], value=resolution, label="Resolution (this model's R_hr)")
                    faces = gr.Slider(1000, 200_000, value=20_000, step=1000, label="Face budget")
                    texture = gr.Dropdown(list(TEXTURE_SIZES), value=1024, label="Texture size (pixels)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                view = gr.Model3D(label="Result (drag to orbit, scroll to zoom)", elem_id="result-3d", height=520,
                                  clear_color=(0.16, 0.16, 0.18, 1.0))
                alignment = gr.Image(label="Pixel alignment: input | the asset from the input camera | overlay "
                                     "(magenta: only one of them has the object)", type="pil", interactive=False,
                                     elem_id="result-alignment", height=200)
                download = gr.File(label="Download GLB", elem_id="result-glb")
                info = gr.Markdown(elem_id="result-info")
        examples = sorted(str(p) for p in EXAMPLES.glob("*.png")) if EXAMPLES.is_dir() else []
        if examples:
            gr.Examples([[p] for p in examples], inputs=[image], label="Examples (made by this project)")

        def on_image(img: Any) -> Any:
            try:
                return runner.crop(img)
            except InputError as err:
                raise gr.Error(str(err)) from err

        # Gradio injects its progress tracker through this default argument (its documented idiom).
        def on_generate(img, mode, fov_deg, seed_value, n_steps, cfg, r, n_faces, tex,
                        progress=gr.Progress()):  # noqa: B008
            def report(p: StageProgress) -> None:
                progress(p.fraction, desc=f"step {STAGES.index(p.current) + 1}/{len(STAGES)}: {p.current}")

            try:
                seen, path, summary, check = runner.generate(img, fov_deg if mode == "manual" else None, seed_value,
                                                      n_steps, cfg, r, n_faces, tex, report)
            except InputError as err:
                raise gr.Error(str(err)) from err
            return seen, str(path), str(path), summary, check

        image.change(on_image, inputs=image, outputs=crop)
        fov_mode.change(lambda m: gr.update(visible=m == "manual"), inputs=fov_mode, outputs=fov)
        button.click(on_generate, inputs=[image, fov_mode, fov, seed, steps, guidance, res, faces, texture],
                     outputs=[crop, view, download, info, alignment])
    return demo


def run_demo(
    pipeline_factory: Callable[[], Pixal3DPipeline],
    host: str = "127.0.0.1",
    port: int = 7860,
    low_vram: bool = False,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> None:
    """Build the pipeline, then serve the demo until interrupted (one generation at a time).

    Uploads over `max_upload_bytes` are refused; the temporary folders this run made are removed when it stops.
    """
    import shutil

    if max_upload_bytes < 1:
        raise InputError(f"max_upload_bytes must be >= 1, got {max_upload_bytes}")
    bind_socket(host, port).close()  # a busy port fails now, not after the pipeline loaded
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before import: no calls home from a local demo
    scratch = Path(tempfile.mkdtemp(prefix="pixal3d-demo-"))
    own_temp = "GRADIO_TEMP_DIR" not in os.environ
    if own_temp:  # before import: Gradio reads it once; uploads then land in a folder this run deletes
        os.environ["GRADIO_TEMP_DIR"] = str(scratch / "gradio")
    try:
        demo = create_demo(pipeline_factory(), low_vram=low_vram, output_dir=scratch / "outputs")
        logger.info("demo on http://%s:%d (uploads up to %.1f MiB)", host, port, max_upload_bytes / 2**20)
        demo.queue(default_concurrency_limit=1, max_size=16).launch(
            server_name=host, server_port=port, share=False, show_error=True, quiet=True,
            max_file_size=max_upload_bytes)
    finally:
        if own_temp:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        shutil.rmtree(scratch, ignore_errors=True)
