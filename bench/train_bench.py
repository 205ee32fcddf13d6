"""Training throughput of the tiny (or micro) models on procedural data: samples/s, tokens/s, peak memory.

For each model (structure/shape/texture VAE, structure/shape/texture flow) this builds the run exactly as
`pixal3d train configs/<name>.json` does (`loop.build_model`, `configure_optimizer`, bf16 autocast on CUDA,
gradient clipping, DDP under torchrun), then times `--steps` optimizer steps after `--warmup` steps. The data
engine is timed apart: each rank first makes a pool of `--pool` procedural samples (on its device) and the
model steps cycle over batches collated from that pool and already on the device, so the figures measure the
model, not the engine. By default every rank makes the same pool (the one-process stream's first samples): sparse
models' step time follows the voxel count of the samples, so 1-GPU and N-GPU figures compare only when each rank
does the same work; `--rank-shares` gives each rank its own share of the stream instead, as training does. Flows use randomly initialised frozen VAEs and encoder (no
ImageNet file needed; the speed is the same).

Tokens: flow tokens per sample (dense `(G/p)^3`, sparse: latent tokens on the active coarse voxels); sparse VAEs:
active fine voxels; the dense structure VAE: voxels of its `R^3` grid. The batch per GPU is the config's
`batch_size` (or `--batch`); under torchrun the global batch is `world_size` times that, and samples/s and
tokens/s are global.

    python bench/train_bench.py --device cpu --size micro --steps 3 --warmup 1 --pool 4
    python bench/train_bench.py                                     # one GPU, all six tiny models
    torchrun --nproc_per_node=2 bench/train_bench.py                # two GPUs (NCCL)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pixal3d.config import load_config
from pixal3d.data.dataset import ProceduralStream
from pixal3d.data.shards import SampleOptions
from pixal3d.training.config import TrainConfig
from pixal3d.training.data import collate_samples
from pixal3d.training.loop import batch_to, build_model, configure_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("structure_vae", "shape_vae", "texture_vae", "structure_flow", "shape_flow", "texture_flow")


def bench_config(name: str, size: str) -> TrainConfig:
    """The model's config; flows get the VAE configs of the same size instead of VAE checkpoints."""
    if name.endswith("_vae"):
        return load_config(TrainConfig, CONFIGS / f"{name}_{size}_procedural.json")
    config = load_config(TrainConfig, CONFIGS / f"{name}_{size}.json")
    stage = config.flow.stage
    vae = load_config(TrainConfig, CONFIGS / f"{stage}_vae_{size}_procedural.json").model_config
    shape = load_config(TrainConfig, CONFIGS / f"shape_vae_{size}_procedural.json").model_config
    flow = dataclasses.replace(config.flow, vae_checkpoint=None, vae_config=vae, shape_vae_checkpoint=None,
                               shape_vae_config=shape if stage == "texture" else {},
                               encoder=dataclasses.replace(config.flow.encoder, pretrained=False),
                               encoder_checkpoint=None)
    return dataclasses.replace(config, flow=flow)


def make_pool(config: TrainConfig, count: int, rank: int, world: int, device: torch.device) -> tuple[list, float]:
    """This rank's first `count` stream samples (made on `device`) and the seconds it took."""
    d = config.data
    options = SampleOptions(image_size=d.image_size, resolution=d.resolution, coarse=d.coarse_resolution, seed=d.seed)
    stream = ProceduralStream(options, d.views, d.seed_offset, rank=rank, world_size=world, device=str(device))
    stream.make(0)  # warm-up: first-call costs (kernels, caches) are not the steady-state rate
    _sync(device)
    start = time.perf_counter()
    pool = [stream.make(i) for i in range(1, count + 1)]
    _sync(device)
    return pool, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_tokens(name: str, config: TrainConfig, batch: dict) -> int:
    """Tokens in a (CPU) batch, as defined in the module docstring."""
    mc, b = config.model_config, batch["image"].shape[0]
    if name == "structure_vae":
        return b * mc["resolution"] ** 3
    if name in ("shape_vae", "texture_vae"):
        return int(batch["coords"].shape[0])
    if name == "structure_flow":
        return b * (mc["resolution"] // mc.get("patch_size", 2)) ** 3
    factor = config.data.resolution // mc["resolution"]
    coarse = batch["coords"].long()
    coarse[:, 1:] //= factor
    return int(torch.unique(coarse, dim=0).shape[0])


def bench_model(name: str, config: TrainConfig, pool: list, batch: int, steps: int, warmup: int,
                device: torch.device, world: int) -> dict:
    torch.manual_seed(config.seed)
    model, objective, _ = build_model(config, device)
    optimizer = configure_optimizer(model, config)
    wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    wrapped.train()
    n = max(len(pool) // batch, 1)
    cpu_batches = [collate_samples([pool[(i * batch + j) % len(pool)] for j in range(batch)]) for i in range(n)]
    tokens = [count_tokens(name, config, b) for b in cpu_batches]
    batches = [batch_to(b, device) for b in cpu_batches]
    generator = torch.Generator(device=device).manual_seed(config.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        with autocast:
            loss, _ = objective(wrapped, batches[i % n], generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    _sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(device)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    seen = torch.tensor([float(sum(tokens[i % n] for i in range(warmup, warmup + steps)))], dtype=torch.float64,
                        device=device)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0],
                        dtype=torch.float64, device=device)
    if world > 1:  # the slowest rank sets the pace; tokens add up over ranks
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        dist.all_reduce(seen)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    seconds = float(elapsed)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model": name, "params_m": params / 1e6, "batch_per_gpu": batch, "gpus": world,
            "samples_per_s": world * batch * steps / seconds, "tokens_per_s": float(seen) / seconds,
            "tokens_per_sample": float(seen) / (world * batch * steps), "step_ms": 1000 * seconds / steps,
            "peak_mib": float(peak)}


def markdown(rows: list[dict], engine: dict) -> str:
    lines = ["| model | trainable params (M) | GPUs x batch | samples/s | tokens/s | tokens/sample | ms/step | "
             "peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['gpus']} x {r['batch_per_gpu']} | "
                     f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:,.0f} | {r['tokens_per_sample']:,.0f} | "
                     f"{r['step_ms']:.1f} | {r['peak_mib']:,.0f} |")
    lines.append("")
    lines.append(f"Data engine (S={engine['image_size']}, R_hr={engine['resolution']}, one process per rank on "
                 f"{engine['device']}): {engine['samples_per_s']:.2f} samples/s over {engine['ranks']} rank(s).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=["micro", "tiny"], default="tiny")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    parser.add_argument("--pool", type=int, default=8, help="procedural samples made per rank")
    parser.add_argument("--rank-shares", action="store_true",
                        help="each rank pools its own share of the stream (default: all ranks the same samples)")
    parser.add_argument("--batch", type=int, default=0, help="batch per GPU (0: the config's batch_size)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here (rank 0)")
    args = parser.parse_args()

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    configs = {name: bench_config(name, args.size) for name in args.models}
    first = next(iter(configs.values()))
    pool_rank, pool_world = (rank, world) if args.rank_shares else (0, 1)
    pool, seconds = make_pool(first, args.pool, pool_rank, pool_world, device)
    rate = torch.tensor([args.pool / seconds], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(rate)
    engine = {"image_size": first.data.image_size, "resolution": first.data.resolution, "device": str(device.type),
              "ranks": world, "samples_per_s": float(rate)}
    rows = []
    for name, config in configs.items():
        batch = args.batch or config.batch_size
        rows.append(bench_model(name, config, pool, batch, args.steps, args.warmup, device, world))
        if rank == 0:
            print(json.dumps(rows[-1]), flush=True)
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"\n{name}, torch {torch.__version__}, size {args.size}, {args.steps} steps after {args.warmup}\n")
        print(markdown(rows, engine))
        result = {"device": name, "torch": torch.__version__, "size": args.size, "engine": engine, "models": rows}
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
