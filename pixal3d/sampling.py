"""Rectified flow: noising path, training loss and timestep sampling, Euler sampler with CFG (DESIGN section 5).

Path: `x_t = (1 - t) x_0 + t eps` for `t` in [0, 1] (t = 0 data, t = 1 noise); the model predicts the velocity
`v = dx_t/dt = eps - x_0`. Sampling integrates from t = 1 to t = 0 with Euler steps on a shifted schedule
`t' = s t / (1 + (s - 1) t)` (s > 1 spends more steps at high noise, as SD3 does for large token counts).

Classifier-free guidance: `v = v_u + w (v_c - v_u)` inside a guidance interval of t (outside it, the conditional
velocity alone), optionally rescaled towards the conditional velocity's per-sample std (Lin et al. 2023,
"Common diffusion noise schedules and sample steps are flawed", section 3.4). The unconditional branch is the
model called with `cond=None`.

Latents are dense tensors `[B, ...]` or `SparseTensor`s (rows of element b use t[b]). Every random draw takes an
explicit `torch.Generator`; sampler updates run in float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from pixal3d.errors import InputError
from pixal3d.sparse import SparseTensor

logger = logging.getLogger(__name__)

Latent = torch.Tensor | SparseTensor
VelocityModel = Callable[..., Latent]


class TokenCache:
    """What a model may reuse across the calls of one integration on the same tokens (a flow's lifted image
    features and its token geometry): `sample` makes one per run and passes it to models that take one.

    A model declares that it does with a true `takes_token_cache` attribute; it is then called as
    `model(x_t, t, cond, cache=cache, **model_kwargs)`. Entries are checked against the tensor they were computed
    for, by identity, so a new token set never hits a stale entry.
    """

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[object, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any, owner: object, compute: Callable[[], Any]) -> Any:
        """The value stored under `key` for `owner` (the same object), else `compute()`, stored."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] is owner:
            return hit[1]
        value = compute()
        self._entries[key] = (owner, value)
        return value


def with_token_cache(model: VelocityModel, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """`model_kwargs` plus a new `TokenCache` when `model` takes one (see `TokenCache`)."""
    kwargs = dict(model_kwargs or {})
    if getattr(model, "takes_token_cache", False):
        kwargs.setdefault("cache", TokenCache())
    return kwargs


@dataclass
class SamplerConfig:
    """Euler sampler settings (per-stage defaults live in each flow model's config)."""

    steps: int = 25
    """Number of Euler steps from t = 1 (noise) to t = 0 (data)."""
    shift: float = 3.0
    """Time shift s of the schedule `t' = s t / (1 + (s - 1) t)`; 1 = uniform steps."""
    guidance: float = 3.0
    """Classifier-free guidance weight w; 1 = conditional model only (no unconditional call)."""
    rescale: float = 0.0
    """Guidance rescale phi in [0, 1]: blend of the std-rescaled and the plain guided velocity."""
    interval: tuple[float, float] = (0.0, 1.0)
    """Guidance is applied only for t in [lo, hi]; outside, the conditional velocity alone."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"sampler steps must be >= 1, got {self.steps}")
        if self.shift <= 0:
            raise InputError(f"sampler shift must be > 0, got {self.shift}")
        if not 0.0 <= self.rescale <= 1.0:
            raise InputError(f"guidance rescale must be in [0, 1], got {self.rescale}")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise InputError(f"guidance interval must satisfy 0 <= lo <= hi <= 1, got {self.interval}")


# ------------------------------------------------------------------------------------------------ helpers
def _feats(x: Latent) -> torch.Tensor:
    return x.feats if isinstance(x, SparseTensor) else x


def _wrap(like: Latent, values: torch.Tensor) -> Latent:
    return like.replace(feats=values) if isinstance(like, SparseTensor) else values


def per_row(x: Latent, values: torch.Tensor) -> torch.Tensor:
    """Broadcast per-element `values [B]` against `x`'s feature tensor (`[N, 1]` sparse, `[B, 1, ...]` dense)."""
    if isinstance(x, SparseTensor):
        return values[x.batch_index][:, None]
    return values.reshape(-1, *([1] * (x.ndim - 1)))


def batch_size(x: Latent) -> int:
    return x.batch_size if isinstance(x, SparseTensor) else x.shape[0]


def randn_like(x: Latent, generator: torch.Generator | None) -> Latent:
    """Standard normal noise shaped like `x` (drawn on the generator's device, then moved to `x`'s)."""
    f = _feats(x)
    device = generator.device if generator is not None else f.device
    noise = torch.randn(f.shape, generator=generator, device=device, dtype=torch.float32)
    return _wrap(x, noise.to(device=f.device, dtype=f.dtype))


def time_shift(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """`t' = s t / (1 + (s - 1) t)`: maps [0, 1] onto itself, fixing 0 and 1."""
    return shift * t / (1 + (shift - 1) * t)


def schedule(config: SamplerConfig) -> torch.Tensor:
    """`[steps + 1]` float32 times from 1 down to 0, shifted."""
    t = torch.linspace(1.0, 0.0, config.steps + 1, dtype=torch.float64)
    return time_shift(t, config.shift).float()


# ------------------------------------------------------------------------------------------------ training
def sample_timesteps(
    batch: int,
    generator: torch.Generator | None,
    kind: Literal["logit_normal", "uniform"] = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training timesteps `[B]` float32 in (0, 1): `sigmoid(N(mean, std))` (SD3) or uniform."""
    gen_device = generator.device if generator is not None else "cpu"
    if kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=gen_device))
    elif kind == "uniform":
        t = torch.rand(batch, generator=generator, device=gen_device)
    else:
        raise InputError(f"timestep kind must be 'logit_normal' or 'uniform', got {kind!r}")
    return t.to(device or gen_device)


def add_noise(x0: Latent, eps: Latent, t: torch.Tensor) -> Latent:
    """`x_t = (1 - t) x_0 + t eps` with `t [B]`."""
    tt = per_row(x0, t.to(_feats(x0)))
    return _wrap(x0, (1 - tt) * _feats(x0) + tt * _feats(eps))


def flow_matching_loss(
    model: VelocityModel,
    x0: Latent,
    cond: Any,
    generator: torch.Generator | None,
    timesteps: Literal["logit_normal", "uniform"] = "logit_normal",
    model_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Rectified-flow loss `|| model(x_t, t, cond) - (eps - x_0) ||^2` (mean over every element and channel).

    Args:
        model: called as `model(x_t, t, cond, **model_kwargs)`, returns a velocity shaped like `x0`.
        x0: clean latents, `[B, ...]` or a `SparseTensor`.
        cond: the model's condition (for dropout, the caller sets its keep mask).
        generator: source of the noise and the timesteps.
        timesteps: timestep distribution.
        model_kwargs: extra model arguments (e.g. stage 3's `concat`).
    """
    t = sample_timesteps(batch_size(x0), generator, timesteps, device=_feats(x0).device)
    eps = randn_like(x0, generator)
    v = model(add_noise(x0, eps, t), t, cond, **(model_kwargs or {}))
    target = _feats(eps) - _feats(x0)
    return (_feats(v).float() - target.float()).square().mean()


# ------------------------------------------------------------------------------------------------ sampling
def _per_element_std(x: Latent, values: torch.Tensor) -> torch.Tensor:
    """Std of `values` over each batch element's entries, broadcast back like `per_row`."""
    if isinstance(x, SparseTensor):
        b = x.batch_index
        rows = torch.zeros(x.batch_size, device=values.device).index_add_(0, b, values.new_ones(b.shape[0]).float())
        n = rows.clamp_min(1) * values.shape[1]  # index_add_, not bincount: no host sync (CUDA graphs capture it)
        mean = torch.zeros(x.batch_size, device=values.device).index_add_(0, b, values.sum(1)) / n
        var = torch.zeros(x.batch_size, device=values.device).index_add_(0, b, values.square().sum(1)) / n
        return per_row(x, (var - mean.square()).clamp_min(0).sqrt())
    return values.flatten(1).std(dim=1, correction=0).reshape(-1, *([1] * (values.ndim - 1)))


def is_guided(config: SamplerConfig, t: float, cond: Any) -> bool:
    """Whether the step at time `t` adds the unconditional branch (guidance != 1, `t` in the interval, a condition)."""
    lo, hi = config.interval
    return config.guidance != 1.0 and lo <= t <= hi and cond is not None


def _velocity(
    model: VelocityModel, x: Latent, t: torch.Tensor, cond: Any, config: SamplerConfig, guided: bool,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """The velocity features at times `t [B]`, float32: conditional, or guided (and rescaled) when `guided`."""
    v_cond = _feats(model(x, t, cond, **kwargs)).float()
    if not guided:
        return v_cond
    v_uncond = _feats(model(x, t, None, **kwargs)).float()
    v = v_uncond + config.guidance * (v_cond - v_uncond)
    if config.rescale > 0:
        ratio = _per_element_std(x, v_cond) / _per_element_std(x, v).clamp_min(1e-8)
        v = config.rescale * (v * ratio) + (1 - config.rescale) * v
    return v


def guided_velocity(
    model: VelocityModel, x: Latent, t: float, cond: Any, config: SamplerConfig,
    model_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The (guided) velocity features at time `t`, float32 (shaped like `x`'s features)."""
    tb = torch.full((batch_size(x),), t, device=_feats(x).device, dtype=torch.float32)
    return _velocity(model, x, tb, cond, config, is_guided(config, t, cond), model_kwargs or {})


class GraphedVelocity:
    """`guided_velocity` for one latent shape, replayed from CUDA graphs (one graph per guided / plain step).

    A sampler calls the model dozens of times on the same tokens; at the tiny sizes each call is a few hundred
    small kernels, so launching them costs more than running them. The first call of each kind runs eagerly on a
    side stream (it fills the run's `TokenCache`: lift and token geometry, and is the step's real result), then the same
    call is captured; later steps copy `x` and `t` into the static inputs and replay. The model, condition and
    `model_kwargs` must stay the same objects for the whole integration (they do inside `sample`). If a capture
    fails (an op that cannot be captured), the object logs why and computes eagerly from then on.
    """

    def __init__(self, model: VelocityModel, template: Latent, cond: Any, config: SamplerConfig,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        feats = _feats(template)
        if feats.device.type != "cuda":
            raise InputError(f"CUDA graphs need a CUDA latent, got one on {feats.device}")
        self.model, self.cond, self.config = model, cond, config
        self.kwargs = with_token_cache(model, model_kwargs)
        self.template = template
        self.x = torch.zeros_like(feats)  # static input, the model's dtype
        self.t = torch.zeros(batch_size(template), device=feats.device, dtype=torch.float32)
        self.graphs: dict[bool, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.failed = False

    def _run(self, guided: bool) -> torch.Tensor:
        return _velocity(self.model, _wrap(self.template, self.x), self.t, self.cond, self.config, guided,
                         self.kwargs)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The velocity at features `x` (any float dtype, shaped like the template's) and time `t`."""
        guided = is_guided(self.config, t, self.cond)
        self.x.copy_(x)
        self.t.fill_(t)
        if self.failed:
            return self._run(guided)
        if guided in self.graphs:
            graph, out = self.graphs[guided]
            graph.replay()
            return out  # the graph's output buffer: valid until the next call
        side = torch.cuda.Stream(device=self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):
            v = self._run(guided)  # warm-up: fills the caches, and is this step's result
        torch.cuda.current_stream(self.x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = self._run(guided)
        except RuntimeError as err:
            logger.warning("CUDA graph capture failed, sampling eagerly: %s", err)
            self.failed = True
            torch.cuda.synchronize(self.x.device)
            return v
        self.graphs[guided] = (graph, out)
        return v


@torch.no_grad()
def sample(
    model: VelocityModel,
    noise: Latent,
    cond: Any,
    config: SamplerConfig,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "sampling",
    cuda_graphs: bool = False,
    callback: Callable[[int, int], None] | None = None,
) -> Latent:
    """Integrate `dx/dt = v(x, t)` from `noise` at t = 1 to t = 0 with Euler steps.

    Args:
        model: called as `model(x_t, t [B], cond, **model_kwargs)`; `cond=None` is the unconditional branch.
        noise: the starting point `x_1` (make it with `randn_like(template, generator)`).
        cond: the condition passed to the model.
        config: steps, time shift, guidance weight, rescale and interval.
        model_kwargs: extra arguments for every model call (e.g. stage 3's `concat`).
        progress: show a tqdm bar.
        desc: the bar's label (the pipeline names the stage).
        cuda_graphs: replay the model calls from CUDA graphs (`GraphedVelocity`; CUDA latents only, else
            ignored). The same result as eager calls up to kernel choice (float rounding).
        callback: called as `callback(i, steps)` before Euler step `i` (0-based) computes anything: progress
            reports, and an exception raised there stops the sampler between model calls.

    Returns:
        `x_0`, the same type, shape and dtype as `noise`.
    """
    times = schedule(config).tolist()
    model_kwargs = with_token_cache(model, model_kwargs)  # one cache for the whole run: lift once, reuse each step
    x = _feats(noise).float()
    graphed = None
    if cuda_graphs and x.device.type == "cuda" and config.steps > 1:
        graphed = GraphedVelocity(model, noise, cond, config, model_kwargs)
    for i in tqdm(range(config.steps), desc=desc, disable=not progress, leave=False):
        if callback is not None:
            callback(i, config.steps)
        t, t_next = times[i], times[i + 1]
        if graphed is not None:
            v = graphed(x, t)
        else:
            v = guided_velocity(model, _wrap(noise, x.to(_feats(noise).dtype)), t, cond, config, model_kwargs)
        x = x + (t_next - t) * v
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("sampling diverged: the latent holds non-finite values")
    return _wrap(noise, x.to(_feats(noise).dtype))
