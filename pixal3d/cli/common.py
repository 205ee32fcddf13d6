"""Options and helpers shared by several `pixal3d` subcommands: model choice, device, pipeline loading."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from pixal3d.errors import InputError

logger = logging.getLogger("pixal3d")


def device_from_arg(name: str) -> str:
    """`--device` -> a torch device string: "auto" picks CUDA when available; CUDA asked for but absent raises."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def add_model_options(p: argparse.ArgumentParser, presets: Sequence[str]) -> None:
    """`--model` | `--random-weights`, `--allow-download` and `--device`, read back by `load_pipeline`."""
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None,
                        help="'default' (the shipped weights), a folder from save_pretrained, or a hub name "
                        "(with --allow-download); default: 'default'")
    source.add_argument("--random-weights", choices=list(presets), default=None,
                        help="randomly initialised weights of this size instead of trained ones: how the tool runs "
                        "before trained weights ship (results are then noise-shaped)")
    p.add_argument("--allow-download", action="store_true", help="allow --model to name a Hugging Face hub repo")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on a GPU, launch every flow call eagerly instead of replaying CUDA graphs (slower; "
                   "for debugging)")


def load_pipeline(args: argparse.Namespace):  # -> Pixal3DPipeline (imported lazily)
    """The pipeline that `add_model_options` selected, on the chosen device."""
    from pixal3d.pipeline import Pixal3DPipeline

    device = device_from_arg(args.device)
    if args.random_weights is not None:
        logger.warning("using RANDOM %s weights: results show the data flow, not a real model", args.random_weights)
        pipe = Pixal3DPipeline.from_config(args.random_weights)
    else:
        pipe = Pixal3DPipeline.from_pretrained(args.model or "default", allow_download=args.allow_download)
    pipe.cuda_graphs = args.cuda_graphs
    return pipe.to(device)
