"""`TrainConfig`: everything one training run needs, loaded strictly from a JSON file in `configs/`.

The model is named by its key in `pixal3d.models.MODELS`; `model_config` is that model's own config as a JSON
object (checked strictly against its dataclass when the run starts). Learning rates are per optimizer step;
`batch_size` is the global batch over all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pixal3d.errors import InputError


@dataclass
class DataConfig:
    """Where batches come from. `synthetic`: procedural spheres and boxes voxelised analytically (no files)."""

    kind: Literal["synthetic"] = "synthetic"
    """Data source kind; `synthetic` needs nothing on disk."""
    resolution: int = 64
    """Fine voxel resolution R_hr of the targets (the shape/texture VAEs' `resolution`)."""
    coarse_resolution: int = 64
    """Side of the coarse occupancy grid (the structure VAE's `resolution`); divides `resolution`."""
    max_primitives: int = 3
    """Synthetic: each object is the union of 1..max_primitives spheres and rotated boxes."""
    num_objects: int = 0
    """Synthetic: 0 draws a new object for every sample; n > 0 cycles over the first n (overfitting runs)."""
    seed: int = 0
    """Synthetic: object `i` depends only on (seed, i), whatever the rank count."""

    def __post_init__(self) -> None:
        if self.resolution < 2 or self.coarse_resolution < 1 or self.resolution % self.coarse_resolution:
            raise InputError(
                f"data: coarse_resolution ({self.coarse_resolution}) must divide resolution ({self.resolution})"
            )
        if self.max_primitives < 1 or self.num_objects < 0:
            raise InputError(
                f"data: need max_primitives >= 1 and num_objects >= 0, got {self.max_primitives}, {self.num_objects}"
            )


@dataclass
class TrainConfig:
    """One training run: the model, the data, the optimisation schedule and the bookkeeping."""

    model: str = "structure_vae"
    """Model name, a key of `pixal3d.models.MODELS` (it also selects the objective)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """The model's config as a JSON object (keys of its dataclass; missing keys keep their defaults)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data source."""
    out_dir: str = "runs/structure_vae"
    """Run folder: checkpoints, metrics.jsonl, config.json (relative paths are relative to the working dir)."""
    batch_size: int = 8
    """Global batch size (samples per optimizer step over all ranks); must divide by the rank count."""
    max_steps: int = 10000
    """Optimizer steps to train for (the run stops there; resume continues up to it)."""
    lr: float = 1e-4
    """Peak learning rate (after warm-up)."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine decay."""
    warmup_steps: int = 500
    """Linear warm-up from 0 to `lr` over this many steps."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices and conv kernels (never on biases and norms)."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (0 keeps no EMA)."""
    seed: int = 0
    """Seed of the model initialisation and of the training noise (offset by rank)."""
    log_interval: int = 10
    """Steps between metric lines in metrics.jsonl."""
    checkpoint_interval: int = 1000
    """Steps between checkpoints (a final one is always written)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in out_dir/checkpoints (older ones are deleted)."""
    max_shard_mib: float = 16.0
    """Largest checkpoint file, in MiB; bigger state is split over several safetensors files."""
    init_weights: str | None = None
    """Optional safetensors file (or checkpoint folder) to initialise the model from; shapes must match."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the rank's GPU when CUDA is available, else CPU."""
    progress: bool = True
    """Show a progress bar on rank 0."""

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "max_steps": self.max_steps >= 0,
            "lr": self.lr > 0,
            "min_lr": 0 <= self.min_lr <= self.lr,
            "warmup_steps": self.warmup_steps >= 0,
            "grad_clip": self.grad_clip >= 0,
            "ema_decay": 0 <= self.ema_decay < 1,
            "log_interval": self.log_interval >= 1,
            "checkpoint_interval": self.checkpoint_interval >= 1,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "max_shard_mib": self.max_shard_mib > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {name: getattr(self, name) for name in bad}
            raise InputError(
                f"TrainConfig: invalid value(s) {values}; need batch_size >= 1, lr > 0, 0 <= min_lr <= lr, "
                "0 <= ema_decay < 1, intervals >= 1, max_shard_mib > 0"
            )
