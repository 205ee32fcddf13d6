"""Samplers replayed from CUDA graphs give the eager samplers' results (dense, sparse windows, stage 3's concat).

The CUDA cases run only where a GPU is present (the project's GPU machine); the CPU cases check that the option
is refused or ignored off the GPU.
"""

from __future__ import annotations

import pytest
import torch

from pixal3d.camera import Camera
from pixal3d.encoder import EncoderConfig, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.models.flow import FlowCondition, FlowConfig, FlowTransformer
from pixal3d.sampling import GraphedVelocity, SamplerConfig, randn_like, sample
from pixal3d.sparse import SparseTensor

FEAT = 16
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make_flow(device: str, **kw) -> FlowTransformer:
    torch.manual_seed(0)
    config = FlowConfig(**{"dim": 32, "depth": 2, "heads": 2, "feature_channels": FEAT, "in_channels": 4, **kw})
    model = FlowTransformer(config).eval().to(device)
    with torch.no_grad():  # zero-initialised outputs would make every velocity zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def make_cond(device: str) -> FlowCondition:
    torch.manual_seed(1)
    encoder = ImageEncoder(EncoderConfig(channels=FEAT, pretrained=False)).eval().to(device)
    with torch.no_grad():
        features = encoder(torch.rand(1, 4, 64, 64, device=device))
    return FlowCondition(features, Camera.from_degrees(40.0, size=64))


def sparse_template(device: str, channels: int = 4) -> SparseTensor:
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(1, 8, 8, 8, generator=g) < 0.4
    return SparseTensor.from_dense(torch.zeros(1, channels, 8, 8, 8), mask).to(device)


# Guided steps only in part of the schedule (both graphs are captured), rescale on (the per-element std).
SAMPLER = SamplerConfig(steps=6, shift=3.0, guidance=4.0, rescale=0.5, interval=(0.5, 0.95))


def run_both(model, template, cond, kwargs=None):
    noise = randn_like(template, torch.Generator(device=template.device if isinstance(template, torch.Tensor)
                                                 else template.feats.device).manual_seed(3))
    eager = sample(model, noise, cond, SAMPLER, kwargs, progress=False, cuda_graphs=False)
    graphed = sample(model, noise, cond, SAMPLER, kwargs, progress=False, cuda_graphs=True)
    return [x.feats if isinstance(x, SparseTensor) else x for x in (eager, graphed)]


def test_graphs_are_refused_off_the_gpu_and_ignored_by_sample():
    model, cond = make_flow("cpu", resolution=4, patch_size=1), make_cond("cpu")
    template = torch.zeros(1, 4, 4, 4, 4)
    with pytest.raises(InputError, match="CUDA"):
        GraphedVelocity(model, template, cond, SAMPLER)
    eager, graphed = run_both(model, template, cond)
    assert torch.equal(eager, graphed)  # on the CPU the option changes nothing


@needs_cuda
def test_dense_flow_graphs_match_eager():
    model, cond = make_flow("cuda", resolution=8, patch_size=2), make_cond("cuda")
    eager, graphed = run_both(model, torch.zeros(1, 4, 8, 8, 8, device="cuda"), cond)
    assert eager.abs().max() > 0.1  # a non-trivial result
    torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("attention", ["full", "window"])
def test_sparse_flow_graphs_match_eager(attention):
    model = make_flow("cuda", tokens="sparse", resolution=8, attention=attention, window_size=16)
    eager, graphed = run_both(model, sparse_template("cuda"), make_cond("cuda"))
    torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_texture_flow_graphs_match_eager_with_concat():
    model = make_flow("cuda", tokens="sparse", resolution=8, cond_channels=3, attention="window", window_size=16)
    shape = sparse_template("cuda", channels=3)
    shape = shape.replace(feats=torch.randn_like(shape.feats))
    eager, graphed = run_both(model, sparse_template("cuda"), make_cond("cuda"), {"concat": shape})
    torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_graphed_velocity_replays_and_follows_its_inputs():
    """After the capture, replays track new `x` and `t` (a stale static input would repeat the first result)."""
    model = make_flow("cuda", tokens="sparse", resolution=8)
    template, cond = sparse_template("cuda"), make_cond("cuda")
    config = SamplerConfig(steps=4, guidance=1.0)
    graphed = GraphedVelocity(model, template, cond, config)
    with torch.no_grad():
        for t in (0.9, 0.7, 0.3):  # the first call captures; the others replay
            x = torch.randn_like(template.feats)
            expected = model(template.replace(feats=x), torch.full((1,), t, device="cuda"), cond).feats
            torch.testing.assert_close(graphed(x, t), expected.float(), atol=1e-4, rtol=1e-4)
    assert set(graphed.graphs) == {False} and not graphed.failed
