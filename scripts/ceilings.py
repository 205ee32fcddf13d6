"""Measure the ceilings of issue 15: every oracle variant of `pixal3d eval --oracle all` on held-out procedural seeds
and on a folder of meshes, in parallel chunks that fit a time-limited machine, then one table.

    python scripts/ceilings.py --model default --device cuda --procedural 1000000:1000050 \
        --data /work/shared/assets/dev -o out/ceilings        # from the repository root

Each chunk is one `pixal3d eval --oracle all --fov-mode true --views 1 --no-silhouette --no-image-texels` process
writing OUT/parts/<set>-<start>/ (the oracle variants are the raw cascade pieces, so by default the full cascade
runs raw too and every link compares like with like; `--pixel-exact` keeps the pipeline's silhouette and image-texel
steps on for the `full` row);
LANES processes run side by side (they share the GPU). A chunk whose metrics.json exists is not run again, so
calling the same command after a time-out (`--seconds`) continues where it stopped. The finished chunks of each
set are merged into OUT/procedural/ and OUT/dev/ (`eval --merge`: metrics.json, report.md, images/), and the
table goes to OUT/ceilings.md and OUT/ceilings.json (`pixal3d.eval.ceilings`). docs/evaluation.md#ceilings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pixal3d.eval.ceilings import write_ceilings
from pixal3d.eval.report import merge_reports

logger = logging.getLogger("ceilings")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="pipeline: 'default' (shipped weights) or a folder")
    source.add_argument("--random-weights", default=None, choices=["micro64", "tiny"],
                        help="random weights of this size (tests; results are noise)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--procedural", default=None, metavar="START:END", help="held-out procedural seeds START..END-1")
    p.add_argument("--data", type=Path, default=None, help="folder of held-out meshes (eval only, never training)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--lanes", type=int, default=8, help="eval processes side by side (default 8)")
    p.add_argument("--chunk", type=int, default=4, help="procedural seeds per process (default 4)")
    p.add_argument("--seconds", type=float, default=540.0,
                   help="stop unfinished chunks after this long, then merge what finished (default 540)")
    p.add_argument("--views", type=int, default=1, help="condition views per asset (default 1)")
    p.add_argument("--samples", type=int, default=100_000, help="surface samples per mesh (default 100000)")
    p.add_argument("--image-size", type=int, default=256, help="condition image and renders, pixels (default 256)")
    p.add_argument("--pixel-exact", action="store_true",
                   help="run the full cascade with the pipeline's silhouette and image-texel steps (default: raw, "
                   "like the oracle variants)")
    args = p.parse_args(argv)
    if args.procedural is None and args.data is None:
        p.error("give --procedural START:END and/or --data DIR")
    if args.lanes < 1 or args.chunk < 1:
        p.error("--lanes and --chunk must be >= 1")
    return args


def chunks(args: argparse.Namespace) -> list[tuple[str, str, list[str]]]:
    """`(set name, part folder name, source arguments)` of every eval process to run."""
    jobs = []
    if args.procedural is not None:
        start, end = (int(x) for x in args.procedural.split(":"))
        for s in range(start, end, args.chunk):
            e = min(s + args.chunk, end)
            jobs.append(("procedural", f"procedural-{s}", ["--procedural", f"{s}:{e}"]))
    if args.data is not None:
        jobs.append(("dev", "dev", ["--data", str(args.data)]))
    return jobs


def eval_command(args: argparse.Namespace, source: list[str], folder: Path) -> list[str]:
    model = ["--random-weights", args.random_weights] if args.random_weights else ["--model", args.model or "default"]
    raw = [] if args.pixel_exact else ["--no-silhouette", "--no-image-texels"]
    return [sys.executable, "-m", "pixal3d", "eval", *source, "--oracle", "all", "--fov-mode", "true",
            "--views", str(args.views), "--samples", str(args.samples), "--image-size", str(args.image_size),
            "--device", args.device, *model, *raw, "-o", str(folder)]


def run_lanes(commands: list[tuple[list[str], Path]], lanes: int, seconds: float) -> None:
    """Run the commands, at most `lanes` at once, each logging to its `.log`; stop the rest after `seconds`."""
    pending, running = list(commands), []
    deadline = time.monotonic() + seconds
    # Processes share the machine's cores (KD-trees, mesh clean-up): a few threads each, as scripts/eval_tiny.sh.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    while pending or running:
        while pending and len(running) < lanes:
            command, log = pending.pop(0)
            logger.info("start %s", " ".join(command[3:]))
            with open(log, "w") as out:
                running.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True))
        running = [p for p in running if p.poll() is None]
        if time.monotonic() > deadline:
            for p in running:  # only the process groups this script started
                os.killpg(p.pid, signal.SIGTERM)
            logger.warning("time limit: stopped %d running chunks, %d not started", len(running), len(pending))
            return
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    parts = args.output / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    jobs = chunks(args)
    todo = [(eval_command(args, source, parts / name), parts / f"{name}.log")
            for _, name, source in jobs if not (parts / name / "metrics.json").is_file()]
    logger.info("%d of %d chunks to run, %d at a time; logs in %s", len(todo), len(jobs), args.lanes, parts)
    run_lanes(todo, args.lanes, args.seconds)
    reports = {}
    for set_name in dict.fromkeys(s for s, _, _ in jobs):
        done = [parts / name for s, name, _ in jobs if s == set_name and (parts / name / "metrics.json").is_file()]
        total = sum(s == set_name for s, _, _ in jobs)
        if not done:
            logger.warning("%s: no chunk finished", set_name)
            continue
        data = merge_reports(done, args.output / set_name)
        label = f"{set_name} ({args.procedural if set_name == 'procedural' else args.data}; " \
                f"{len(data['assets'])} assets, {len(done)}/{total} chunks)"
        reports[label] = data
    if not reports:
        logger.error("nothing finished; see the logs in %s", parts)
        return 1
    md, js = write_ceilings(args.output, reports)
    print(json.dumps({"table": str(md), "json": str(js),
                      "reports": [str(args.output / s) for s in ("procedural", "dev") if (args.output / s).is_dir()]},
                     indent=1))
    print(Path(md).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
