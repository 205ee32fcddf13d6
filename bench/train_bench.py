"""Training throughput and MFU of the tiny (or micro) models on procedural data; a profiler mode names the top kernels
and host syncs of each model's step.

For each model (structure/shape/texture VAE, structure/shape/texture flow) this builds the run exactly as
`pixal3d train configs/<name>.json` does (`loop.build_model`, `configure_optimizer`, bf16 autocast on CUDA) and
times `--steps` calls of the trainer's own step (`loop.train_step`: forward, backward, gradient clipping,
optimizer, EMA; gradient all-reduce under torchrun) after `--warmup` steps. The data engine is timed apart: each
rank first makes a pool of `--pool` procedural samples (on its device) and the model steps cycle over batches
collated from that pool and already on the device, so the figures measure the model, not the engine. By default
every rank makes the same pool (the one-process stream's first samples): sparse models' step time follows the
voxel count of the samples, so 1-GPU and N-GPU figures compare only when each rank does the same work;
`--rank-shares` gives each rank its own share of the stream instead, as training does. Flows use randomly
initialised frozen VAEs and encoder (no ImageNet file needed; the speed is the same).

FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one whole eager step (forward + backward + optimizer; it
counts matmuls, convolutions and attention, the frozen VAEs' encoding of a flow's batch included) on one rank.
TFLOP/s = FLOP/step / (s/step); MFU = TFLOP/s / `--peak-tflops` (default 790: an H200's dense bf16 peak, what the
autocast runs use; an H100 SXM's is 989: pass the figure of the GPU at hand).

Tokens: flow tokens per sample (dense `(G/p)^3`, sparse: latent tokens on the active coarse voxels); sparse VAEs:
active fine voxels; the dense structure VAE: voxels of its `R^3` grid. The batch per GPU is the config's
`batch_size` (or `--batch`); under torchrun the global batch is `world_size` times that, and samples/s and
tokens/s are global.

`--profile` then runs `--profile-steps` more steps under `torch.profiler` and prints, per model, the top ops and
kernels by self CUDA time (CPU time on the CPU) and the host syncs per step: on CUDA every synchronising call
`torch.cuda.set_sync_debug_mode("warn")` reports (`.item()`, `nonzero`, boolean masks, D2H copies...), grouped by
the Python line that made it, plus the profiler's `cudaStreamSynchronize` / `cudaDeviceSynchronize` / D2H memcpy
events; on the CPU, the Python-level reads of tensor values (`item`, `tolist`, `bool/int/float(tensor)`), each of
which would be a sync on a GPU.

    python bench/train_bench.py --device cpu --size micro --steps 3 --warmup 1 --pool 4
    python bench/train_bench.py                                     # one GPU, all six tiny models
    python bench/train_bench.py --profile --steps 10                # + top kernels and host syncs per step
    python bench/train_bench.py --batch structure_vae=128 shape_vae=32 --compile --optimizer-impl fused
    torchrun --nproc_per_node=2 bench/train_bench.py                # two GPUs (NCCL)
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import itertools
import json
import os
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.flop_counter import FlopCounterMode

from pixal3d.config import load_config
from pixal3d.data.dataset import ProceduralStream
from pixal3d.data.shards import SampleOptions
from pixal3d.training.config import TrainConfig
from pixal3d.training.data import collate_samples
from pixal3d.training.loop import batch_to, build_model, configure_optimizer, train_step

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("structure_vae", "shape_vae", "texture_vae", "structure_flow", "shape_flow", "texture_flow")
SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "Memcpy DtoH")
"""Profiler event names that mean the host waited for the GPU (runtime calls and device-to-host copies)."""
VALUE_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
"""Tensor methods that read a value to the host (a sync on a GPU)."""


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
    stream = ProceduralStream(options, d.views, d.seed_offset, rank=rank, world_size=world, device=str(device),
                              family_set=d.families)
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


class StepRunner:
    """One model's training step as the trainer runs it (`loop.train_step`), over a fixed list of device batches."""

    def __init__(self, config: TrainConfig, pool: list, batch: int, device: torch.device, world: int,
                 compile_mode: str | None) -> None:
        torch.manual_seed(config.seed)
        self.config, self.device = config, device
        self.model, self.objective, _ = build_model(config, device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval() if config.ema_decay > 0 else None
        self.optimizer = configure_optimizer(self.model, config)
        n = max(len(pool) // batch, 1)
        self.cpu_batches = [collate_samples([pool[(i * batch + j) % len(pool)] for j in range(batch)])
                            for i in range(n)]
        self.batches = itertools.cycle([batch_to(b, device) for b in self.cpu_batches])
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        if config.flow is not None and config.flow.latent_cache:
            for _ in self.cpu_batches:  # fill the latent cache first, so the counted step is a cached one
                self.step(self.model)
        self.flops = self._count_flops()  # one eager step, before any wrapping (DDP re-broadcasts the weights)
        wrapped = torch.compile(self.model, mode=compile_mode) if compile_mode else self.model
        if world > 1:
            wrapped = DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
        self.wrapped = wrapped
        self.wrapped.train()

    def step(self, model: torch.nn.Module | None = None) -> None:
        train_step(model or self.wrapped, self.model, self.objective, self.optimizer, self.ema, self.batches,
                   self.generator, self.config, self.autocast, self.device)

    def _count_flops(self) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.step(self.model)
        return int(counter.get_total_flops())


def bench_model(name: str, config: TrainConfig, pool: list, batch: int, steps: int, warmup: int,
                device: torch.device, world: int, args: argparse.Namespace) -> tuple[dict, StepRunner]:
    """Time `steps` trainer steps of `name` after `warmup`; the result row and the runner (for `--profile`)."""
    # One batch per step (the --batch is the step's), clipping on as in every shipped config.
    config = dataclasses.replace(config, optimizer_impl=args.optimizer_impl, grad_clip=config.grad_clip or 1.0,
                                 grad_accum_steps=1)
    if config.flow is not None:  # the pool's batches come round again, as shard epochs do
        config = dataclasses.replace(config, flow=dataclasses.replace(config.flow, latent_cache=args.latent_cache))
    runner = StepRunner(config, pool, batch, device, world, args.compile_mode if args.compile else None)
    tokens = [count_tokens(name, config, b) for b in runner.cpu_batches]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        runner.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    _sync(device)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    n = len(tokens)
    seen = torch.tensor([float(sum(tokens[i % n] for i in range(1 + warmup, 1 + warmup + steps)))],
                        dtype=torch.float64, device=device)
    peak = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0],
                        dtype=torch.float64, device=device)
    if world > 1:  # the slowest rank sets the pace; tokens add up over ranks
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        dist.all_reduce(seen)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    seconds = float(elapsed) / steps
    params = sum(p.numel() for p in runner.model.parameters() if p.requires_grad)
    tflops = runner.flops / seconds / 1e12
    row = {"model": name, "params_m": params / 1e6, "batch_per_gpu": batch, "gpus": world,
           "step_ms": 1000 * seconds, "gflop_per_step": runner.flops / 1e9, "tflops": tflops,
           "mfu_pct": 100 * tflops / args.peak_tflops, "peak_gib": float(peak),
           "samples_per_s": world * batch / seconds, "tokens_per_s": float(seen) / (seconds * steps),
           "tokens_per_sample": float(seen) / (world * batch * steps),
           "optimizer_impl": args.optimizer_impl, "compile": args.compile_mode if args.compile else None,
           "latent_cache": args.latent_cache}
    return row, runner


def profile_model(runner: StepRunner, steps: int, top: int) -> str:
    """The top ops/kernels and the host syncs per step of `steps` profiled steps, as text."""
    from torch.profiler import ProfilerActivity, profile

    cuda = runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    runner.step()  # settle after the timed loop
    _sync(runner.device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            runner.step()
        _sync(runner.device)
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    lines = [events.table(sort_by=sort, row_limit=top)]
    if cuda:
        counts = {e.key: e.count for e in events if any(e.key.startswith(k) for k in SYNC_EVENTS)}
        lines.append("profiler sync events per step: " + (", ".join(
            f"{k} {v / steps:g}" for k, v in sorted(counts.items())) or "none"))
    sites = _sync_sites(runner, steps)
    what = "host syncs (torch.cuda sync debug mode)" if cuda else "tensor value reads (a host sync each on a GPU)"
    lines.append(f"{what} per step: {sum(sites.values()) / steps:g}")
    for (where, kind), count in sites.most_common(top):
        lines.append(f"  {count / steps:>6g}  {kind:<10} {where}")
    return "\n".join(lines)


def _sync_sites(runner: StepRunner, steps: int) -> collections.Counter:
    """Host syncs of `steps` steps by (Python line, kind): CUDA's sync debug mode, or value reads on the CPU."""
    sites: collections.Counter = collections.Counter()
    if runner.device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    runner.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        for w in caught:
            if "synchroniz" in str(w.message):
                sites[(f"{w.filename}:{w.lineno}", "sync")] += 1
        return sites
    originals = {name: getattr(torch.Tensor, name) for name in VALUE_READS}

    def counted(name: str):
        def read(self, *args):
            frame = _caller()
            sites[(frame, name.strip("_"))] += 1
            return originals[name](self, *args)
        return read

    try:
        for name in VALUE_READS:
            setattr(torch.Tensor, name, counted(name))
        for _ in range(steps):
            runner.step()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return sites


def _caller() -> str:
    """`file:line` of the innermost frame outside this file and torch (where a value read was asked for)."""
    import traceback

    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}"
    return "torch"


def markdown(rows: list[dict], engine: dict) -> str:
    lines = ["| model | batch | ms/step | GFLOP/step | TFLOP/s | MFU % | peak GiB | samples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        batch = f"{r['gpus']} x {r['batch_per_gpu']}" if r["gpus"] > 1 else f"{r['batch_per_gpu']}"
        gflop = f"{r['gflop_per_step']:,.0f}" if r["gflop_per_step"] >= 100 else f"{r['gflop_per_step']:.3g}"
        lines.append(f"| {r['model']} | {batch} | {r['step_ms']:.1f} | {gflop} | {r['tflops']:.3g} | "
                     f"{r['mfu_pct']:.3g} | {r['peak_gib']:.1f} | {r['samples_per_s']:.1f} |")
    lines.append("")
    lines.append(f"Data engine (S={engine['image_size']}, R_hr={engine['resolution']}, one process per rank on "
                 f"{engine['device']}): {engine['samples_per_s']:.2f} samples/s over {engine['ranks']} rank(s).")
    return "\n".join(lines)


def parse_batches(values: list[str]) -> dict[str, int]:
    """`--batch 64` (every model) and/or `--batch structure_vae=128 shape_vae=16` -> {model or "*": batch}."""
    out = {}
    for value in values:
        name, _, size = value.rpartition("=")
        if name and name not in MODELS:
            raise SystemExit(f"--batch {value}: unknown model {name!r}; known: {', '.join(MODELS)}")
        if not size.isdigit() or int(size) < 1:
            raise SystemExit(f"--batch {value}: the batch must be a positive integer")
        out[name or "*"] = int(size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=["micro", "tiny"], default="tiny")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model (after the FLOP-counting one)")
    parser.add_argument("--pool", type=int, default=8, help="procedural samples made per rank")
    parser.add_argument("--rank-shares", action="store_true",
                        help="each rank pools its own share of the stream (default: all ranks the same samples)")
    parser.add_argument("--batch", nargs="+", default=[], metavar="[MODEL=]B",
                        help="batch per GPU: one value for every model and/or MODEL=B (default: the config's)")
    parser.add_argument("--peak-tflops", type=float, default=790.0,
                        help="the GPU's peak TFLOP/s for the MFU column (default 790: H200 dense bf16)")
    parser.add_argument("--optimizer-impl", choices=["default", "foreach", "fused"], default="default",
                        help="AdamW implementation (TrainConfig.optimizer_impl)")
    parser.add_argument("--latent-cache", type=int, default=0, metavar="N",
                        help="flows: keep N samples' VAE posteriors on the device (FlowTrainConfig.latent_cache)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (TrainConfig.compile)")
    parser.add_argument("--compile-mode", default="default",
                        help='torch.compile mode with --compile ("default", "reduce-overhead", "max-autotune")')
    parser.add_argument("--profile", action="store_true", help="also print top kernels and host syncs per step")
    parser.add_argument("--profile-steps", type=int, default=3, help="steps profiled per model with --profile")
    parser.add_argument("--top", type=int, default=15, help="rows of the --profile tables")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here (rank 0)")
    args = parser.parse_args()
    batches = parse_batches(args.batch)

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
    rows, profiles = [], {}
    for name, config in configs.items():
        batch = batches.get(name, batches.get("*", config.batch_size))
        row, runner = bench_model(name, config, pool, batch, args.steps, args.warmup, device, world, args)
        rows.append(row)
        if rank == 0:
            print(json.dumps(row), flush=True)
        if args.profile:
            profiles[name] = profile_model(runner, args.profile_steps, args.top)
            if rank == 0:
                print(f"\n### {name}: profile of {args.profile_steps} steps\n\n{profiles[name]}\n", flush=True)
        del runner
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        extras = [f"optimizer {args.optimizer_impl}"] + ([f"torch.compile ({args.compile_mode})"] if args.compile else [])
        print(f"\n{name}, torch {torch.__version__}, size {args.size}, {args.steps} steps after {args.warmup}, "
              f"{', '.join(extras)}, MFU of {args.peak_tflops:g} TFLOP/s\n")
        print(markdown(rows, engine))
        result = {"device": name, "torch": torch.__version__, "size": args.size, "peak_tflops": args.peak_tflops,
                  "engine": engine, "models": rows}
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
