"""The REST server's access control and option parsing under abuse (issue 17): keys, ownership, rate limits.

One keyed app on a micro random-weight pipeline serves the module; keys A and B share it, key C only meets the rate
limit (limits are per key, so C's budget is its own).
"""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the REST server needs pixal3d[serve] (fastapi)")
pytest.importorskip("python_multipart", reason="the REST server needs pixal3d[serve] (python-multipart)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from pixal3d.errors import InputError  # noqa: E402
from pixal3d.serve import build_pipeline  # noqa: E402
from pixal3d.serve.auth import (  # noqa: E402
    ApiKeys,
    RateLimit,
    RateLimited,
    TokenBuckets,
    check_exposure,
    load_api_keys,
    owner_name,
)
from pixal3d.serve.rest import create_app  # noqa: E402
from pixal3d.serve.uploads import parse_options  # noqa: E402

KEY_A, KEY_B, KEY_C = "a" * 32, "b" * 32, "c" * 32
FAST = {"faces": 2000, "texture_size": 256, "steps": 1}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def png() -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGBA", (64, 64))
    image.paste((200, 80, 40, 255), (16, 16, 48, 48))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    app = create_app(lambda: build_pipeline(random_weights="micro"), tmp_path_factory.mktemp("results"),
                     queue_size=4, job_timeout_s=60, api_keys=ApiKeys.from_keys([KEY_A, KEY_B, KEY_C]),
                     rate_limit=RateLimit(jobs_per_minute=1, requests_per_minute=600, burst=2,
                                          auth_failures_per_minute=40))
    with TestClient(app) as c:
        yield c


def submit(client: TestClient, key: str | None, options: dict | str = FAST):
    headers = auth(key) if key is not None else {}
    return client.post("/v1/generate", headers=headers, files={"image": ("in.png", png(), "image/png")},
                       data={"options": options if isinstance(options, str) else json.dumps(options)})


def test_every_route_but_healthz_needs_a_key(client: TestClient) -> None:
    job = "0123456789abcdef0123456789abcdef"
    for headers in ({}, auth("x" * 32), {"Authorization": f"Basic {KEY_A}"}):
        assert client.post("/v1/generate", headers=headers, files={"image": ("a.png", png(), "image/png")}
                           ).status_code == 401
        for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/result.glb"),
                             ("DELETE", f"/v1/jobs/{job}")):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert "running" not in health.json() and health.json()["busy"] in (True, False)  # no job id, only a flag


def test_jobs_belong_to_their_key(client: TestClient) -> None:
    response = submit(client, KEY_A)
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    assert job not in client.get("/healthz").text  # no job ids for anyone
    for method, suffix in (("GET", ""), ("GET", "/result.glb"), ("DELETE", "")):
        other = client.request(method, f"/v1/jobs/{job}{suffix}", headers=auth(KEY_B))
        assert other.status_code == 404, (method, suffix, other.text)
    end = time.monotonic() + 60
    while (status := client.get(f"/v1/jobs/{job}", headers=auth(KEY_A)).json())["status"] in ("queued", "running"):
        assert time.monotonic() < end
        time.sleep(0.05)
    assert status["status"] == "succeeded", status
    assert client.get(f"/v1/jobs/{job}/result.glb", headers=auth(KEY_B)).status_code == 404
    assert client.get(f"/v1/jobs/{job}/result.glb", headers=auth(KEY_A)).content[:4] == b"glTF"
    assert client.delete(f"/v1/jobs/{job}", headers=auth(KEY_B)).status_code == 404
    assert client.delete(f"/v1/jobs/{job}", headers=auth(KEY_A)).status_code == 200
    assert client.get(f"/v1/jobs/{job}", headers=auth(KEY_A)).status_code == 404


def test_rate_limit_per_key(client: TestClient) -> None:
    codes = [submit(client, KEY_C).status_code for _ in range(3)]
    assert codes[:2] == [202, 202] and codes[2] == 429, codes  # burst 2, then 1 per minute
    refused = submit(client, KEY_C)
    assert int(refused.headers["retry-after"]) >= 1 and "per API key" in refused.json()["detail"]
    assert submit(client, KEY_B, {**FAST, "texture_size": 3000}).status_code == 400  # B's budget is untouched


def test_openapi_documents_the_bearer_scheme(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["apiKey"][
            "description"]}
    assert doc["paths"]["/v1/generate"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


@pytest.mark.parametrize(
    "options, status, words",
    [
        ("[" * 100_000, 400, "characters long"),
        ("[" * 1000 + "]" * 1000, 400, "nests"),
        ('{"seed": ' + "9" * 5000 + "}", 400, "characters long"),
        ('{"seed": ' + "9" * 4000 + "}", 400, "seed"),
        ('{"seed": ' + "9" * 30 + "}", 400, "seed must be an integer"),
        ('{"fov": 1e999}', 400, "DEGREES"),
        ('{"fov": NaN}', 400, "DEGREES"),
        ({"texture_size": 3000}, 400, "texture size must be one of"),
        ({"texture_size": 2049}, 400, "texture size"),
        ({"faces": {"a": [1]}}, 422, "'faces' must be int"),
        ({"seed": 1.5}, 422, "'seed' must be int"),
        ('{"seed": 1, "seed": "x"}', 422, "'seed' must be int"),
        ("\"\\ud800\"", 400, "not valid JSON"),
        ("null", 422, "JSON object"),
    ],
)
def test_hostile_options_are_4xx(client: TestClient, options: dict | str, status: int, words: str) -> None:
    response = submit(client, KEY_A, options)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_key_guessing_is_rate_limited_per_client(client: TestClient) -> None:
    """Runs after the other 401 tests (file order): 40 failures per minute, 20 at once, then 429."""
    codes = [client.get("/v1/jobs/" + "0" * 32, headers=auth(f"guess-{i:040d}")).status_code for i in range(30)]
    assert codes[0] == 401 and codes[-1] == 429, codes
    refused = client.get("/v1/jobs/" + "0" * 32)
    assert refused.status_code == 429 and "without a valid key" in refused.json()["detail"]
    assert client.get("/v1/jobs/" + "0" * 32, headers=auth(KEY_A)).status_code == 404  # a valid key still works


def test_parse_options_converts_degrees_once() -> None:
    options = parse_options('{"fov": 90, "seed": 5, "guidance": 3, "texture_size": 512}')
    assert options.fov == pytest.approx(1.5707963) and options.seed == 5 and options.guidance == 3.0
    assert options.texture_size == 512 and parse_options("").faces == 100_000
    with pytest.raises(InputError):
        parse_options('{"resolution": 64}', resolution=32)


def test_token_buckets() -> None:
    buckets = TokenBuckets(per_minute=60, capacity=2, what="jobs")
    buckets.take("x")
    buckets.take("x")
    with pytest.raises(RateLimited) as err:
        buckets.take("x")
    assert err.value.retry_after == 1
    buckets.take("y")  # another owner, another bucket
    TokenBuckets(per_minute=0, capacity=1, what="jobs").take("x")  # 0 = unlimited


def test_keys_and_exposure(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"# team keys\n{KEY_A}\n\n  {KEY_B}  \n")
    keys = load_api_keys(key_file, environ={"PIXAL3D_API_KEYS": f"{KEY_C}, "})
    assert keys.owner(KEY_A) == owner_name(KEY_A) and keys.owner(KEY_C) == owner_name(KEY_C)
    assert keys.owner("nope") is None and keys.owner(None) is None and KEY_A not in repr(keys)
    assert not load_api_keys(environ={}).enabled
    with pytest.raises(InputError, match="at least 16"):
        load_api_keys(environ={"PIXAL3D_API_KEYS": "short"})
    with pytest.raises(InputError, match="cannot read"):
        load_api_keys(tmp_path / "missing", environ={})
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(host, ApiKeys(), insecure_no_auth=False)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(InputError, match="insecure-no-auth"):
            check_exposure(host, ApiKeys(), insecure_no_auth=False)
        check_exposure(host, keys, insecure_no_auth=False)
    with caplog.at_level(logging.WARNING):
        check_exposure("0.0.0.0", ApiKeys(), insecure_no_auth=True)
    assert "WITHOUT authentication" in caplog.text


def test_cli_serve_refuses_an_open_public_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixal3d.cli import main

    monkeypatch.delenv("PIXAL3D_API_KEYS", raising=False)
    assert main(["serve", "--random-weights", "micro", "--host", "0.0.0.0", "--port", "1"]) == 2
