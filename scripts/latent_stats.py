"""Per-channel mean and std of the VAE latents a flow run learns (issue 15: unit-variance latents).

    python scripts/latent_stats.py configs/shape_flow_tiny.json --batches 8           # print them
    python scripts/latent_stats.py configs/shape_flow_tiny.json --batches 8 --write   # into the config

The run's frozen VAE(s) and data source are built as `pixal3d train` builds them; `--batches` batches are encoded
to posterior means (the flow's target with `"latent": "mean"`), and the mean and std of each channel over every
latent cell (dense: the whole grid; sparse: every active token) are reported. `--write` puts them into the config's
`model_config` as `latent_mean` / `latent_std`: a flow trained with them learns unit-variance latents, keeps the
stats in its config, and the pipeline's stages map its samples back before decoding (`models.flow`). Stats belong
to the training: a flow trained without them must not get them afterwards (its samples would be rescaled).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pixal3d.config import load_config
from pixal3d.errors import InputError
from pixal3d.sparse import SparseTensor
from pixal3d.training.conditioned import load_stage_vaes
from pixal3d.training.config import TrainConfig
from pixal3d.training.latent_cache import encode_batch
from pixal3d.training.loop import batch_to, make_data_source


def latent_stats(config: TrainConfig, batches: int, device: torch.device) -> tuple[list[float], list[float]]:
    """`(mean, std)` per latent channel over `batches` batches of the run's data."""
    if config.model != "flow" or config.flow is None:
        raise InputError(f"latent stats are for flow runs (\"model\": \"flow\"), got {config.model!r}")
    fc = config.flow
    vaes = load_stage_vaes(fc, device)
    source = iter(make_data_source(config.data, config.batch_size, 0, 1, device))
    rows = []
    with torch.no_grad():
        for _ in range(batches):
            mean = encode_batch(fc.stage, vaes, batch_to(next(source), device))[0]
            feats = mean.feats if isinstance(mean, SparseTensor) else mean.movedim(1, -1).reshape(-1, mean.shape[1])
            rows.append(feats.float().cpu())
    values = torch.cat(rows)
    return values.mean(0).tolist(), values.std(0).clamp_min(1e-6).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="a flow run's training config (JSON)")
    p.add_argument("--batches", type=int, default=8, help="batches to encode (default 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--write", action="store_true", help="write latent_mean / latent_std into the config's model_config")
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be >= 1")
    try:
        mean, std = latent_stats(load_config(TrainConfig, args.config), args.batches, torch.device(args.device))
    except InputError as err:
        print(f"latent_stats: {err}", file=sys.stderr)
        return 2
    stats = {"latent_mean": [round(v, 5) for v in mean], "latent_std": [round(v, 5) for v in std]}
    print(json.dumps(stats))
    if args.write:
        raw = json.loads(args.config.read_text())
        raw.setdefault("model_config", {}).update(stats)
        args.config.write_text(json.dumps(raw, indent=2) + "\n")
        print(f"wrote them into {args.config}'s model_config")
    return 0


if __name__ == "__main__":
    sys.exit(main())
