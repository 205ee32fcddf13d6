"""Load test of `pixal3d serve` on loopback with a micro random-weight model (issue 8).

    python bench/load_test.py                      # 8 clients, 50 jobs; appends to docs/benchmarks.md
    python bench/load_test.py --no-write --jobs 10

Starts the server as a subprocess on 127.0.0.1 (a free port), runs two warm-up jobs, reads the server's RSS
(/proc/PID/status, VmRSS) as the baseline, then lets `--clients` threads send `--jobs` jobs in total: each job must
end in success (its GLB downloaded and starting with b"glTF") or in an intended 429 (queue full; not retried).
Meanwhile a poller asks /healthz every 0.25 s (every answer must be 200) and samples the RSS. After the load the
RSS must come back to the baseline (within `--rss-tolerance-mib`). Bounded: a fixed number of jobs, per-request
timeouts, and an overall deadline; loopback only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def test_image(i: int) -> bytes:
    """A small RGBA object on a transparent background (an ellipse whose shape and colour vary with i)."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:128, :128]
    a, b = rng.uniform(25, 55, size=2)
    inside = ((xx - 64) / a) ** 2 + ((yy - 64) / b) ** 2 < 1
    rgba = np.zeros((128, 128, 4), dtype=np.uint8)
    rgba[inside] = (*rng.integers(40, 255, size=3), 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.latencies: list[float] = []
        self.problems: list[str] = []

    def record(self, outcome: str, latency: float | None = None, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if latency is not None:
                self.latencies.append(latency)
            if problem is not None:
                self.problems.append(problem)


def run_job(client: httpx.Client, i: int, options: dict, deadline: float, stats: Stats) -> None:
    start = time.monotonic()
    response = client.post("/v1/generate", files={"image": (f"{i}.png", test_image(i), "image/png")},
                           data={"options": json.dumps({**options, "seed": i})})
    if response.status_code == 429:  # intended: the queue is full; back off as the server asks, don't retry
        stats.record("429")
        time.sleep(min(float(response.headers.get("retry-after", 1)), 2.0))
        return None
    if response.status_code != 202:
        return stats.record("error", problem=f"job {i}: POST {response.status_code} {response.text[:200]}")
    job_id = response.json()["id"]
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    else:
        return stats.record("error", problem=f"job {i}: not finished before the deadline")
    if status["status"] != "succeeded":
        return stats.record("error", problem=f"job {i}: {status['status']}: {status.get('error')}")
    glb = client.get(f"/v1/jobs/{job_id}/result.glb")
    if glb.status_code != 200 or glb.content[:4] != b"glTF":
        return stats.record("error", problem=f"job {i}: result {glb.status_code}")
    stats.record("succeeded", latency=time.monotonic() - start)


def load(base: str, clients: int, jobs: int, options: dict, deadline: float, stats: Stats) -> None:
    counter = iter(range(jobs))
    counter_lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=30.0) as client:
            while time.monotonic() < deadline:
                with counter_lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    run_job(client, i, options, deadline, stats)
                except httpx.HTTPError as err:
                    stats.record("error", problem=f"job {i}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def poll_health(base: str, pid: int, stop: threading.Event, out: dict) -> None:
    """Ask /healthz every 0.25 s and sample the server's RSS until `stop`."""
    with httpx.Client(base_url=base, timeout=10.0) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            out["answers"] += ok
            out["failures"] += not ok
            out["max_latency"] = max(out["max_latency"], time.monotonic() - start)
            out["peak_rss"] = max(out["peak_rss"], rss_mib(pid))
            stop.wait(0.25)


def wait_idle(client: httpx.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        health = client.get("/healthz").json()
        if health["queued"] == 0 and not health["busy"]:
            return
        time.sleep(0.2)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores (load average {load} at the end: other work shares them), "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the load (RSS read after each round)")
    parser.add_argument("--deadline", type=float, default=900.0, help="overall limit, seconds")
    parser.add_argument("--rss-tolerance-mib", type=float, default=64.0)
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()
    options = {"faces": 2000, "texture_size": 256, "fov": 40}
    port, results = free_port(), tempfile.mkdtemp(prefix="pixal3d-load-")
    base = f"http://{HOST}:{port}"
    log = open(Path(results) / "server.log", "w")  # noqa: SIM115 (closed at the end)
    server = subprocess.Popen(
        [sys.executable, "-m", "pixal3d", "serve", "--random-weights", "micro", "--device", "cpu", "--host", HOST,
         "--port", str(port), "--results-dir", results, "--queue-size", str(args.queue_size)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + args.deadline
    try:
        return run(args, server, base, options, deadline)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def run(args: argparse.Namespace, server: subprocess.Popen, base: str, options: dict, deadline: float) -> int:
    with httpx.Client(base_url=base, timeout=30.0) as client:
        start = time.monotonic()
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > start + 120:
                raise SystemExit("the server did not start; see its log in the results folder")
            time.sleep(0.25)
        startup = time.monotonic() - start
        warm = Stats()
        for i in range(2):  # warm-up: first-call allocations are not a leak
            run_job(client, 1000 + i, options, deadline, warm)
        time.sleep(1.0)
        baseline = rss_mib(server.pid)
        health = {"answers": 0, "failures": 0, "max_latency": 0.0, "peak_rss": baseline}
        stop = threading.Event()
        poller = threading.Thread(target=poll_health, args=(base, server.pid, stop, health))
        poller.start()
        stats, t0, rounds = Stats(), time.monotonic(), []
        for _ in range(args.rounds):
            load(base, args.clients, args.jobs, options, deadline, stats)
            wait_idle(client, deadline)
            time.sleep(2.0)
            rounds.append(rss_mib(server.pid))
        wall = time.monotonic() - t0
        stop.set()
        poller.join()
        after = rounds[-1]
    ended = stats.outcomes.get("succeeded", 0) + stats.outcomes.get("429", 0)
    ok = (warm.outcomes == {"succeeded": 2} and ended == args.jobs * args.rounds and health["failures"] == 0
          and after <= baseline + args.rss_tolerance_mib)
    lat = sorted(stats.latencies) or [float("nan")]
    lines = [
        f"- machine: {machine()}",
        f"- {args.clients} clients, {args.jobs} jobs{f' x {args.rounds} rounds' if args.rounds > 1 else ''}, queue size {args.queue_size}, micro random weights on the CPU, "
        f"options {json.dumps(options)}; server start {startup:.1f} s",
        f"- outcomes: {stats.outcomes.get('succeeded', 0)} succeeded, {stats.outcomes.get('429', 0)} refused with 429, "
        f"{stats.outcomes.get('error', 0)} errors; wall {wall:.1f} s, "
        f"{stats.outcomes.get('succeeded', 0) / wall:.2f} jobs/s",
        f"- job latency (submit -> GLB downloaded): median {statistics.median(lat):.2f} s, "
        f"max {lat[-1]:.2f} s",
        f"- /healthz: {health['answers']} answers, {health['failures']} failures, "
        f"slowest {1000 * health['max_latency']:.0f} ms",
        f"- server RSS: baseline {baseline:.0f} MiB (after 2 warm-up jobs), peak {health['peak_rss']:.0f} MiB, "
        f"after the load {after:.0f} MiB ({after - baseline:+.0f} MiB; tolerance {args.rss_tolerance_mib:.0f} MiB)"
        + (f"; after each round {', '.join(f'{r:.0f}' for r in rounds)} MiB" if len(rounds) > 1 else ""),
        f"- result: {'PASS' if ok else 'FAIL'}",
    ]
    print("\n".join(lines))
    for problem in stats.problems[:20]:
        print("  problem:", problem)
    if not args.no_write:
        append_report(lines)
    return 0 if ok else 1


def append_report(lines: list[str]) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    heading = "## REST server load test (issue 8)"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    command = " ".join(["python bench/load_test.py", *sys.argv[1:]])
    entry = f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (`{command}`):\n\n" + \
        "\n".join(lines) + "\n"
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
