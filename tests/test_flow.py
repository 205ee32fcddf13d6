"""FlowTransformer: dense and sparse tokens, lift/cross conditioning, dropout semantics, an overfit run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pixal3d.camera import Camera
from pixal3d.config import config_from_dict, config_to_dict
from pixal3d.encoder import EncoderConfig, FeatureMaps, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.models import MODELS, model_classes
from pixal3d.models.flow import FlowCondition, FlowConfig, FlowTransformer, patchify, unpatchify
from pixal3d.models.fov_head import FovHead, FovHeadConfig
from pixal3d.presets import FLOW_SIZES, flow_preset
from pixal3d.sampling import SamplerConfig, TokenCache, flow_matching_loss, randn_like, sample
from pixal3d.sparse import SparseTensor

FEAT = 16


@pytest.fixture(scope="module")
def features() -> FeatureMaps:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    encoder = ImageEncoder(EncoderConfig(channels=FEAT, pretrained=False)).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 4, 64, 64))
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def camera() -> Camera:
    return Camera.from_degrees(40.0, size=64)


def dense_config(**kw) -> FlowConfig:
    return FlowConfig(**{"dim": 32, "depth": 2, "heads": 2, "resolution": 8, "patch_size": 2,
                         "feature_channels": FEAT, "in_channels": 4, **kw})


def sparse_tokens(batch: int = 2, resolution: int = 8, channels: int = 4, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, resolution, resolution, resolution, generator=g) < 0.15
    mask[1:] &= torch.rand(batch - 1, resolution, resolution, resolution, generator=g) < 0.6  # unequal counts
    grid = torch.randn(batch, channels, resolution, resolution, resolution, generator=g)
    return SparseTensor.from_dense(grid, mask)


def perturb(model: torch.nn.Module) -> None:
    """Zero-initialised outputs make every input look alike; give all weights a random nudge."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_patchify_round_trip():
    x = torch.randn(2, 3, 8, 8, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2 * 64, 3 * 8)
    assert torch.equal(unpatchify(tokens, 2, 3, 2), x)


@pytest.mark.parametrize("conditioning", ["lift", "cross"])
def test_dense_forward_backward(features, camera, conditioning):
    model = FlowTransformer(dense_config(conditioning=conditioning))
    x = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
    v = model(x, torch.rand(2), FlowCondition(features, camera))
    assert v.shape == x.shape
    v.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("attention", ["full", "window"])
def test_sparse_forward_backward_with_concat(features, camera, attention):
    cfg = dense_config(tokens="sparse", cond_channels=3, attention=attention, window_size=8, share_modulation=False)
    model = FlowTransformer(cfg)
    x = sparse_tokens()
    concat = x.replace(feats=torch.randn(x.shape[0], 3))
    v = model(x, torch.rand(2), FlowCondition(features, [camera, camera]), concat=concat)
    assert isinstance(v, SparseTensor) and v.shape == x.shape and v.coords is x.coords
    v.feats.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("attention", ["full", "window"])
def test_sparse_batch_equals_per_element(features, camera, attention):
    torch.manual_seed(1)
    model = FlowTransformer(dense_config(tokens="sparse", attention=attention, window_size=16))
    perturb(model)
    x = sparse_tokens()
    t = torch.tensor([0.3, 0.7])
    v = model(x, t, FlowCondition(features, camera))
    for b, rows in enumerate(x.unbind()):
        sel = x.coords[:, 0] == b
        single = SparseTensor(x.coords[sel] * torch.tensor([0, 1, 1, 1], dtype=torch.int32), rows, 8)
        fb = FeatureMaps([m[b : b + 1] for m in features.maps], features.global_tokens[b : b + 1])
        vb = model(single, t[b : b + 1], FlowCondition(fb, camera))
        assert torch.allclose(vb.feats, v.feats[sel], atol=1e-5)


def test_keep_mask_is_the_unconditional_branch(features, camera):
    torch.manual_seed(2)
    model = FlowTransformer(dense_config())
    perturb(model)
    x, t = torch.randn(2, 4, 8, 8, 8), torch.rand(2)
    v_cond = model(x, t, FlowCondition(features, camera))
    v_none = model(x, t, None)
    v_mix = model(x, t, FlowCondition(features, camera, keep=torch.tensor([True, False])))
    assert torch.allclose(v_mix[0], v_cond[0], atol=1e-5)
    assert torch.allclose(v_mix[1], v_none[1], atol=1e-5)
    assert not torch.allclose(v_cond[1], v_none[1], atol=1e-3)


def test_multiview_identical_views_equal_single_view(features, camera):
    torch.manual_seed(3)
    model = FlowTransformer(dense_config(tokens="sparse"))
    perturb(model)
    x, t = sparse_tokens(), torch.rand(2)
    single = model(x, t, FlowCondition(features, camera))
    multi = model(x, t, FlowCondition(features, camera, extra_views=[(features, camera)]))
    assert torch.allclose(single.feats, multi.feats, atol=1e-5)


def test_bad_inputs_raise(features, camera):
    model = FlowTransformer(dense_config())
    with pytest.raises(ValueError, match=r"x_t must be \[B, 4, 8, 8, 8\]"):
        model(torch.randn(2, 4, 16, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="concat is required"):
        model(torch.randn(2, 4, 8, 8, 8), torch.rand(2), concat=torch.randn(2, 4, 8, 8, 8))
    other = FlowTransformer(dense_config(feature_channels=FEAT * 2))
    with pytest.raises(ValueError, match="this model expects"):
        other(torch.randn(2, 4, 8, 8, 8), torch.rand(2), FlowCondition(features, camera))


def test_fov_head_range_and_backward(features):
    head = FovHead(FovHeadConfig(feature_channels=FEAT, tokens=features.global_tokens.shape[1]))
    fov = head(features)
    assert fov.shape == (2,) and bool(((fov > 0.087) & (fov < 1.571)).all())
    fov.sum().backward()
    assert head.mlp[0].weight.grad is not None


def test_conv_fov_head_reads_where_features_are_in_the_frame(features, tmp_path):
    """The convolutional summary keeps position: mirroring the maps left-right changes the prediction (the token MLP
    alone cannot see it, the tokens being pooled), gradients reach the convolutions, and the config round-trips."""
    from pixal3d.config import load_config, save_config

    config = FovHeadConfig(feature_channels=FEAT, tokens=features.global_tokens.shape[1], conv_layers=2,
                           conv_hidden=8, grid=2)
    torch.manual_seed(0)
    head = FovHead(config)
    fov = head(features)
    assert fov.shape == (2,) and bool(((fov > 0.087) & (fov < 1.571)).all())
    mirrored = FeatureMaps(maps=[m.flip(-1) for m in features.maps], global_tokens=features.global_tokens)
    assert not torch.allclose(head(mirrored), fov)
    fov.sum().backward()
    assert head.conv[0].weight.grad is not None and head.conv[0].weight.grad.abs().sum() > 0
    save_config(config, tmp_path / "config.json")
    assert load_config(FovHeadConfig, tmp_path / "config.json") == config
    with pytest.raises(InputError, match="conv_layers"):
        FovHeadConfig(conv_layers=-1)


def test_registry():
    assert model_classes("flow") == (FlowConfig, FlowTransformer)
    assert MODELS["fov_head"] == (FovHeadConfig, FovHead)
    with pytest.raises(ValueError, match="known models"):
        model_classes("nope")


def test_overfit_one_target():
    """A micro dense flow learns one fixed 4^3 latent: the flow-matching loss drops 10x in 200 steps."""
    torch.manual_seed(0)
    model = FlowTransformer(dense_config(resolution=4, patch_size=1, in_channels=2))
    target = torch.zeros(1, 2, 4, 4, 4)
    target[:, 0, 1:3, 1:3, 1:3] = 1.0
    target[:, 1] = torch.linspace(-1, 1, 4)[None, :, None, None]
    x0 = target.expand(8, -1, -1, -1, -1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=True)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        loss = flow_matching_loss(model, x0, None, gen, timesteps="logit_normal")
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("size", list(FLOW_SIZES))
def test_presets_round_trip_through_json(size):
    for stage in ("structure", "shape", "texture"):
        cfg = flow_preset(stage, size)
        assert config_from_dict(FlowConfig, config_to_dict(cfg)) == cfg
        assert (cfg.tokens == "dense") == (stage == "structure")
        assert (cfg.cond_channels > 0) == (stage == "texture")


def test_tiny_flows_fit_the_budget():
    """DESIGN section 9: all tiny stages <= 20 M parameters with the VAEs; each flow gets ~3 M of it."""
    for stage in ("structure", "shape", "texture"):
        model = FlowTransformer(flow_preset(stage, "tiny"))
        assert sum(p.numel() for p in model.parameters()) < 3.5e6, stage


def test_micro_presets_run(features, camera):
    x = sparse_tokens(resolution=8, channels=8)
    shape = FlowTransformer(flow_preset("shape", "micro8"))
    texture = FlowTransformer(flow_preset("texture", "micro8"))
    cond = FlowCondition(features, camera)
    assert shape(x, torch.rand(2), cond).shape == x.shape
    assert texture(x, torch.rand(2), cond, concat=x).shape == x.shape
    structure = FlowTransformer(flow_preset("structure", "micro8"))
    assert structure(torch.randn(2, 4, 4, 4, 4), torch.rand(2), cond).shape == (2, 4, 4, 4, 4)


def test_lift_is_cached_only_without_grad(features, camera):
    torch.manual_seed(4)
    model = FlowTransformer(dense_config(tokens="sparse"))
    perturb(model)
    x, t = sparse_tokens(), torch.rand(2)
    cond, cache = FlowCondition(features, camera), TokenCache()  # the sampler's cache of one run
    with torch.no_grad():
        first = model(x, t, cond, cache=cache)
        assert len([key for key in cache._entries if key[0] == "lift"]) == 1
        again = model(x, t, cond, cache=cache)
        other = sparse_tokens(seed=5)
        model(other, t, cond, cache=cache)  # new coords: recomputed, never a stale hit
    assert torch.equal(first.feats, again.feats)
    fresh = TokenCache()
    assert torch.allclose(model(other, t, cond, cache=fresh).feats, model(other, t, cond, cache=cache).feats,
                          atol=1e-6)
    assert not [key for key in fresh._entries if key[0] == "lift"]  # with gradients on, no lift is cached


def test_condition_dropout_keeps_about_ninety_percent(features, camera):
    big = FeatureMaps([m[:1].expand(1000, -1, -1, -1) for m in features.maps],
                      features.global_tokens[:1].expand(1000, -1, -1))
    keep = FlowCondition(big, camera).with_dropout(0.1, torch.Generator().manual_seed(0)).keep
    assert keep.dtype == torch.bool and 0.85 < keep.float().mean() < 0.95


def test_sampling_a_micro_flow_with_guidance_is_deterministic(features, camera):
    torch.manual_seed(6)
    model = FlowTransformer(flow_preset("shape", "micro8")).eval()
    perturb(model)
    template = sparse_tokens(resolution=8, channels=8)
    cond = FlowCondition(features, camera)
    config = SamplerConfig(steps=3, guidance=3.0, rescale=0.7, interval=(0.0, 1.0))
    runs = [sample(model, randn_like(template, torch.Generator().manual_seed(0)), cond, config, progress=False)
            for _ in range(2)]
    assert torch.equal(runs[0].feats, runs[1].feats) and runs[0].coords is template.coords
    assert bool(torch.isfinite(runs[0].feats).all())


# ------------------------------------------------------------------------------------------------ depth-aware lift
def plane_depth(batch: int = 2, side: int = 16, z: float = 0.1) -> torch.Tensor:
    """Depth along the axis of a plane at volume z (40 degree camera), `[B, 1, side, side]`, a no-surface corner."""
    depth = torch.full((batch, 1, side, side), Camera.from_degrees(40.0).eye_distance - z)
    depth[:, :, :4, :4] = float("inf")
    return depth


def widened(model: FlowTransformer) -> FlowTransformer:
    """The same flow with `depth_lift`, its new lift columns zero (`widen_lift_weights`, as init_weights does)."""
    from pixal3d.training.conditioned import widen_lift_weights

    config = dataclasses.replace(model.config, depth_lift=True)
    wide = FlowTransformer(config)
    wide.load_state_dict(widen_lift_weights(model.state_dict(), model.config, config), strict=True)
    return wide


@pytest.mark.parametrize("tokens", ["dense", "sparse"])
def test_depth_lift_off_ignores_depth_and_zero_columns_keep_the_output(features, camera, tokens):
    """Switch off: a depth map in the condition changes nothing, bit for bit. Switch on from zero-initialised
    columns: the same output as before; once the columns move, the depth map matters."""
    torch.manual_seed(7)
    model = FlowTransformer(dense_config(tokens=tokens)).eval()
    perturb(model)
    x = sparse_tokens() if tokens == "sparse" else torch.randn(2, 4, 8, 8, 8)
    t = torch.rand(2)
    feats = lambda v: v.feats if tokens == "sparse" else v  # noqa: E731
    with torch.no_grad():
        plain = feats(model(x, t, FlowCondition(features, camera)))
        assert torch.equal(plain, feats(model(x, t, FlowCondition(features, camera, depth=plane_depth()))))
        wide = widened(model).eval()
        assert wide.config.lift_dim == model.config.lift_dim + 5 * model.config.patch**3
        out = feats(wide(x, t, FlowCondition(features, camera, depth=plane_depth())))
        assert torch.allclose(out, plain, atol=1e-6)
        for block in wide.blocks:
            block.lift.weight.add_(torch.randn_like(block.lift.weight) * 0.1)
        near, far = (feats(wide(x, t, FlowCondition(features, camera, depth=plane_depth(z=z)))) for z in (0.1, -0.3))
        assert not torch.allclose(near, far, atol=1e-4)


def test_depth_lift_multiview_and_errors(features, camera):
    torch.manual_seed(8)
    model = FlowTransformer(dense_config(tokens="sparse", depth_lift=True))
    perturb(model)
    x, t = sparse_tokens(), torch.rand(2)
    depth = plane_depth()
    single = model(x, t, FlowCondition(features, camera, depth=depth))
    multi = model(x, t, FlowCondition(features, camera, extra_views=[(features, camera)], depth=depth,
                                      extra_depths=[depth]))
    assert torch.allclose(single.feats, multi.feats, atol=1e-5)
    with pytest.raises(ValueError, match="depth map per view"):
        model(x, t, FlowCondition(features, camera))
    with pytest.raises(ValueError, match="depth map per view"):
        model(x, t, FlowCondition(features, camera, extra_views=[(features, camera)], depth=depth))
    with pytest.raises(InputError, match="depth_lift"):
        dense_config(depth_lift=True, conditioning="cross")
    assert model(x, t, None).feats.shape == x.feats.shape  # the unconditional branch needs no depth
