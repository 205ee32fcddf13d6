"""Server behaviour a new user meets first (issue 19, items 2 and 5): the port is bound before the model loads,
transparent images are refused at submit, the time limit fits the device and its message names the option,
and the OpenAPI document types every response."""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the REST server needs pixal3d[serve] (fastapi)")
pytest.importorskip("python_multipart", reason="the REST server needs pixal3d[serve] (python-multipart)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from pixal3d.cli import main  # noqa: E402
from pixal3d.errors import InputError  # noqa: E402
from pixal3d.serve import build_pipeline  # noqa: E402
from pixal3d.serve.jobs import default_job_timeout  # noqa: E402
from pixal3d.serve.rest import create_app, serve  # noqa: E402


def png(mode: str = "RGBA", alpha: int = 255) -> bytes:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 20:44] = (180, 90, 40, alpha)
    buffer = io.BytesIO()
    Image.fromarray(rgba).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def refuse_to_build() -> None:
    raise AssertionError("the pipeline was built before the port was bound")


@pytest.fixture
def busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_busy_port_fails_before_the_model_loads(busy_port: int, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match=f"127.0.0.1:{busy_port}.*--port"):
        serve(refuse_to_build, tmp_path, host="127.0.0.1", port=busy_port)
    from pixal3d.pipeline import Pixal3DPipeline

    monkeypatch.setattr(Pixal3DPipeline, "from_config", lambda *a, **k: refuse_to_build())
    monkeypatch.setattr(Pixal3DPipeline, "from_pretrained", lambda *a, **k: refuse_to_build())
    for command in ("serve", "demo"):
        assert main([command, "--random-weights", "micro", "--port", str(busy_port)]) == 2
        assert "--port" in capsys.readouterr().err


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    app = create_app(lambda: build_pipeline(random_weights="micro"), tmp_path_factory.mktemp("results"))
    with TestClient(app) as c:
        yield c


def test_transparent_png_is_refused_at_submit(client: TestClient) -> None:
    for image in (png(alpha=0), png(mode="LA", alpha=0)):
        response = client.post("/v1/generate", files={"image": ("in.png", image, "image/png")},
                               data={"options": json.dumps({"steps": 1})})
        assert response.status_code == 400, response.text
        assert "fully transparent" in response.json()["detail"]
    assert client.get("/healthz").json()["queued"] == 0


def test_default_time_limit_fits_the_device_and_its_message_names_the_option(client: TestClient,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_job_timeout("cuda:1") == 600 and default_job_timeout("cpu") == 3600
    runner = client.app.state.runner
    assert runner.job_timeout_s == 3600 and client.get("/healthz").json()["job_timeout_s"] == 3600
    monkeypatch.setattr(runner, "job_timeout_s", 1e-6)
    job = client.post("/v1/generate", files={"image": ("in.png", png(), "image/png")},
                      data={"options": json.dumps({"steps": 1, "faces": 2000, "texture_size": 256})}).json()
    end = time.monotonic() + 30
    while (status := client.get(job["status_url"]).json())["status"] in ("queued", "running"):
        assert time.monotonic() < end
        time.sleep(0.05)
    assert status["error_kind"] == "timeout" and "--job-timeout" in status["error"]


def test_openapi_types_the_responses(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    assert {"JobAccepted", "JobStatus", "ErrorResponse", "Health", "JobDeleted"} <= set(schemas)

    def ref(path: str, method: str, code: str, media: str = "application/json") -> str:
        return paths[path][method]["responses"][code]["content"][media]["schema"].get("$ref", "")

    assert ref("/v1/generate", "post", "202").endswith("/JobAccepted")
    assert ref("/v1/generate", "post", "400").endswith("/ErrorResponse")
    assert ref("/v1/generate", "post", "422").endswith("/ValidationErrorResponse")
    assert ref("/v1/jobs/{job_id}", "get", "200").endswith("/JobStatus")
    assert ref("/v1/jobs/{job_id}", "get", "404").endswith("/ErrorResponse")
    glb = paths["/v1/jobs/{job_id}/result.glb"]["get"]["responses"]["200"]["content"]
    assert glb["model/gltf-binary"]["schema"]["format"] == "binary"
