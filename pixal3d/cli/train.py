"""`pixal3d train` and `pixal3d assemble`: the training entry point and trained runs -> a pipeline folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from pixal3d.errors import InputError


# -------------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one model (a VAE or a flow stage) from a JSON config",
        description="Train the model named in CONFIG (see configs/). One process: pixal3d train CONFIG. "
        "Several: torchrun --nproc_per_node=N -m pixal3d train CONFIG (DDP; NCCL on GPUs, gloo on CPU).",
    )
    p.add_argument("config", type=Path, help="training config (JSON, keys of pixal3d.training.config.TrainConfig)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    p.add_argument("--out-dir", type=Path, default=None, help="override the config's out_dir")
    p.add_argument("--init-weights", type=Path, default=None,
                   help="start from these weights instead of the config's init_weights: a pipeline folder, a "
                   "checkpoint folder or a .safetensors file (a resumed run continues from its checkpoint)")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this many steps (train in chunks)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (with a checkpoint) after about this many minutes of training (time-limited machines)")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pixal3d.config import load_config
    from pixal3d.training.config import TrainConfig
    from pixal3d.training.loop import train

    config = load_config(TrainConfig, args.config)
    if args.out_dir is not None:
        config = replace(config, out_dir=str(args.out_dir))
    if args.init_weights is not None:
        if not args.init_weights.exists():
            raise InputError(f"--init-weights {args.init_weights}: no such file or folder; give a pipeline folder "
                             "(e.g. pixal3d/weights/default), a checkpoint folder or a .safetensors file")
        config = replace(config, init_weights=str(args.init_weights))
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise InputError(f"--max-minutes must be > 0, got {args.max_minutes}")
    time_limit = None if args.max_minutes is None else 60.0 * args.max_minutes
    result = train(config, resume=args.resume, stop_at=args.stop_at, time_limit=time_limit)
    if result.checkpoint is not None:
        print(f"trained {config.model} to step {result.step}; checkpoint {result.checkpoint}")
    return 0


# -------------------------------------------------------------------------------------------------- assemble
def _add_assemble(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "assemble",
        help="collect trained runs (3 VAEs, 3 flows) into a pipeline folder for --model / from_pretrained",
        description="Build a pipeline folder from six training runs. Each run defaults to RUNS/<component>_tiny "
        "(the out_dir of configs/<component>_tiny.json); override any with its option. Also: --make-encoder DIR "
        "writes the ImageNet-initialised encoder that the flow configs freeze and share.",
    )
    p.add_argument("runs", type=Path, nargs="?", default=Path("runs"), help="folder holding the runs (default runs)")
    p.add_argument("-o", "--output", type=Path, default=None, help="pipeline folder to write")
    p.add_argument("--suffix", default="_tiny", help="run-name suffix after the component name (default _tiny)")
    for name in ("structure_vae", "structure_flow", "shape_vae", "shape_flow", "texture_vae", "texture_flow"):
        p.add_argument(f"--{name.replace('_', '-')}", type=Path, default=None, help=f"the {name} run folder")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16",
                   help="on-disk weight dtype (default float16)")
    p.add_argument("--weights", choices=["ema", "model"], default="ema", help="which weights of each run (default ema)")
    p.add_argument("--shape-decoder", choices=["edges"], default=None,
                   help='write the shape VAE as an "edges" decoder: a "corners" run keeps its vertex and edge outputs '
                   "and drops the corner and open ones (default: the decoder as trained)")
    p.add_argument("--make-encoder", type=Path, default=None, metavar="DIR",
                   help="instead: write the ImageNet-initialised encoder component to DIR and exit")
    p.add_argument("--add-heads", type=Path, default=None, metavar="RUN",
                   help="instead: copy the pipeline --base with the FoV / depth heads that the flow run RUN trained "
                        "(e.g. runs/depth_head_tiny) put in, to -o")
    p.add_argument("--base", type=Path, default=Path("pixal3d/weights/default"),
                   help="with --add-heads: the pipeline to start from (default pixal3d/weights/default)")
    p.set_defaults(func=_run_assemble)


def _run_assemble(args: argparse.Namespace) -> int:
    import torch

    from pixal3d.training.assemble import RUN_COMPONENTS, add_heads, assemble_pipeline, make_encoder_component

    if args.make_encoder is not None:
        print(f"wrote {make_encoder_component(args.make_encoder)}")
        return 0
    if args.output is None:
        raise InputError("assemble: give -o OUTPUT, the pipeline folder to write")
    if args.add_heads is not None:
        folder, heads = add_heads(args.base, args.add_heads, args.output, dtype=getattr(torch, args.dtype),
                                  weights=args.weights)
        print(f"wrote {folder}: {args.base} with {heads} from {args.add_heads}")
        return 0
    runs = {name: getattr(args, name) or args.runs / f"{name}{args.suffix}" for name in RUN_COMPONENTS}
    folder = assemble_pipeline(runs, args.output, dtype=getattr(torch, args.dtype), weights=args.weights,
                               shape_decoder=args.shape_decoder)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB)")
    return 0
