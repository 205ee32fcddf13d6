"""The one training loop (DESIGN section 8): `train(config)` reads top to bottom, like nanoGPT's train.py.

Single process: `pixal3d train configs/x.json`. Several processes: `torchrun --nproc_per_node=N -m pixal3d train
configs/x.json`; torchrun's `RANK` / `WORLD_SIZE` / `LOCAL_RANK` / `MASTER_ADDR` / `MASTER_PORT` select DDP
(NCCL on GPUs, gloo on CPU). `batch_size` is global: every rank draws `batch_size / world_size` samples per
optimizer step (in `grad_accum_steps` micro-batches), and the global batch at each step is the same whatever the
rank count. Every `eval_interval` steps the EMA weights are evaluated on a fixed held-out set
(`pixal3d.training.heldout`), logged beside the training loss in `metrics.jsonl`.

Exact resume: a checkpoint holds the weights, the EMA, the optimizer state, every rank's RNG states and the data
position, so `max_steps = 20` in one go equals `stop_at = 10`, then `resume`, bitwise on CPU. `stop_at` trains
in chunks (the schedule still spans `max_steps`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pixal3d.config import config_from_dict, config_to_dict, save_config
from pixal3d.errors import InputError
from pixal3d.models import model_classes
from pixal3d.training.checkpoint import (
    check_tensors,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    optimizer_tensors,
    remove_stale_temps,
    restore_optimizer,
    restore_rng_state,
    resumable_checkpoint,
    rng_state,
    save_checkpoint,
)
from pixal3d.training.conditioned import build_conditioned_flow, pipeline_init_tensors
from pixal3d.training.config import DataConfig, TrainConfig
from pixal3d.training.data import ProceduralSource, ShardSource
from pixal3d.training.heldout import estimate_heldout, fixed_batches, heldout_data_config
from pixal3d.training.metrics_log import LogWindow, append_metrics, truncate_metrics
from pixal3d.training.objectives import OBJECTIVES, Objective
from pixal3d.training.synthetic import SyntheticSource

DataSource = SyntheticSource | ProceduralSource | ShardSource

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `train` returns (on every rank)."""

    step: int
    """Optimizer steps done."""
    checkpoint: Path | None
    """The last checkpoint written (None on ranks other than 0)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The last logged metrics (rank-averaged)."""


def get_lr(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `max_steps`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def make_data_source(data: DataConfig, batch_size: int, rank: int, world_size: int,
                     device: torch.device) -> DataSource:
    """The rank's data source: an iterable of batch dicts with `state_dict()` / `load_state_dict()`."""
    sources = {"synthetic": SyntheticSource, "procedural": ProceduralSource, "shards": ShardSource}
    if data.kind not in sources:
        raise InputError(f"unknown data kind {data.kind!r}; known kinds: {sorted(sources)}")
    return sources[data.kind](data, batch_size, rank, world_size, device)


def build_model(config: TrainConfig, device: torch.device) -> tuple[nn.Module, Objective, Any]:
    """The trainable module, its objective and its config (`model_config`, or the flow run's components).

    `"model": "flow"` builds encoder + flow (+ FoV head) over frozen VAEs (`pixal3d.training.conditioned`);
    every other model is `MODELS[name](model_config)` with `OBJECTIVES[name]`. Call after seeding: the initial
    weights come from the global torch RNG.
    """
    if config.model == "flow":
        return build_conditioned_flow(config, device)
    config_cls, model_cls = model_classes(config.model)
    if config.model not in OBJECTIVES:
        raise InputError(f"no training objective for model {config.model!r}; trainable: {sorted(OBJECTIVES)}")
    model_config = config_from_dict(config_cls, config.model_config, where=f"{config.model} model_config")
    _check_data(config.model, model_config, config.data)
    return model_cls(model_config).to(device), OBJECTIVES[config.model], model_config


def init_weights(model: nn.Module, config: TrainConfig) -> None:
    """Load `config.init_weights` strictly: a safetensors file, a checkpoint folder, or a pipeline folder."""
    path = Path(config.init_weights)
    if (path / "pipeline.json").is_file():
        tensors = pipeline_init_tensors(path, config)
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith("depth_head.") and k not in tensors}
        if fresh:
            logger.info("the pipeline %s has no depth head: it starts from random weights", path)
        tensors |= fresh
        check_tensors(model.state_dict(), tensors, f"init_weights {path}")
        model.load_state_dict(tensors, strict=True)
        logger.info("initialised from the pipeline %s", path)
    else:
        load_weights(model, path)


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> None:
    """Stop the gradient of every parameter whose name starts with one of `prefixes` (`TrainConfig.freeze`)."""
    if not prefixes:
        return
    names = [name for name, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(name.startswith(p) for name in names)]
    if unknown:
        roots = sorted({name.split(".")[0] + "." for name in names})
        raise InputError(f"freeze: no parameter name starts with {unknown}; the model's top-level parts are {roots}")
    for name, parameter in model.named_parameters():
        if name.startswith(tuple(prefixes)):
            parameter.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError(f"freeze: {prefixes} freezes every parameter; nothing would train")


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to `device` (other values, e.g. the `Camera` list, stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def configure_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only (biases, norms and 1-D gains are not decayed).

    `config.optimizer_impl` picks torch's implementation: "default" (its own choice), "foreach" or "fused".
    `config.lr_scale` multiplies the learning rate of parameters by name prefix (the first matching prefix wins).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = [prefix for prefix in config.lr_scale if not any(n.startswith(prefix) for n, _ in named)]
    if unknown:
        raise InputError(f"lr_scale: no trainable parameter name starts with {unknown}")
    scales = sorted(set(config.lr_scale.values()) | {1.0})
    groups = []
    for scale in scales:  # one pair of groups (decayed, not decayed) per learning-rate multiplier
        part = [p for n, p in named if _lr_scale(n, config.lr_scale) == scale]
        for decayed in (True, False):
            chosen = [p for p in part if (p.ndim >= 2) == decayed]
            if chosen or scale == 1.0:  # without lr_scale: the same two groups as ever (checkpoints resume)
                groups.append({"params": chosen, "weight_decay": config.weight_decay if decayed else 0.0,
                               "lr_scale": scale})
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    if config.optimizer_impl not in impl:
        raise InputError(f"unknown optimizer_impl {config.optimizer_impl!r}; known: {sorted(impl)}")
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, **impl[config.optimizer_impl])


def _lr_scale(name: str, scales: dict[str, float]) -> float:
    return next((scale for prefix, scale in scales.items() if name.startswith(prefix)), 1.0)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """`ema = decay * ema + (1 - decay) * model` for parameters; buffers are copied.

    Multi-tensor (`torch._foreach_*`) ops: a few kernel launches per step instead of one per tensor, and the
    same values as a per-tensor `lerp_` (tests/test_training.py checks it).
    """
    ema_params, params = list(ema.parameters()), [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError(f"EMA has {len(ema_params)} parameters, the model {len(params)}")
    if params:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)


def _check_data(name: str, model_config: Any, data: DataConfig) -> None:
    """The data resolution must be the model's (the coarse grid for the structure VAE, R_hr for the others)."""
    expected = getattr(model_config, "resolution", None)
    have = data.coarse_resolution if name == "structure_vae" else data.resolution
    key = "coarse_resolution" if name == "structure_vae" else "resolution"
    if expected is not None and name.endswith("_vae") and expected != have:
        raise InputError(f"data.{key} is {have} but the {name} is configured for resolution {expected}; make them equal")


def _gather_json(obj: Any, device: torch.device) -> list[Any]:
    """All ranks' JSON-ready `obj`, in rank order, through a uint8 all-gather (no pickling)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    data = torch.tensor(list(json.dumps(obj).encode()), dtype=torch.uint8, device=device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([data.numel()], device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return [json.loads(bytes(o[: int(s.item())].tolist()).decode()) for o, s in zip(out, sizes, strict=True)]


def restore_training_state(folder: Path, model: nn.Module, ema: nn.Module | None, optimizer: torch.optim.Optimizer,
                           data: DataSource, generator: torch.Generator, rank: int, world_size: int,
                           window: LogWindow | None = None) -> int:
    """Load weights, EMA, optimizer state, data position, this rank's RNG and the open log window from a
    checkpoint; return its step.

    Every tensor's shape is checked against the model first: a mismatch raises one `InputError` naming them.
    """
    tensors, meta = load_checkpoint(folder)
    modules = {"model": model, "ema": ema} if ema is not None else {"model": model}
    for group, module in modules.items():
        if group not in tensors:
            raise InputError(f"checkpoint {folder} has no {group!r} weights; it was written with ema_decay = 0")
        check_tensors(module.state_dict(), tensors[group], f"checkpoint {folder} ({group})")
        module.load_state_dict(tensors[group], strict=True)
    restore_optimizer(optimizer, tensors["optimizer"], meta["optimizer"])
    data.load_state_dict(meta["data"])
    if window is not None and "log_window" in meta:  # older checkpoints have none: the first window is shorter
        window.load_state_dict(meta["log_window"], generator.device)
    if len(meta["rng"]) == world_size:
        restore_rng_state(meta["rng"][rank], generator)
    else:
        logger.warning("checkpoint has RNG states for %d ranks, this run has %d: training noise is re-seeded",
                       len(meta["rng"]), world_size)
    logger.info("resumed %s at step %d", folder, meta["step"])
    return int(meta["step"])


def save_training_state(run_dir: Path, step: int, model: nn.Module, ema: nn.Module | None,
                        optimizer: torch.optim.Optimizer, meta: dict[str, Any], config: TrainConfig) -> Path:
    """Write weights, EMA and optimizer state (sharded safetensors) plus `meta` as one atomic checkpoint."""
    opt_tensors, opt_meta = optimizer_tensors(optimizer)
    groups = {"model": model.state_dict(), "optimizer": opt_tensors}
    if ema is not None:
        groups["ema"] = ema.state_dict()
    return save_checkpoint(run_dir, step, groups, {**meta, "optimizer": opt_meta},
                           max_shard_bytes=int(config.max_shard_mib * 2**20), keep=config.keep_checkpoints)


def _out_of_time(mine: bool, ddp: bool, device: torch.device) -> bool:
    """Whether any rank ran out of time (one all-reduce under DDP, so every rank stops at the same step)."""
    if not ddp:
        return mine
    flag = torch.tensor([float(mine)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def train_step(model: nn.Module, raw_model: nn.Module, objective: Objective, optimizer: torch.optim.Optimizer,
               ema: nn.Module | None, batches: Iterator[dict[str, Any]], generator: torch.Generator,
               config: TrainConfig, autocast: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step over `config.grad_accum_steps` micro-batches; no host sync (the values stay on device).

    Under DDP the gradients are all-reduced once, on the last micro-batch. The losses of the micro-batches are
    averaged, so `grad_accum_steps` micro-batches of B samples give the update of one batch of `grad_accum_steps * B`
    wherever the loss is a mean over samples (the dense models); sparse losses weight each micro-batch's voxels
    by that micro-batch, as nanoGPT weights its micro-batches' tokens.

    Returns:
        The mean loss and the mean of each metric over the micro-batches (detached, on device), with
        `"grad_norm"` among the metrics when clipping is on.
    """
    accum = config.grad_accum_steps
    loss_sum, metric_sums = None, {}
    for micro in range(accum):
        batch = batch_to(next(batches), device)
        sync = micro == accum - 1 or not isinstance(model, DistributedDataParallel)
        with nullcontext() if sync else model.no_sync(), autocast:
            loss, metrics = objective(model, batch, generator)
        (loss / accum if accum > 1 else loss).backward()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        for name, value in metrics.items():
            metric_sums[name] = value if name not in metric_sums else metric_sums[name] + value
    metrics = {name: value / accum for name, value in metric_sums.items()}
    if config.grad_clip:  # the gradient is the mean over the micro-batches: its norm is the whole batch's
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        update_ema(ema, raw_model, config.ema_decay)
    return loss_sum / accum, metrics


def train(config: TrainConfig, resume: bool = False, stop_at: int | None = None,
          time_limit: float | None = None) -> TrainResult:
    """Train `config.model` on `config.data`; see the module docstring.

    Args:
        config: the run.
        resume: continue from the latest checkpoint in `out_dir` (starts at step 0 when there is none).
        stop_at: stop (and checkpoint) once this many steps are done; None trains to `max_steps`.
        time_limit: stop (and checkpoint) at the first logging step after this many seconds of training, so a
            chunk fits a time-limited machine; all ranks stop at the same step.
    """
    # ---------------------------------------------------------------------------------------- distributed setup
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    ddp = world_size > 1
    owns_group = ddp and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    master = rank == 0
    if config.batch_size % (world_size * config.grad_accum_steps):
        raise InputError(f"batch_size {config.batch_size} must be divisible by the {world_size} ranks times "
                         f"grad_accum_steps {config.grad_accum_steps}")
    local_batch = config.batch_size // (world_size * config.grad_accum_steps)  # samples per rank and micro-batch
    run_dir = Path(config.out_dir)
    stop = config.max_steps if stop_at is None else min(stop_at, config.max_steps)

    # ---------------------------------------------------------------------------------------- model, EMA, optimizer
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    raw_model, objective, model_config = build_model(config, device)
    if config.init_weights:
        init_weights(raw_model, config)
    freeze_parameters(raw_model, config.freeze)
    ema = copy.deepcopy(raw_model).requires_grad_(False).eval() if config.ema_decay > 0 else None
    optimizer = configure_optimizer(raw_model, config)
    data = make_data_source(config.data, local_batch, rank, world_size, device)
    heldout = []  # the fixed held-out set: this rank's share, drawn once (pixal3d.training.heldout)
    if config.eval_interval:
        heldout_source = make_data_source(heldout_data_config(config, device), local_batch, rank, world_size, device)
        heldout = fixed_batches(heldout_source, config.eval_batches)
    # Training noise (posterior samples, timesteps) differs per rank; its state is saved per rank.
    torch.manual_seed(config.seed + 1 + rank)
    np.random.seed(config.seed + rank)
    random.seed(config.seed + rank)
    generator = torch.Generator(device=device).manual_seed(config.seed * 1009 + rank)

    # ---------------------------------------------------------------------------------------- resume
    step = 0
    window = LogWindow()
    if master:
        remove_stale_temps(run_dir)  # what a write killed mid-way left behind
    existing = resumable_checkpoint(run_dir) if resume else latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise InputError(f"{run_dir} already holds a checkpoint ({existing.name}); pass --resume to continue "
                         "it, or choose another out_dir")
    if resume and existing is None:
        logger.warning("--resume: no checkpoint in %s yet, starting at step 0", run_dir)
    if resume and existing is not None:
        step = restore_training_state(existing, raw_model, ema, optimizer, data, generator, rank, world_size,
                                      window)

    model = torch.compile(raw_model) if config.compile else raw_model
    model = DistributedDataParallel(model, device_ids=[local_rank] if use_cuda else None) if ddp else model
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_cuda else nullcontext()
    metrics_path = run_dir / "metrics.jsonl"
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")
        truncate_metrics(metrics_path, step)
        n_params = sum(p.numel() for p in raw_model.parameters())
        logger.info("%s: %.2fM parameters, %d rank(s), global batch %d, device %s",
                    config.model, n_params / 1e6, world_size, config.batch_size, device)

    # ---------------------------------------------------------------------------------------- the loop
    result = TrainResult(step=step, checkpoint=None)
    bar = tqdm(total=config.max_steps, initial=step, disable=not (master and config.progress), dynamic_ncols=True)
    batches = iter(data)
    t_last, step_last = time.perf_counter(), step
    t_start = t_last
    while step < stop:
        lr = get_lr(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss, metrics = train_step(model, raw_model, objective, optimizer, ema, batches, generator, config, autocast,
                                   device)
        window.add({"loss": loss, **metrics})
        step += 1
        bar.update(1)

        if step % config.log_interval == 0 or step == stop:
            record = window.means(ddp)  # the one host sync of a logging step
            window.reset()
            if not math.isfinite(record["loss"]):
                raise RuntimeError(f"loss is {record['loss']} at step {step}; lower lr or check the data")
            now = time.perf_counter()
            record.update(step=step, lr=lr, samples_per_s=(step - step_last) * config.batch_size / (now - t_last))
            if heldout and (step % config.eval_interval == 0 or step == config.max_steps):
                # Same samples and noise every time (a fresh generator), EMA weights, no_grad.
                eval_generator = torch.Generator(device=device).manual_seed(config.seed * 7919 + 17 + rank)
                record.update(estimate_heldout(ema if ema is not None else raw_model, config.model, objective,
                                               heldout, eval_generator, autocast, lambda b: batch_to(b, device)))
                record["eval_s"] = time.perf_counter() - now
            t_last, step_last = time.perf_counter(), step  # evaluation time is not training throughput
            result.metrics = record
            if master:
                append_metrics(metrics_path, record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}")
            if time_limit is not None and _out_of_time(now - t_start >= time_limit, ddp, device):
                stop = step

        if step % config.checkpoint_interval == 0 or step == stop:
            rng = _gather_json(rng_state(generator), device)  # every rank takes part in the gather
            log_window = window.state_dict(ddp)
            if master:
                meta = {"config": config_to_dict(config), "model_config": config_to_dict(model_config), "rng": rng,
                        "data": data.state_dict(), "log_window": log_window}
                result.checkpoint = save_training_state(run_dir, step, raw_model, ema, optimizer, meta, config)
            if ddp:
                dist.barrier()
    bar.close()
    result.step = step
    if owns_group:
        dist.destroy_process_group()
    return result
