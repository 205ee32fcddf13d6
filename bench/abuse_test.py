"""Abuse and load test of a live `pixal3d serve` on loopback (issue 17): keys, hostile input, load, RSS.

    python bench/abuse_test.py                   # micro random weights; appends its figures to docs/benchmarks.md
    python bench/abuse_test.py --no-write --clients 4 --requests 10

Starts the server as a subprocess on 127.0.0.1 (a free port) with three API keys (A, B, C) in `PIXAL3D_API_KEYS`,
then runs, in order:

1. auth probes: every route but /healthz without a key, with an unknown key and with a Basic header -> 401;
   wrong keys from one address -> 401, then 429; /healthz without a key -> 200 and no job id in its body;
2. option probes: `[` x 100000, a 5000-digit integer, deep nesting, NaN, 1e999, texture_size 3000, unknown keys,
   wrong types, non-JSON -> 4xx;
3. image probes: seeded mutations of PNG/JPEG/WebP/BMP files and images too thin for background removal -> 4xx,
   or a job that ends succeeded or failed as an *input* error (never a "model" error);
4. upload and id probes: a body over the upload limit -> 413; path-like and foreign job ids -> 400/404;
5. ownership: key B reads, downloads and deletes key A's jobs -> 404 (a 2xx is a cross-key access);
6. rate limit: key C submits until it gets 429 with Retry-After;
7. load: `--clients` threads x `--requests` mixed requests (valid jobs, polls, downloads, hostile options and
   images, cross-key probes) spread over keys A and B, with the server's RSS read before and after (after two
   warm-up jobs, and once the queue is empty again).

Pass: 0 responses >= 500, 0 cross-key accesses, 0 jobs failed as "model" errors, every probe answered as expected,
RSS back within `--rss-tolerance-mib`. Bounded: fixed request counts, per-request timeouts, an overall deadline.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
KEYS = {"A": "abuse-key-a-" + "a" * 24, "B": "abuse-key-b-" + "b" * 24, "C": "abuse-key-c-" + "c" * 24}
FAST = {"faces": 2000, "texture_size": 256, "steps": 2}
MAX_UPLOAD_MB = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores (load average {load} at the end), Python {platform.python_version()}"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def encoded(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    yy, xx = np.mgrid[: size[1], : size[0]]
    inside = ((xx - size[0] / 2) / (size[0] / 3)) ** 2 + ((yy - size[1] / 2) / (size[1] / 3)) ** 2 < 1
    pixels[inside] = (*rng.integers(40, 255, 3), 255)
    if mode != "RGBA":
        pixels[~inside] = (230, 230, 230, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def mutated_images(count: int, seed: int) -> list[bytes]:
    """Seeded hostile images: byte flips, truncations, insertions, extreme header fields, thin images."""
    rng = np.random.default_rng(seed)
    seeds = [encoded("PNG", "RGBA", (48, 40), 1), encoded("JPEG", "RGB", (40, 40), 2),
             encoded("WEBP", "RGBA", (40, 32), 3), encoded("BMP", "RGB", (32, 40), 4)]
    thin = [encoded("PNG", "RGB", (200, 3), 5), encoded("BMP", "RGB", (1000, 1), 6)]
    out = list(thin)
    while len(out) < count:
        data = bytearray(seeds[len(out) % len(seeds)])
        kind = int(rng.integers(0, 4))
        if kind == 0:
            for _ in range(int(rng.integers(1, 6))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 1:
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == 2:
            at = int(rng.integers(0, len(data)))
            data[at:at] = rng.bytes(int(rng.integers(1, 16)))
        else:
            at = int(rng.integers(0, 60))
            data[at : at + 4] = b"\xff\xff\xff\x7f"
        out.append(bytes(data))
    return out


HOSTILE_OPTIONS = [
    "[" * 100_000, '{"seed": ' + "9" * 5000 + "}", '{"seed": ' + "9" * 4000 + "}", "[" * 50 + "]" * 50,
    '{"fov": NaN}', '{"fov": 1e999}', json.dumps({"texture_size": 3000}), json.dumps({"colour": "red"}),
    json.dumps({"seed": "7"}), json.dumps({"steps": True}), json.dumps({"faces": {"a": [1, 2]}}), "{not json",
    '"\\ud800"', "null", json.dumps({"fov": 200}), json.dumps({"guidance": -1}), json.dumps({"seed": -1}),
    json.dumps({"resolution": 10**12}), "x" * 5000, json.dumps({"steps": 10**6}),
]


class Tally:
    """Thread-safe counts of every response status, the >= 500 ones, cross-key accesses and probe failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter[int] = Counter()
        self.server_errors: list[str] = []
        self.cross_key = 0
        self.model_errors: list[str] = []
        self.problems: list[str] = []
        self.jobs = Counter()
        self.guesses_before_429: int | None = None

    def response(self, what: str, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.status[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")
        return response

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def expect(tally: Tally, what: str, response: httpx.Response, allowed: set[int]) -> httpx.Response:
    tally.response(what, response)
    if response.status_code not in allowed:
        tally.problem(f"{what}: {response.status_code} not in {sorted(allowed)}: {response.text[:160]}")
    return response


def submit(client: httpx.Client, key: str | None, image: bytes, options: str) -> httpx.Response:
    headers = auth(key) if key else {}
    return client.post("/v1/generate", headers=headers, files={"image": ("in.png", image, "image/png")},
                       data={"options": options})


def wait_job(client: httpx.Client, key: str, job: str, deadline: float, tally: Tally) -> dict:
    while time.monotonic() < deadline:
        response = tally.response("poll", client.get(f"/v1/jobs/{job}", headers=auth(key)))
        if response.status_code == 429:
            time.sleep(float(response.headers.get("retry-after", 1)))
            continue
        status = response.json()
        if status.get("status") not in ("queued", "running"):
            return status
        time.sleep(0.2)
    tally.problem(f"job {job} not finished before the deadline")
    return {}


def finished(tally: Tally, job: str, status: dict) -> None:
    with tally.lock:
        tally.jobs[status.get("status", "unknown")] += 1
        if status.get("error_kind") == "model":
            tally.model_errors.append(f"{job}: {status.get('error')}")


# ------------------------------------------------------------------------------------------------------ probes
def probe_auth(client: httpx.Client, tally: Tally) -> None:
    job = "0123456789abcdef0123456789abcdef"
    for label, headers in (("no key", {}), ("unknown key", {"Authorization": "Bearer " + "z" * 40}),
                           ("basic", {"Authorization": f"Basic {KEYS['A']}"})):
        expect(tally, f"auth {label} POST", client.post("/v1/generate", headers=headers, files={
            "image": ("a.png", encoded("PNG", "RGBA", (32, 32), 0), "image/png")}), {401})
        for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/result.glb"),
                             ("DELETE", f"/v1/jobs/{job}")):
            expect(tally, f"auth {label} {method} {path}", client.request(method, path, headers=headers), {401})
    health = expect(tally, "healthz without a key", client.get("/healthz"), {200})
    if re.search(r"[0-9a-f]{32}", health.text):
        tally.problem(f"/healthz shows a job id: {health.text[:200]}")
    for i in range(60):  # key guessing from one address: 401s, then 429 (the valid keys are not affected)
        wrong = {"Authorization": f"Bearer {i:040d}"}
        guess = tally.response("key guess", client.get(f"/v1/jobs/{job}", headers=wrong))
        if guess.status_code == 429:
            tally.guesses_before_429 = tally.status[401]  # the probes' 401s above count too
            break
        if guess.status_code != 401:
            tally.problem(f"key guess: {guess.status_code}")
    else:
        tally.problem("60 wrong keys from one address were never refused with 429")
    expect(tally, "a valid key after the guesses", client.get(f"/v1/jobs/{job}", headers=auth("A")), {404})
    scheme = client.get("/openapi.json").json().get("components", {}).get("securitySchemes", {})
    if not any(s.get("scheme") == "bearer" for s in scheme.values()):
        tally.problem("OpenAPI documents no bearer scheme")


def probe_options(client: httpx.Client, tally: Tally) -> None:
    image = encoded("PNG", "RGBA", (32, 32), 0)
    for i, options in enumerate(HOSTILE_OPTIONS):
        expect(tally, f"options #{i} ({options[:30]!r})", submit(client, "A", image, options), {400, 413, 422})


def probe_images(client: httpx.Client, tally: Tally, images: list[bytes], deadline: float) -> dict[str, int]:
    outcomes: Counter[str] = Counter()
    options = json.dumps({**FAST, "steps": 1})
    for i, image in enumerate(images):
        response = expect(tally, f"image #{i}", submit(client, "A", image, options), {202, 400, 413, 415, 429})
        if response.status_code == 429:
            time.sleep(float(response.headers.get("retry-after", 1)))
            response = expect(tally, f"image #{i} again", submit(client, "A", image, options),
                              {202, 400, 413, 415})
        if response.status_code != 202:
            outcomes[str(response.status_code)] += 1
            continue
        job = response.json()["id"]
        status = wait_job(client, "A", job, deadline, tally)
        finished(tally, job, status)
        outcomes[f"job {status.get('status')} ({status.get('error_kind') or 'ok'})"] += 1
    return dict(outcomes)


def probe_limits_and_ids(client: httpx.Client, tally: Tally) -> None:
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(int(MAX_UPLOAD_MB * 2**20) + 1024)
    expect(tally, "upload over the limit", submit(client, "A", big, "{}"), {413})
    for bad in ("%2e%2e", "..%2F..%2Fetc%2Fpasswd", "ABCDEF", "0" * 31 + "g", "0" * 33):
        for method, suffix in (("GET", ""), ("GET", "/result.glb"), ("DELETE", "")):
            expect(tally, f"id {bad}{suffix}", client.request(method, f"/v1/jobs/{bad}{suffix}", headers=auth("A")),
                   {400, 404})


def cross_key_probe(client: httpx.Client, tally: Tally, job: str, owner: str, other: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/result.glb"), ("DELETE", "")):
        response = tally.response(f"cross-key {method}{suffix}",
                                  client.request(method, f"/v1/jobs/{job}{suffix}", headers=auth(other)))
        if response.status_code < 300:
            with tally.lock:
                tally.cross_key += 1
            tally.problem(f"key {other} reached key {owner}'s job {job}: {method}{suffix} {response.status_code}")
        elif response.status_code not in (404, 429):
            tally.problem(f"cross-key {method}{suffix}: {response.status_code}")


def probe_ownership(client: httpx.Client, tally: Tally, deadline: float) -> None:
    image = encoded("PNG", "RGBA", (48, 48), 9)
    response = submit(client, "A", image, json.dumps(FAST))
    while response.status_code == 429 and time.monotonic() < deadline:
        # The image probes may have used up key A's jobs per minute: wait as a well-behaved client does.
        time.sleep(float(response.headers.get("retry-after", 1)))
        response = submit(client, "A", image, json.dumps(FAST))
    response = expect(tally, "owned job", response, {202})
    if response.status_code != 202:
        return
    job = response.json()["id"]
    cross_key_probe(client, tally, job, "A", "B")  # while queued or running
    status = wait_job(client, "A", job, deadline, tally)
    finished(tally, job, status)
    cross_key_probe(client, tally, job, "A", "B")  # finished, result on disk
    glb = expect(tally, "owner downloads", client.get(f"/v1/jobs/{job}/result.glb", headers=auth("A")), {200})
    if glb.content[:4] != b"glTF":
        tally.problem("the owner's download is not a GLB")


def probe_rate_limit(client: httpx.Client, tally: Tally) -> dict[str, int | str]:
    image = encoded("PNG", "RGBA", (32, 32), 3)
    accepted: list[str] = []
    outcome: dict[str, int | str] = {}
    for _ in range(40):
        response = tally.response("rate limit", submit(client, "C", image, json.dumps(FAST)))
        if response.status_code == 202:
            accepted.append(response.json()["id"])
        elif response.status_code == 429 and "per API key" in response.text:
            outcome = {"accepted_before_429": len(accepted), "retry_after": response.headers.get("retry-after", "?")}
            break
        elif response.status_code == 429:  # the queue is full: wait, it is the per-key limit we want to see
            time.sleep(1.0)
    else:
        tally.problem("key C never hit its rate limit")
    for job in accepted:  # cancel what C queued: the probe is about the answers, not the work
        expect(tally, "delete C's job", client.delete(f"/v1/jobs/{job}", headers=auth("C")), {200, 202, 404})
    return outcome


# ------------------------------------------------------------------------------------------------------ load
def load(base: str, clients: int, requests: int, images: list[bytes], deadline: float, tally: Tally) -> Counter:
    kinds: Counter[str] = Counter()

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        key, other = ("A", "B") if index % 2 == 0 else ("B", "A")
        mine: list[str] = []
        with httpx.Client(base_url=base, timeout=60.0) as client:
            for _ in range(requests):
                if time.monotonic() > deadline:
                    tally.problem(f"client {index}: deadline reached")
                    return
                kind = rng.choice(["job", "job", "poll", "bad_options", "bad_image", "cross_key", "healthz"])
                with tally.lock:
                    kinds[kind] += 1
                try:
                    if kind == "job":
                        image = encoded("PNG", "RGBA", (48, 48), rng.randrange(1000))
                        r = tally.response("load job", submit(client, key, image, json.dumps(
                            {**FAST, "seed": rng.randrange(100)})))
                        if r.status_code == 202:
                            mine.append(r.json()["id"])
                        elif r.status_code != 429:
                            tally.problem(f"load job: {r.status_code} {r.text[:120]}")
                    elif kind == "poll" and mine:
                        status = wait_job(client, key, mine[-1], deadline, tally)
                        finished(tally, mine[-1], status)
                        if status.get("status") == "succeeded":
                            tally.response("load download", client.get(f"/v1/jobs/{mine[-1]}/result.glb",
                                                                       headers=auth(key)))
                        mine.pop()
                    elif kind == "bad_options":
                        tally.response("load bad options", submit(client, key, encoded("PNG", "RGBA", (32, 32), 1),
                                                                  rng.choice(HOSTILE_OPTIONS)))
                    elif kind == "bad_image":
                        r = tally.response("load bad image", submit(client, key, rng.choice(images),
                                                                    json.dumps({**FAST, "steps": 1})))
                        if r.status_code == 202:
                            mine.append(r.json()["id"])
                    elif kind == "cross_key" and mine:
                        cross_key_probe(client, tally, mine[-1], key, other)
                    else:
                        tally.response("load healthz", client.get("/healthz"))
                except httpx.HTTPError as err:
                    tally.problem(f"client {index}: {type(err).__name__}: {err}")
            for job in mine:  # let every job of this client end, and check how
                finished(tally, job, wait_job(client, key, job, deadline, tally))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return kinds


def wait_idle(client: httpx.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        health = client.get("/healthz").json()
        if health["queued"] == 0 and not health["busy"]:
            return
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="requests per client in the load phase")
    parser.add_argument("--images", type=int, default=40, help="hostile images in the image probe")
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--deadline", type=float, default=1200.0, help="overall limit, seconds")
    parser.add_argument("--rss-tolerance-mib", type=float, default=64.0)
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    port, results = free_port(), tempfile.mkdtemp(prefix="pixal3d-abuse-")
    log_path = Path(results) / "server.log"
    env = {**os.environ, "PIXAL3D_API_KEYS": ",".join(KEYS.values())}
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "pixal3d", "serve", "--random-weights", "micro", "--device", "cpu", "--host", HOST,
             "--port", str(port), "--results-dir", results, "--queue-size", str(args.queue_size),
             "--max-upload-mb", str(MAX_UPLOAD_MB), "--jobs-per-minute", "30", "--requests-per-minute", "1200"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            code = run(args, server, f"http://{HOST}:{port}", time.monotonic() + args.deadline)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    tracebacks = log_path.read_text().count("Traceback")
    print(f"server log: {log_path} ({tracebacks} tracebacks)")
    return code


def run(args: argparse.Namespace, server: subprocess.Popen, base: str, deadline: float) -> int:
    tally = Tally()
    with httpx.Client(base_url=base, timeout=60.0) as client:
        start = time.monotonic()
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > start + 180:
                raise SystemExit("the server did not start; see its log in the results folder")
            time.sleep(0.25)
        startup = time.monotonic() - start
        warm = Tally()
        for i in range(2):  # warm-up: first-call allocations are not a leak
            response = submit(client, "B", encoded("PNG", "RGBA", (48, 48), 100 + i), json.dumps(FAST))
            finished(warm, str(i), wait_job(client, "B", response.json()["id"], deadline, warm))
        time.sleep(1.0)
        baseline = rss_mib(server.pid)
        t0 = time.monotonic()
        probe_auth(client, tally)
        probe_options(client, tally)
        images = mutated_images(args.images, seed=17)
        image_outcomes = probe_images(client, tally, images, deadline)
        probe_limits_and_ids(client, tally)
        probe_ownership(client, tally, deadline)
        rate = probe_rate_limit(client, tally)
        wait_idle(client, deadline)
        probe_time = time.monotonic() - t0
        t1 = time.monotonic()
        kinds = load(base, args.clients, args.requests, images, deadline, tally)
        wait_idle(client, deadline)
        load_time = time.monotonic() - t1
        time.sleep(2.0)
        after = rss_mib(server.pid)
    requests = sum(tally.status.values())
    ok = (not tally.server_errors and tally.cross_key == 0 and not tally.model_errors and not tally.problems
          and warm.jobs == Counter({"succeeded": 2}) and after <= baseline + args.rss_tolerance_mib)
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(tally.status.items()))
    lines = [
        f"- machine: {machine()}; micro random weights on the CPU, server start {startup:.1f} s, queue size "
        f"{args.queue_size}, upload limit {MAX_UPLOAD_MB:g} MiB, 3 API keys, 30 jobs/min and 1200 requests/min per key",
        f"- probes ({probe_time:.1f} s): auth on every route (no key, unknown key, Basic) -> 401, requests without "
        f"a valid key from one address -> 429 after {tally.guesses_before_429}; "
        f"{len(HOSTILE_OPTIONS)} hostile `options` -> 4xx; {len(images)} hostile images -> {json.dumps(image_outcomes)}; "
        f"over-size upload -> 413; path-like ids -> 400/404; rate limit: {json.dumps(rate)}",
        f"- load ({load_time:.1f} s): {args.clients} clients x {args.requests} mixed requests over keys A and B "
        f"({json.dumps(dict(sorted(kinds.items())))}); jobs ended: {json.dumps(dict(tally.jobs))}",
        f"- {requests} responses ({statuses}); >= 500: {len(tally.server_errors)}; cross-key accesses: "
        f"{tally.cross_key}; jobs failed as model errors: {len(tally.model_errors)}; probe failures: "
        f"{len(tally.problems)}",
        f"- server RSS: {baseline:.0f} MiB after 2 warm-up jobs, {after:.0f} MiB after the probes and the load "
        f"({after - baseline:+.0f} MiB; tolerance {args.rss_tolerance_mib:.0f} MiB)",
        f"- result: {'PASS' if ok else 'FAIL'}",
    ]
    print("\n".join(lines))
    for text in (tally.server_errors + tally.model_errors + tally.problems)[:30]:
        print("  problem:", text)
    if not args.no_write:
        append_report(lines)
    return 0 if ok else 1


def append_report(lines: list[str]) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    heading = "## REST server abuse test (issue 17)"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    command = " ".join(["python bench/abuse_test.py", *sys.argv[1:]])
    entry = f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (`{command}`):\n\n" + "\n".join(lines) + "\n"
    if heading in text:
        head, _, rest = text.partition(heading)
        nxt = rest.find("\n## ")
        section, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
        text = head + heading + section.rstrip("\n") + "\n" + entry + tail
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n" + entry
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"appended to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
