"""The `pixal3d` command line: argparse subcommands that parse, call the library, and report.

No logic lives here: each subcommand is a pair `_add_<name>(subparsers)` (its options) and `_run_<name>(args)`
(one call into the library), one module per topic: `assets.py` (preprocess, convert, generate), `data.py`
(data ...), `train.py` (train, assemble), `eval.py`, `bench.py`, `serve.py` (serve, demo); `common.py` holds the
shared model and device options. A new subcommand adds its pair and one entry to `COMMANDS`. Heavy modules are imported inside the `_run_` functions so
that `pixal3d --help` stays instant.

Exit codes: 0 success, 1 unexpected failure, 2 a user mistake (`InputError`, bad options).
Angles are degrees on the command line and radians in the library; the conversion happens here, once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pixal3d import __version__
from pixal3d.cli.assets import _add_convert, _add_generate, _add_preprocess
from pixal3d.cli.bench import _add_bench
from pixal3d.cli.data import _add_data
from pixal3d.cli.eval import _add_eval
from pixal3d.cli.serve import _add_demo, _add_serve
from pixal3d.cli.train import _add_assemble, _add_train
from pixal3d.errors import InputError

COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_preprocess, _add_convert, _add_data, _add_train, _add_assemble, _add_generate, _add_eval, _add_bench, _add_serve,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixal3d",
        description="Pixel-aligned 3D asset generation from a single image.",
    )
    parser.add_argument("--version", action="version", version=f"pixal3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"pixal3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C (or SIGINT from a supervisor): stop quietly, no traceback
        print(f"pixal3d {args.command}: interrupted", file=sys.stderr)
        return 130
