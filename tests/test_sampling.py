"""Rectified flow: schedule, Euler recovers a known straight path, CFG formula/interval/rescale, the loss."""

from __future__ import annotations

import pytest
import torch

from pixal3d.errors import InputError
from pixal3d.sampling import (
    SamplerConfig,
    add_noise,
    flow_matching_loss,
    guided_velocity,
    randn_like,
    sample,
    sample_timesteps,
    schedule,
    time_shift,
)
from pixal3d.sparse import SparseTensor


def sparse_latent(seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(3, 6, 6, 6, generator=g) < 0.2
    return SparseTensor.from_dense(torch.randn(3, 4, 6, 6, 6, generator=g), mask)


def test_time_shift_and_schedule():
    t = torch.linspace(0, 1, 11)
    shifted = time_shift(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and bool((shifted[1:] > shifted[:-1]).all())
    assert bool((shifted[1:-1] > t[1:-1]).all())  # s > 1 spends more steps at high noise
    times = schedule(SamplerConfig(steps=7, shift=2.0))
    assert times.shape == (8,) and times[0] == 1 and times[-1] == 0
    assert torch.allclose(schedule(SamplerConfig(steps=4, shift=1.0)), torch.linspace(1, 0, 5))


@pytest.mark.parametrize("sparse", [False, True])
def test_euler_recovers_x0_of_a_straight_path(sparse):
    """With the exact velocity of the straight path to x0, Euler integration lands on x0 (any schedule)."""
    x0 = sparse_latent() if sparse else torch.randn(2, 3, 4, 4, 4)
    feats0 = x0.feats if sparse else x0

    def velocity(x, t, cond):  # v(x_t, t) = (x_t - x_0) / t on the path x_t = (1 - t) x_0 + t eps
        f = x.feats if sparse else x
        v = (f - feats0) / t[0]
        return x.replace(feats=v) if sparse else v

    noise = randn_like(x0, torch.Generator().manual_seed(1))
    out = sample(velocity, noise, None, SamplerConfig(steps=5, shift=3.0), progress=False)
    assert type(out) is type(x0)
    assert torch.allclose(out.feats if sparse else out, feats0, atol=1e-5)


def test_constant_velocity_is_integrated_exactly():
    x0, eps = torch.randn(2, 5), torch.randn(2, 5)
    out = sample(lambda x, t, c: eps - x0, eps, None, SamplerConfig(steps=3), progress=False)
    assert torch.allclose(out, x0, atol=1e-5)


class ToyModel:
    """v = x * a (conditional, cond = a) or x * 0.5 (unconditional); counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, cond, scale=1.0):
        self.calls += 1
        factor = (cond if cond is not None else 0.5) * scale
        return x.replace(feats=x.feats * factor) if isinstance(x, SparseTensor) else x * factor


def test_guidance_one_is_the_conditional_model():
    model, x = ToyModel(), torch.randn(2, 3)
    v = guided_velocity(model, x, 0.5, 2.0, SamplerConfig(guidance=1.0))
    assert torch.equal(v, x * 2.0) and model.calls == 1
    out = sample(model, x, 2.0, SamplerConfig(steps=4, guidance=1.0), progress=False)
    plain = sample(ToyModel(), x, 2.0, SamplerConfig(steps=4, guidance=1.0, interval=(0.0, 0.0)), progress=False)
    assert torch.allclose(out, plain)


def test_guidance_formula_interval_and_kwargs():
    model, x = ToyModel(), torch.randn(2, 3)
    cfg = SamplerConfig(guidance=3.0, interval=(0.2, 0.8))
    v = guided_velocity(model, x, 0.5, 2.0, cfg, {"scale": 2.0})
    assert torch.allclose(v, 2.0 * (x * 0.5 + 3.0 * (x * 2.0 - x * 0.5)))
    outside = guided_velocity(model, x, 0.9, 2.0, cfg)
    assert torch.allclose(outside, x * 2.0)


def test_guidance_rescale_matches_conditional_std():
    x = torch.randn(4, 2, 3, 3, 3)
    cfg = SamplerConfig(guidance=5.0, rescale=1.0)
    v = guided_velocity(ToyModel(), x, 0.5, 2.0, cfg)
    v_cond = x * 2.0
    assert torch.allclose(v.flatten(1).std(1, correction=0), v_cond.flatten(1).std(1, correction=0), atol=1e-5)
    xs = sparse_latent()
    vs = guided_velocity(ToyModel(), xs, 0.5, 2.0, cfg)
    for b, rows in enumerate(xs.unbind()):
        sel = xs.coords[:, 0] == b
        assert torch.allclose(vs[sel].std(correction=0), (rows * 2.0).std(correction=0), atol=1e-5)


def test_sampling_is_deterministic_under_a_generator():
    a = randn_like(sparse_latent(), torch.Generator().manual_seed(5))
    b = randn_like(sparse_latent(), torch.Generator().manual_seed(5))
    assert torch.equal(a.feats, b.feats) and a.coords is not None


def test_timesteps_and_noising():
    g = torch.Generator().manual_seed(0)
    for kind in ("logit_normal", "uniform"):
        t = sample_timesteps(1000, g, kind)
        assert t.shape == (1000,) and bool(((t > 0) & (t < 1)).all())
        assert abs(float(t.mean()) - 0.5) < 0.05
    with pytest.raises(InputError, match="timestep kind"):
        sample_timesteps(2, g, "cosine")
    x0 = sparse_latent()
    eps = randn_like(x0, g)
    t = torch.tensor([0.0, 1.0, 0.25])
    xt = add_noise(x0, eps, t)
    b = x0.batch_index
    assert torch.allclose(xt.feats[b == 0], x0.feats[b == 0])
    assert torch.allclose(xt.feats[b == 1], eps.feats[b == 1])
    assert torch.allclose(xt.feats[b == 2], 0.75 * x0.feats[b == 2] + 0.25 * eps.feats[b == 2])


def test_flow_matching_loss_matches_manual_computation():
    x0 = torch.randn(3, 2, 4)
    model = ToyModel()
    loss = flow_matching_loss(model, x0, 2.0, torch.Generator().manual_seed(3), "uniform")
    g = torch.Generator().manual_seed(3)
    t = torch.rand(3, generator=g)
    eps = torch.randn(3, 2, 4, generator=g)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
    assert torch.allclose(loss, ((xt * 2.0) - (eps - x0)).square().mean())


def test_sampler_config_validation():
    with pytest.raises(InputError, match="steps"):
        SamplerConfig(steps=0)
    with pytest.raises(InputError, match="interval"):
        SamplerConfig(interval=(0.8, 0.2))
    with pytest.raises(InputError, match="rescale"):
        SamplerConfig(rescale=2.0)
