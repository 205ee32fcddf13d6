"""The REST server on a micro random-weight pipeline, through FastAPI's TestClient: every endpoint and every error.

One app (one pipeline, built once) serves the module. `Controls` reaches into the model from the test through
forward pre-hooks on the pipeline's components: block the worker at the encoder (to fill the queue), make the
texture flow raise (a failure inside the model), or slow every model call (to pass the time limit).
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gltf_validator import assert_valid_glb
from PIL import Image

pytest.importorskip("fastapi", reason="the REST server needs pixal3d[serve] (fastapi)")
pytest.importorskip("python_multipart", reason="the REST server needs pixal3d[serve] (python-multipart)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from pixal3d.serve import build_pipeline  # noqa: E402
from pixal3d.serve.jobs import Retention  # noqa: E402
from pixal3d.serve.rest import UploadLimit, create_app  # noqa: E402

FAST = {"faces": 2000, "texture_size": 256, "steps": 1}
MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1_000_000


class Controls:
    """Switches the model hooks read: `gate` cleared blocks at the encoder; `fail` raises in the texture flow."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False
        self.delay = 0.0

    def install(self, pipe):
        def encoder_hook(module, args):
            self.entered.set()
            self.gate.wait(timeout=30)
            time.sleep(self.delay)

        def texture_hook(module, args):
            if self.fail:
                raise RuntimeError("injected failure inside the texture flow")

        pipe.encoder.register_forward_pre_hook(encoder_hook)
        pipe.texture_flow.register_forward_pre_hook(texture_hook)
        return pipe


def png_bytes(size: tuple[int, int] = (96, 96), alpha: bool = True, mode: str = "RGBA") -> bytes:
    """An object on a transparent background (no background removal needed: fast preprocessing)."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    inside = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (0.35 * min(w, h)) ** 2
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[inside] = (180, 90, 40, 255)
    if not alpha:
        rgba[..., 3] = 0  # all transparent: no object
    buffer = io.BytesIO()
    Image.fromarray(rgba).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def controls() -> Controls:
    return Controls()


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def client(controls: Controls, results_dir: Path):
    app = create_app(lambda: controls.install(build_pipeline(random_weights="micro")), results_dir,
                     queue_size=1, max_upload_bytes=MAX_UPLOAD, job_timeout_s=60, max_pixels=MAX_PIXELS)
    with TestClient(app) as c:
        yield c


def submit(client: TestClient, image: bytes | None = None, options: dict | str | None = None,
           content_type: str = "image/png"):
    options = FAST if options is None else options
    return client.post("/v1/generate", files={"image": ("in.png", png_bytes() if image is None else image,
                                                        content_type)},
                       data={"options": options if isinstance(options, str) else json.dumps(options)})


def wait(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["status"] not in ("queued", "running"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {status['status']} after {timeout} s")


def result_files(results_dir: Path) -> list[str]:
    return sorted(p.name for p in results_dir.iterdir())


# ---------------------------------------------------------------------------------------------- endpoints
def test_healthz_and_openapi(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["queue_size"] == 1
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result.glb", "/healthz"} <= set(paths)
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}
    assert "multipart/form-data" in paths["/v1/generate"]["post"]["requestBody"]["content"]


def test_generate_poll_download_delete(client: TestClient, results_dir: Path, tmp_path: Path) -> None:
    # The content type is a lie on purpose: the server sniffs the bytes.
    response = submit(client, options={**FAST, "fov": 40, "seed": 3}, content_type="application/octet-stream")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert len(job_id) == 32 and response.json()["result_url"] == f"/v1/jobs/{job_id}/result.glb"
    status = wait(client, job_id)
    assert status["status"] == "succeeded", status
    assert status["fov_degrees"] == pytest.approx(40.0) and status["fov_source"] == "given"
    assert status["options"]["seed"] == 3 and status["options"]["fov"] == pytest.approx(math.radians(40))
    assert set(status["progress"].values()) == {"done"} and status["fraction"] == 1.0
    assert list(status["timings"]) == ["preprocess", "encode", "camera", "structure", "shape", "texture",
                                       "decode", "export"]
    glb = client.get(f"/v1/jobs/{job_id}/result.glb")
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF"
    (tmp_path / "r.glb").write_bytes(glb.content)
    assert_valid_glb(tmp_path / "r.glb")
    assert f"{job_id}.glb" in result_files(results_dir)

    assert client.delete(f"/v1/jobs/{job_id}").json() == {"id": job_id, "status": "deleted"}
    assert f"{job_id}.glb" not in result_files(results_dir)
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job_id}/result.glb").status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404


# ---------------------------------------------------------------------------------------------- bad uploads
def test_non_image_is_415(client: TestClient) -> None:
    for data in (b"hello, this is text", b"%PDF-1.4\n" + b"0" * 100, b"\x89PNG\r\n\x1a\n"):
        response = submit(client, image=data, content_type="image/png")
        assert response.status_code == 415, response.text
        assert "not an image" in response.json()["detail"]


def test_empty_and_corrupt_images_are_400(client: TestClient) -> None:
    assert submit(client, image=b"").status_code == 400
    good = png_bytes()
    flipped = good[:50] + bytes(b ^ 0xFF for b in good[50:60]) + good[60:]  # inside the IDAT chunk
    for corrupt in (flipped, good[: len(good) // 2]):
        response = submit(client, image=corrupt)
        assert response.status_code == 400 and "truncated or corrupt" in response.json()["detail"]


def test_oversized_upload_is_413(client: TestClient) -> None:
    big = os.urandom(MAX_UPLOAD + 1)
    response = submit(client, image=big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        yield boundary
        for _ in range(2 * MAX_UPLOAD // 4096):
            yield os.urandom(4096)

    response = client.post("/v1/generate", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_image_over_pixel_limit_is_413(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("L", (1100, 1000)).save(buffer, format="PNG")  # 1.1 Mpx, a few KiB compressed
    response = submit(client, image=buffer.getvalue())
    assert response.status_code == 413 and "1100x1000" in response.json()["detail"]


def test_upload_limit_stops_reading_early() -> None:
    """The middleware refuses after about `max_bytes`, without reading the rest of the body."""
    import asyncio

    chunk, total_chunks, limit = 64 * 1024, 100, 1024 * 1024
    state = {"received": 0}
    sent: list[dict] = []

    async def receive() -> dict:
        state["received"] += 1
        return {"type": "http.request", "body": b"x" * chunk, "more_body": state["received"] < total_chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(UploadLimit(app, limit)({"type": "http", "headers": []}, receive, send))
    assert sent[0]["status"] == 413
    assert state["received"] == limit // chunk + 1 < total_chunks


# ---------------------------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "options, status, words",
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 422, "JSON object"),
        ({"fov": 40, "colour": "red"}, 422, "unknown option"),
        ({"seed": "7"}, 422, "'seed' must be int"),
        ({"steps": True}, 422, "'steps' must be int"),
        ({"fov": 200}, 400, "DEGREES"),
        ({"fov": 0}, 400, "DEGREES"),
        ({"seed": -1}, 400, "seed"),
        ({"steps": 0}, 400, "steps"),
        ({"guidance": 1e9}, 400, "guidance"),
        ({"faces": 3}, 400, "face budget"),
        ({"texture_size": 100}, 400, "texture size"),
        ({"resolution": 512}, 400, "resolution 32 only"),
    ],
)
def test_invalid_options(client: TestClient, options: dict | str, status: int, words: str) -> None:
    response = submit(client, options=options)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_missing_image_is_422(client: TestClient) -> None:
    response = client.post("/v1/generate", data={"options": "{}"})
    assert response.status_code == 422


# ---------------------------------------------------------------------------------------------- ids
def test_unknown_and_path_like_ids(client: TestClient, results_dir: Path) -> None:
    outside = results_dir.parent / "secret.glb"
    outside.write_bytes(b"keep me")
    unknown = "0123456789abcdef0123456789abcdef"
    assert client.get(f"/v1/jobs/{unknown}").status_code == 404
    assert client.get(f"/v1/jobs/{unknown}/result.glb").status_code == 404
    assert client.delete(f"/v1/jobs/{unknown}").status_code == 404
    for bad in ("%2e%2e", "..%2Fsecret", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2fsecret", "ABCDEF", "secret.glb",
                "0123456789abcdef0123456789abcdeg", unknown + "0"):
        for method, suffix in (("GET", ""), ("GET", "/result.glb"), ("DELETE", "")):
            response = client.request(method, f"/v1/jobs/{bad}{suffix}")
            assert response.status_code in (400, 404), (bad, suffix, response.status_code)
            if response.status_code == 400:
                assert "malformed job id" in response.json()["detail"]
    assert outside.read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------------- queue, failures
def test_queue_full_is_429_and_delete_cancels(client: TestClient, controls: Controls, results_dir: Path) -> None:
    controls.gate.clear()
    controls.entered.clear()
    try:
        running = submit(client).json()["id"]
        assert controls.entered.wait(30)  # the worker holds `running`; the next one waits in the queue
        queued = submit(client).json()["id"]
        assert client.get(f"/v1/jobs/{queued}").json()["queue_position"] == 0
        full = submit(client)
        assert full.status_code == 429 and full.headers["retry-after"] == "5"
        assert "queue is full" in full.json()["detail"]
        assert client.get("/healthz").json()["queued"] == 1
        assert client.delete(f"/v1/jobs/{queued}").json()["status"] == "deleted"
        assert client.get(f"/v1/jobs/{queued}").status_code == 404
        cancel = client.delete(f"/v1/jobs/{running}")
        assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
        assert client.get(f"/v1/jobs/{running}/result.glb").status_code == 409
    finally:
        controls.gate.set()
    end = time.monotonic() + 30
    while client.get(f"/v1/jobs/{running}").status_code != 404 and time.monotonic() < end:
        time.sleep(0.05)
    assert client.get(f"/v1/jobs/{running}").status_code == 404
    assert f"{running}.glb" not in result_files(results_dir) and f"{queued}.glb" not in result_files(results_dir)


def test_failure_inside_the_model(client: TestClient, controls: Controls, results_dir: Path) -> None:
    controls.fail = True
    try:
        job_id = submit(client).json()["id"]
        status = wait(client, job_id)
    finally:
        controls.fail = False
    assert status["status"] == "failed" and status["error_kind"] == "model"
    assert "injected failure inside the texture flow" in status["error"]
    assert status["stage"] == "texture" and status["progress"]["shape"] == "done"
    assert not [n for n in result_files(results_dir) if n.startswith(job_id)]  # no result, no temporary file
    assert client.get(f"/v1/jobs/{job_id}/result.glb").status_code == 409
    assert client.get("/healthz").status_code == 200
    again = submit(client).json()["id"]  # the server goes on serving
    assert wait(client, again)["status"] == "succeeded"


def test_bad_image_content_fails_the_job_as_input_error(client: TestClient) -> None:
    one_pixel = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(one_pixel, format="PNG")  # only background removal finds no object
    job_id = submit(client, image=one_pixel.getvalue()).json()["id"]
    status = wait(client, job_id)
    assert status["status"] == "failed" and status["error_kind"] == "input"
    assert "mask is empty" in status["error"]


def test_job_time_limit(client: TestClient, controls: Controls, results_dir: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.app.state.runner, "job_timeout_s", 0.2)
    controls.delay = 0.3
    try:
        job_id = submit(client).json()["id"]
        status = wait(client, job_id)
    finally:
        controls.delay = 0.0
    assert status["status"] == "failed" and status["error_kind"] == "timeout"
    assert "0.2 s" in status["error"]
    assert f"{job_id}.glb" not in result_files(results_dir)


def test_retention(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = client.app.state.runner
    results_dir = tmp_path
    monkeypatch.setattr(runner, "results_dir", results_dir)
    monkeypatch.setattr(runner, "retention", Retention(max_results=2, max_age_s=3600))
    now = time.time()
    names = [f"{i:032x}.glb" for i in range(4)]
    for i, name in enumerate(names):  # ages: 0 = 2 h (too old), 1 = 30 min, 2 = 20 min, 3 = 10 min
        (results_dir / name).write_bytes(b"glTF")
        os.utime(results_dir / name, (now - 600 * (4 - i) - (6600 if i == 0 else 0),) * 2)
    (results_dir / "notes.glb").write_bytes(b"not ours")
    runner.prune()
    left = result_files(results_dir)
    assert names[2] in left and names[3] in left and names[0] not in left and names[1] not in left
    assert "notes.glb" in left  # only files named by job ids are ever deleted
    assert client.get(f"/v1/jobs/{names[3][:32]}").json()["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{names[3][:32]}/result.glb").content == b"glTF"


def test_cli_serve_and_demo_options() -> None:
    from pixal3d.cli import build_parser

    args = build_parser().parse_args(["serve", "--random-weights", "micro", "--port", "8123", "--queue-size", "3",
                                      "--max-upload-mb", "1.5", "--results-dir", "out"])
    assert args.func.__name__ == "_run_serve" and args.host == "127.0.0.1" and args.port == 8123
    assert args.queue_size == 3 and args.max_upload_mb == 1.5 and str(args.results_dir) == "out"
    demo = build_parser().parse_args(["demo", "--low-vram", "--host", "0.0.0.0", "--port", "9000"])
    assert demo.func.__name__ == "_run_demo" and demo.low_vram and demo.port == 9000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model", "x", "--random-weights", "micro"])
