"""`TrainConfig`: everything one training run needs, loaded strictly from a JSON file in `configs/`.

The model is named by its key in `pixal3d.models.MODELS`; `model_config` is that model's own config as a JSON
object (checked strictly against its dataclass when the run starts). Learning rates are per optimizer step;
`batch_size` is the global batch over all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pixal3d.encoder import EncoderConfig
from pixal3d.errors import InputError
from pixal3d.models.depth_head import DepthHeadConfig
from pixal3d.models.fov_head import FovHeadConfig


@dataclass
class DataConfig:
    """Where batches come from (`pixal3d.training.data`).

    `synthetic`: spheres and boxes voxelised analytically (voxels only, no images: VAEs only);
    `procedural`: the data engine on the fly (`ProceduralStream`: procedural asset -> render -> voxelise), so a
    fresh machine trains with no stored data; `shards`: a folder written by `pixal3d data generate`.
    """

    kind: Literal["synthetic", "procedural", "shards"] = "synthetic"
    """Data source kind; `synthetic` and `procedural` need nothing on disk."""
    resolution: int = 64
    """Fine voxel resolution R_hr of the targets (the shape/texture VAEs' `resolution`)."""
    coarse_resolution: int = 64
    """Side of the coarse occupancy grid (the structure VAE's `resolution`); divides `resolution`."""
    max_primitives: int = 3
    """Synthetic: each object is the union of 1..max_primitives spheres and rotated boxes."""
    num_objects: int = 0
    """Synthetic: 0 draws a new object for every sample; n > 0 cycles over the first n (overfitting runs)."""
    seed: int = 0
    """Synthetic: object `i` depends only on (seed, i). Procedural: the data seed of every view. Shards: shuffle seed."""
    image_size: int = 512
    """Procedural: sample image side S in pixels (shards: checked against the stored images)."""
    views: int = 4
    """Procedural: views rendered per procedural asset."""
    seed_offset: int = 0
    """Procedural: first asset seed (hold out a range for evaluation by starting elsewhere)."""
    families: str = "classic"
    """Procedural: the family set the seeds map to (`pixal3d.data.procedural.FAMILY_SETS`): "classic" (the 19
    original families), "zeroverse" (height-fielded primitive stacks, cut blocks, wires) or "all" (both). The
    default held-out set stays classic, so its numbers compare across runs."""
    workers: int = 0
    """DataLoader worker processes (0: all in the training process). Procedural: they make the samples. Shards: they
    read and collate the next batches while the model trains (the same batches in the same order)."""
    engine_device: Literal["cpu", "cuda"] = "cpu"
    """Procedural: where the workers render and voxelise ("cuda": the rank's GPU, spawned workers)."""
    engine_batch: int | None = None
    """Procedural: stream positions a worker makes together, rendered and voxelised together (fewer GPU kernel
    launches per sample, more memory per worker; the samples do not change). None: 8 on a GPU, 1 on the CPU."""
    root: str | None = None
    """Shards: the data folder (holds index*.json and shards/)."""
    shuffle: bool = True
    """Shards: visit the samples in a seeded random order per epoch (False: stored order)."""

    def __post_init__(self) -> None:
        if self.kind == "shards" and not self.root:
            raise InputError('data: kind "shards" needs "root", the folder written by `pixal3d data generate`')
        if self.image_size < 32 or self.image_size % 32 or self.views < 1 or self.seed_offset < 0 or self.workers < 0:
            raise InputError(
                f"data: need image_size a multiple of 32, views >= 1, seed_offset >= 0, workers >= 0; got "
                f"{self.image_size}, {self.views}, {self.seed_offset}, {self.workers}"
            )
        if self.resolution < 2 or self.coarse_resolution < 1 or self.resolution % self.coarse_resolution:
            raise InputError(
                f"data: coarse_resolution ({self.coarse_resolution}) must divide resolution ({self.resolution})"
            )
        from pixal3d.data.procedural import FAMILY_SETS  # here: the config module stays light to import

        if self.families not in FAMILY_SETS:
            raise InputError(f'data: "families" must be one of {", ".join(FAMILY_SETS)}; got {self.families!r}')
        if self.families != "classic" and self.kind != "procedural":
            raise InputError(f'data: "families" applies to kind "procedural" only (shards keep the families they '
                             f'were made from); got families {self.families!r} with kind {self.kind!r}')
        if self.engine_batch is not None and self.engine_batch < 1:
            raise InputError(f"data: engine_batch must be >= 1, got {self.engine_batch}")
        if self.max_primitives < 1 or self.num_objects < 0:
            raise InputError(
                f"data: need max_primitives >= 1 and num_objects >= 0, got {self.max_primitives}, {self.num_objects}"
            )


@dataclass
class FlowTrainConfig:
    """What a conditioned flow run (`"model": "flow"`) trains besides the flow, and on which latents.

    The flow learns the latents of a frozen VAE, computed on the fly from each batch (no_grad). The condition is
    built from the batch's images and cameras exactly as at inference (`stages.make_condition`); the encoder
    (and the FoV head, when configured) train with the flow and are saved in the same checkpoint.
    """

    stage: Literal["structure", "shape", "texture"] = "structure"
    """Cascade stage: structure (dense latent of the coarse occupancy), shape or texture (sparse tokens)."""
    vae_checkpoint: str | None = None
    """The stage's VAE (structure / shape / texture): a run folder, its checkpoints/ or a step_* folder."""
    vae_config: dict[str, Any] = field(default_factory=dict)
    """Only without vae_checkpoint: the VAE's config for a randomly initialised frozen VAE (benchmarks, tests)."""
    shape_vae_checkpoint: str | None = None
    """Stage 3 only: the shape VAE whose latent is concatenated to the texture flow's input."""
    shape_vae_config: dict[str, Any] = field(default_factory=dict)
    """Stage 3 only, without shape_vae_checkpoint: config of a randomly initialised frozen shape VAE."""
    vae_weights: Literal["ema", "model"] = "ema"
    """Which weights of a VAE training checkpoint to use."""
    latent: Literal["mean", "sample"] = "mean"
    """Flow target: the VAE posterior mean, or a posterior sample (mean + std * noise) per step."""
    latent_cache: int = 0
    """Samples whose frozen-VAE posteriors are kept on the device after their first batch, so later epochs skip
    the VAE encode (`pixal3d.training.latent_cache`; shard data, where samples come round again). About 0.1 MB a
    sample at the tiny sizes; 0 encodes every batch. A resumed run starts with an empty cache and re-encodes, which
    can differ from the cached latents by float rounding: bitwise resume holds with 0."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The image encoder; `pretrained` starts the backbone from the ImageNet weights when no checkpoint is given."""
    encoder_checkpoint: str | None = None
    """Initialise the encoder from a component folder (`encoder/` of a pipeline) or a flow run's checkpoint."""
    train_encoder: bool = True
    """Fine-tune the encoder with the flow (False: frozen, run without gradients)."""
    fov_head: FovHeadConfig | None = None
    """Train a FoV head on the encoder's global tokens in this run (None: no FoV head)."""
    fov_weight: float = 1.0
    """Weight of the FoV head's L1 loss (radians) beside the flow-matching loss."""
    depth_head: DepthHeadConfig | None = None
    """Train a depth head on the encoder's features in this run (None: no depth head)."""
    depth_weight: float = 1.0
    """Weight of the depth head's L1 loss (volume units) beside the other losses."""
    depth_noise: float = 0.02
    """With a `depth_lift` flow: std (volume units) of the per-pixel Gaussian noise on the ground-truth depth map
    that the lift reads in training (inference reads the depth head's map; measure the gap)."""
    lift_depth_head: str | None = None
    """With a `depth_lift` flow: a depth head component folder (e.g. `pixal3d/weights/default/depth_head`), frozen,
    whose prediction from the batch's features the lift reads for a `lift_depth_head_fraction` of the samples,
    as inference does (the ground-truth splat for the rest)."""
    lift_depth_head_fraction: float = 0.0
    """Fraction of the samples (drawn per sample and step) whose lift reads `lift_depth_head`'s map instead of the
    ground truth: 0 trains on the ground truth alone (closes no train/inference gap), 1 on the head alone."""
    train_flow: bool = True
    """Train the flow (False: only the heads learn; the flow's loss is skipped and its weights stay as loaded)."""
    head_flip: float = 0.0
    """Heads-only runs (`train_flow` false): probability, drawn per sample and step, that a training sample is
    mirrored left-right (the image and the depth target; the FoV is a mirror's too), which doubles the distinct
    views the heads see. The held-out metric sees the samples unmirrored."""
    cond_dropout: float = 0.1
    """Probability of dropping the condition (lifted features and global tokens together) for CFG."""
    timesteps: Literal["logit_normal", "uniform"] = "logit_normal"
    """Training timestep distribution."""

    def __post_init__(self) -> None:
        if not self.train_flow and self.fov_head is None and self.depth_head is None:
            raise InputError("flow: train_flow is false and there is no fov_head or depth_head: nothing would train")
        if self.latent_cache < 0:
            raise InputError(f"flow: latent_cache is a sample count >= 0 (0: no cache), got {self.latent_cache}")
        if (not 0 <= self.cond_dropout < 1 or self.fov_weight < 0 or self.depth_weight < 0
                or not 0 <= self.depth_noise < float("inf")):
            raise InputError(f"flow: need 0 <= cond_dropout < 1 and fov_weight, depth_weight, depth_noise >= 0, got "
                             f"{self.cond_dropout}, {self.fov_weight}, {self.depth_weight}, {self.depth_noise}")
        if not 0 <= self.head_flip <= 1 or (self.head_flip > 0 and self.train_flow):
            raise InputError(f"flow: head_flip must be in [0, 1] and needs train_flow false (a mirrored image no longer "
                             f"matches the sample's 3D latents), got {self.head_flip} with train_flow {self.train_flow}")
        if not 0 <= self.lift_depth_head_fraction <= 1:
            raise InputError(f"flow: lift_depth_head_fraction must be in [0, 1], got {self.lift_depth_head_fraction}")
        if self.lift_depth_head_fraction > 0 and not self.lift_depth_head:
            raise InputError('flow: lift_depth_head_fraction > 0 needs "lift_depth_head", a depth head component '
                             "folder (e.g. pixal3d/weights/default/depth_head)")
        if self.vae_checkpoint is None and not self.vae_config:
            raise InputError('flow: give "vae_checkpoint" (a trained VAE run) or "vae_config" (a random frozen VAE)')
        if self.stage == "texture" and self.shape_vae_checkpoint is None and not self.shape_vae_config:
            raise InputError('flow: stage "texture" also needs "shape_vae_checkpoint" or "shape_vae_config"')


@dataclass
class TrainConfig:
    """One training run: the model, the data, the optimisation schedule and the bookkeeping."""

    model: str = "structure_vae"
    """Model name, a key of `pixal3d.models.MODELS` (it also selects the objective)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """The model's config as a JSON object (keys of its dataclass; missing keys keep their defaults)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data source."""
    flow: FlowTrainConfig | None = None
    """Required when model is "flow": the stage, frozen VAE(s), encoder and FoV head of a conditioned flow run."""
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
    """Optional start: a safetensors file, a checkpoint folder, or a pipeline folder (fine-tune a shipped model:
    a flow run takes its encoder, flow and FoV head, a VAE run its VAE); shapes must match."""
    lr_scale: dict[str, float] = field(default_factory=dict)
    """Learning-rate multipliers by parameter-name prefix (e.g. `{"decoder.proj_out.": 30}`: a widened output layer
    whose new biases must move far; AdamW moves a parameter by about lr per step). The schedule scales them all."""
    freeze: list[str] = field(default_factory=list)
    """Parameter-name prefixes to keep fixed (e.g. `["encoder."]`: a VAE run then trains its decoder alone, so the
    latent space that the shipped flows sample stays exactly as it was). Frozen parameters get no gradient, no
    optimizer state and no EMA drift; they are still saved in every checkpoint."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the rank's GPU when CUDA is available, else CPU."""
    progress: bool = True
    """Show a progress bar on rank 0."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step: each rank draws `batch_size / (ranks * grad_accum_steps)` samples per
    forward/backward, so the same global batch fits a smaller GPU (nanoGPT's gradient accumulation)."""
    optimizer_impl: Literal["default", "foreach", "fused"] = "default"
    """AdamW implementation: torch's default choice, `foreach` (multi-tensor kernels) or `fused` (one kernel per
    parameter group; fewest launches on a GPU). The update is the same up to float rounding."""
    compile: bool = False
    """Run the model through `torch.compile` (the dense models gain most; the first steps pay the compilation)."""
    eval_interval: int = 0
    """Steps between held-out evaluations (a multiple of log_interval; also at max_steps); 0 disables them."""
    eval_batches: int = 4
    """Batches in the fixed held-out set, each of the micro-batch size (batch_size / grad_accum_steps samples)."""
    heldout_data: DataConfig | None = None
    """The held-out set's source; None: unseen objects at the training data's sizes (procedural and shard data:
    procedural objects from seed 1,000,000 on, one view each, made on the run's device; synthetic: seed + 1)."""

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
            "grad_accum_steps": self.grad_accum_steps >= 1 and self.batch_size % self.grad_accum_steps == 0,
            "eval_interval": self.eval_interval >= 0 and self.eval_interval % self.log_interval == 0,
            "eval_batches": self.eval_batches >= 1,
            "lr_scale": all(v > 0 for v in self.lr_scale.values()),
        }
        if (self.model == "flow") != (self.flow is not None):
            raise InputError('TrainConfig: "flow" (the stage, VAE checkpoint, encoder) is required for model '
                             f'"flow" and only allowed there; model is {self.model!r}')
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {name: getattr(self, name) for name in bad}
            raise InputError(
                f"TrainConfig: invalid value(s) {values}; need batch_size >= 1, lr > 0, 0 <= min_lr <= lr, "
                "0 <= ema_decay < 1, intervals >= 1, max_shard_mib > 0, grad_accum_steps >= 1 dividing batch_size, "
                "eval_interval >= 0 a multiple of log_interval (0: no held-out evaluation), eval_batches >= 1, lr_scale "
                "multipliers > 0"
            )
