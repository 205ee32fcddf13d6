"""The flow runs' latent cache (pixal3d.training.latent_cache): a cached batch gives the encoded batch's latents."""

from __future__ import annotations

import pytest
import torch

from pixal3d.data.dataset import ProceduralStream
from pixal3d.data.shards import SampleOptions
from pixal3d.errors import InputError
from pixal3d.models.shape_vae import ShapeVAE
from pixal3d.models.structure_vae import StructureVAE
from pixal3d.models.texture_vae import TextureVAE
from pixal3d.presets import component_preset
from pixal3d.sparse import SparseTensor
from pixal3d.training.config import FlowTrainConfig
from pixal3d.training.data import collate_samples
from pixal3d.training.latent_cache import LatentCache, stage_latents


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    vaes = {"structure_vae": StructureVAE(component_preset("structure_vae", "micro")).eval(),
            "shape_vae": ShapeVAE(component_preset("shape_vae", "micro64")).eval(),
            "texture_vae": TextureVAE(component_preset("texture_vae", "micro64")).eval()}
    stream = iter(ProceduralStream(SampleOptions(image_size=64, resolution=64, coarse=16), 2, 0))
    samples = [next(stream) for _ in range(4)]
    return vaes, samples


def _same(a, b, exact: bool = True) -> bool:
    """Equal latents: bit for bit, or (`exact` False) up to float rounding."""
    if a is None or b is None:
        return a is b
    equal = torch.equal if exact else (lambda x, y: torch.allclose(x, y, atol=1e-5, rtol=1e-5))
    if isinstance(a, SparseTensor):
        return (torch.equal(a.coords, b.coords) and equal(a.feats, b.feats) and a.resolution == b.resolution
                and a.batch_size == b.batch_size)
    return equal(a, b)


@pytest.mark.parametrize("stage", ["structure", "shape", "texture"])
@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_cached_batches_equal_encoded_batches(setup, stage, mode):
    """Bit for bit while a batch is the one its samples were encoded in; a sample encoded in another batch can
    differ by float rounding (the encoder's matrix products are blocked by the batch's row count)."""
    vaes, samples = setup
    cache = LatentCache(capacity=3)
    first, second = collate_samples(samples[:2]), collate_samples(samples[1:3][::-1])  # shared sample, new order
    for batch, hits, exact in ((first, 0, True), (second, 0, True), (first, 1, True), (second, 2, False)):
        expected = stage_latents(stage, vaes, batch, mode, torch.Generator().manual_seed(7))
        got = cache.latents(stage, vaes, batch, mode, torch.Generator().manual_seed(7))
        assert _same(got[0], expected[0], exact) and _same(got[1], expected[1], exact)
        assert cache.hits == hits
    assert sorted(cache.entries) == sorted({s.sample_id for s in samples[:3]})
    assert (stage == "texture") == (got[1] is not None)


def test_a_full_cache_keeps_its_samples_and_encodes_the_rest(setup):
    vaes, samples = setup
    cache = LatentCache(capacity=1)
    batch = collate_samples(samples[2:4])
    for _ in range(2):
        got = cache.latents("shape", vaes, batch, "mean", torch.Generator())
        assert _same(got[0], stage_latents("shape", vaes, batch, "mean", torch.Generator())[0])
    assert len(cache.entries) == 1 and cache.hits == 0 and cache.misses == 2


def test_a_batch_that_repeats_a_sample_is_cached_once(setup):
    """The benchmark's batches repeat the samples of a small pool: each is kept once and later batches hit."""
    vaes, samples = setup
    cache = LatentCache(capacity=8)
    batch = collate_samples([samples[0], samples[1], samples[0]])
    first = cache.latents("shape", vaes, batch, "mean", torch.Generator())
    again = cache.latents("shape", vaes, batch, "mean", torch.Generator())
    assert len(cache.entries) == 2 and cache.hits == 1
    assert _same(first[0], again[0])


def test_latent_cache_must_be_a_count():
    with pytest.raises(InputError, match="latent_cache"):
        FlowTrainConfig(vae_config={"resolution": 8}, latent_cache=-1)
