"""Model sizes and defaults, in one place: every component's presets and the pipelines built from them.

In the spirit of segment-anything's `build_sam.py`: one builder per component kind (`flow_preset` for the three
flows), small tables of sizes, and one dict, `PRESETS` (component -> preset name -> builder). A pipeline preset
(`PIPELINES`: "micro", "micro64", "tiny") is a choice of component presets plus `PipelineSettings`; the JSON
training configs in `configs/` name their preset in their file name (`<component>_<preset>.json`, e.g.
`shape_flow_tiny_cross.json` -> `PRESETS["shape_flow"]["tiny_cross"]`), and `tests/test_presets.py` checks that
every one of them matches it.

Sizes: "micro" for tests (seconds on a CPU), "tiny" the shipped default (DESIGN section 9), "base" for GPU
training. Two micro families exist, and their names say which is which:
- "micro" flows, encoder and structure VAE are those of the `micro` test pipeline and of `configs/*_micro.json`;
  the pipeline's shape and texture VAEs ("micro16", token grid 16 at R_hr = 32) chain with those flows;
- the "micro" shape and texture VAE training configs use a token grid of 8, the grid of the "micro8" flows
  (the flow unit tests' size: deeper, 4 sampler steps).

Sampler defaults are a stage's (`STAGE_SAMPLERS`); a pipeline's settings take each stage's sampler from its flow
(`settings_from_flows`), so they are written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn as nn

from pixal3d.encoder import EncoderConfig
from pixal3d.errors import InputError
from pixal3d.models.depth_head import DepthHeadConfig
from pixal3d.models.flow import FlowConfig
from pixal3d.models.fov_head import FovHeadConfig
from pixal3d.models.shape_vae import ShapeVAEConfig
from pixal3d.models.structure_vae import StructureVAEConfig
from pixal3d.models.texture_vae import TextureVAEConfig
from pixal3d.sampling import SamplerConfig
from pixal3d.weights import PipelineSettings

Stage = Literal["structure", "shape", "texture"]
FLOW_STAGES: tuple[Stage, ...] = ("structure", "shape", "texture")
FLOWS = tuple(f"{stage}_flow" for stage in FLOW_STAGES)


# ------------------------------------------------------------------------------------------------ flows
@dataclass(frozen=True)
class FlowSize:
    """One size of the three flows: widths, the latent grid of each stage, and how they sample."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    feature_channels: int
    latents: dict[str, tuple[int, int]]
    """Stage -> (token resolution, latent channels): the grids of the VAEs the flows chain with."""
    patch_size: tuple[int, int] = (1, 1)
    """(dense stage 1, sparse stages 2-3)."""
    sparse_attention: Literal["full", "window"] = "window"
    window_size: int = 1024
    sampler_steps: int | None = None
    """None: each stage's default steps (`STAGE_SAMPLERS`)."""
    stage_samplers: bool = True
    """False: `SamplerConfig()` for every stage (the micro configs sample with the plain defaults)."""


FLOW_SIZES: dict[str, FlowSize] = {
    "micro": FlowSize(32, 1, 2, 4.0, 16, {"structure": (4, 4), "shape": (16, 8), "texture": (16, 8)},
                      patch_size=(2, 2), sparse_attention="full", window_size=512, stage_samplers=False),
    "micro8": FlowSize(32, 2, 2, 2.0, 16, {"structure": (4, 4), "shape": (8, 8), "texture": (8, 8)},
                       sparse_attention="full", sampler_steps=4),
    # tiny: the shipped default (~3 M parameters per flow, all stages with the VAEs and the encoder under 20 M)
    "tiny": FlowSize(192, 5, 3, 3.0, 64, {"structure": (8, 8), "shape": (32, 8), "texture": (32, 8)}),
    # base: for GPU training (~110 M per flow); 512 dense stage-1 tokens
    "base": FlowSize(768, 12, 12, 4.0, 256, {"structure": (16, 8), "shape": (64, 16), "texture": (64, 16)},
                     patch_size=(2, 1)),
}

# Per-stage sampler defaults: structure and shape want strong guidance; texture follows the shape closely.
STAGE_SAMPLERS: dict[str, SamplerConfig] = {
    "structure": SamplerConfig(steps=25, shift=3.0, guidance=7.5, rescale=0.7, interval=(0.6, 1.0)),
    "shape": SamplerConfig(steps=25, shift=3.0, guidance=7.5, rescale=0.5, interval=(0.6, 1.0)),
    "texture": SamplerConfig(steps=25, shift=3.0, guidance=3.0, rescale=0.0, interval=(0.6, 0.9)),
}


def flow_preset(stage: Stage, size: str = "tiny") -> FlowConfig:
    """The flow config of `stage` ("structure" | "shape" | "texture") at `size` (a key of `FLOW_SIZES`)."""
    if stage not in STAGE_SAMPLERS or size not in FLOW_SIZES:
        raise InputError(f"unknown flow preset ({stage!r}, {size!r}); stages {list(STAGE_SAMPLERS)}, "
                         f"sizes {list(FLOW_SIZES)}")
    s = FLOW_SIZES[size]
    sparse = stage != "structure"
    resolution, channels = s.latents[stage]
    sampler = SamplerConfig()
    if s.stage_samplers:
        sampler = dataclasses.replace(STAGE_SAMPLERS[stage],
                                      **({"steps": s.sampler_steps} if s.sampler_steps else {}))
    return FlowConfig(
        tokens="sparse" if sparse else "dense",
        in_channels=channels,
        cond_channels=s.latents["shape"][1] if stage == "texture" else 0,
        resolution=resolution,
        patch_size=s.patch_size[sparse],
        attention=s.sparse_attention if sparse else "full",
        window_size=s.window_size,
        sampler=sampler,
        dim=s.dim, depth=s.depth, heads=s.heads, mlp_ratio=s.mlp_ratio, feature_channels=s.feature_channels,
    )


# ------------------------------------------------------------------------------------------------ components
_ENCODERS = {
    "micro": lambda: EncoderConfig(channels=16, global_grid=1, pretrained=False),
    "tiny": lambda: EncoderConfig(channels=64),
    "base": lambda: EncoderConfig(channels=256, global_grid=4),
}
_STRUCTURE_VAES = {
    "micro": lambda: StructureVAEConfig(resolution=16, latent_resolution=4, latent_channels=4, channels=(8, 16, 16),
                                        norm_groups=4),
    "tiny": StructureVAEConfig,
}
_SHAPE_VAES = {
    "micro": lambda: ShapeVAEConfig(resolution=32, token_resolution=8, latent_channels=8, channels=(16, 32, 32)),
    "micro16": lambda: ShapeVAEConfig(resolution=32, token_resolution=16, latent_channels=8, channels=(16, 16)),
    "micro64": lambda: ShapeVAEConfig(resolution=64, token_resolution=16, latent_channels=8, channels=(16, 16, 32)),
    "tiny": ShapeVAEConfig,
}
_TEXTURE_VAES = {
    "micro": lambda: TextureVAEConfig(resolution=32, token_resolution=8, latent_channels=8, channels=(16, 16, 32)),
    "micro16": lambda: TextureVAEConfig(resolution=32, token_resolution=16, latent_channels=8, channels=(16, 16)),
    "micro64": lambda: TextureVAEConfig(resolution=64, token_resolution=16, latent_channels=8,
                                        channels=(16, 16, 16)),
    "tiny": TextureVAEConfig,
}
_FOV_HEADS = {
    "micro": lambda: FovHeadConfig(feature_channels=16, tokens=2, hidden=16),
    "micro_conv": lambda: FovHeadConfig(feature_channels=16, tokens=2, hidden=16, conv_layers=2, conv_hidden=8, grid=2),
    # The shipped head since fidelity round 4: the tokens plus a convolutional summary of the /4 map that keeps
    # where in the frame each feature is (docs/training.md).
    "tiny": lambda: FovHeadConfig(conv_layers=4, conv_hidden=64, grid=4),
    "tiny_v1": FovHeadConfig,  # the first shipped head: the pooled tokens alone
}
_DEPTH_HEADS = {
    "micro": lambda: DepthHeadConfig(feature_channels=16, hidden=16, layers=2),
    # The shipped head since fidelity round 3: dilated, so it sees the whole /4 map (docs/training.md).
    "tiny": lambda: DepthHeadConfig(hidden=96, layers=8, dilations=[1, 2, 4, 8, 16, 1, 2, 1]),
    "tiny_v1": DepthHeadConfig,  # the first shipped head: four undilated 3x3 layers of 64 channels
}


def _variant(builder: Callable[[], Any], **changes: Any) -> Callable[[], Any]:
    """A preset that is `builder`'s with some fields changed (an ablation or a training variant of a size)."""
    return lambda: dataclasses.replace(builder(), **changes)


def _flows(stage: Stage) -> dict[str, Callable[[], FlowConfig]]:
    sizes = {size: (lambda size=size: flow_preset(stage, size)) for size in FLOW_SIZES}
    tiny = sizes["tiny"]
    return {**sizes, "tiny_cross": _variant(tiny, conditioning="cross"),
            "tiny_depthlift": _variant(tiny, depth_lift=True), "tiny_finetune": tiny}


PRESETS: dict[str, dict[str, Callable[[], Any]]] = {
    "encoder": _ENCODERS,
    "fov_head": _FOV_HEADS,
    "depth_head": _DEPTH_HEADS,
    "structure_vae": {**_STRUCTURE_VAES, "micro_procedural": _STRUCTURE_VAES["micro"],
                      "tiny_procedural": _STRUCTURE_VAES["tiny"]},
    "shape_vae": {**_SHAPE_VAES, "micro_procedural": _SHAPE_VAES["micro64"],
                  "micro_corners": _variant(_SHAPE_VAES["micro"], decoder_target="corners"),
                  "tiny_procedural": _SHAPE_VAES["tiny"],
                  "tiny_corners": _variant(_SHAPE_VAES["tiny"], decoder_target="corners"),
                  "tiny_decoder_ft": _SHAPE_VAES["tiny"],
                  "tiny_corners_ft": _variant(_SHAPE_VAES["tiny"], decoder_target="corners")},
    "texture_vae": {**_TEXTURE_VAES, "micro_procedural": _TEXTURE_VAES["micro64"],
                    "tiny_procedural": _TEXTURE_VAES["tiny"], "tiny_decoder_ft": _TEXTURE_VAES["tiny"]},
    **{f"{stage}_flow": _flows(stage) for stage in FLOW_STAGES},
}
"""Component name -> preset name -> a builder of its config. A preset name is a size ("micro", "tiny", ...),
optionally with a variant ("tiny_cross": the cross-attention-only ablation, "tiny_depthlift", "micro_corners"...)."""


def component_preset(component: str, name: str) -> Any:
    """The config of `component` (a key of `PRESETS`) at preset `name`; raises `InputError` listing the names."""
    if component not in PRESETS:
        raise InputError(f"unknown component {component!r}; components with presets: {sorted(PRESETS)}")
    if name not in PRESETS[component]:
        raise InputError(f"no {component} preset {name!r}; presets: {sorted(PRESETS[component])}")
    return PRESETS[component][name]()


# ------------------------------------------------------------------------------------------------ pipelines
@dataclass
class PipelineConfig:
    """Every component's config plus the pipeline settings: what `from_config` builds with random weights."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    structure_vae: StructureVAEConfig = field(default_factory=StructureVAEConfig)
    structure_flow: FlowConfig = field(default_factory=lambda: flow_preset("structure", "tiny"))
    shape_vae: ShapeVAEConfig = field(default_factory=ShapeVAEConfig)
    shape_flow: FlowConfig = field(default_factory=lambda: flow_preset("shape", "tiny"))
    texture_vae: TextureVAEConfig = field(default_factory=TextureVAEConfig)
    texture_flow: FlowConfig = field(default_factory=lambda: flow_preset("texture", "tiny"))
    fov_head: FovHeadConfig | None = field(default_factory=_FOV_HEADS["tiny"])
    depth_head: DepthHeadConfig | None = field(default_factory=_DEPTH_HEADS["tiny"])
    settings: PipelineSettings = field(default_factory=PipelineSettings)


def settings_from_flows(settings: PipelineSettings, flows: dict[str, FlowConfig]) -> PipelineSettings:
    """`settings` with each stage's sampler taken from its flow config (`flows`: "structure_flow"... -> config)."""
    return dataclasses.replace(settings, **{f"{stage}_sampler": flows[f"{stage}_flow"].sampler for stage in FLOW_STAGES})


def _build_pipeline(components: dict[str, str], settings: PipelineSettings) -> PipelineConfig:
    """The one pipeline builder: component -> preset name, and the settings."""
    return PipelineConfig(**{name: component_preset(name, preset) for name, preset in components.items()},
                          settings=settings)


def micro_config() -> PipelineConfig:
    """A few-second CPU pipeline for tests: 64 px input, 16^3 structure, 32^3 fine voxels, 2 sampler steps."""
    sampler = SamplerConfig(steps=2, guidance=2.0)
    components = {name: "micro" for name in ("encoder", "structure_vae", "structure_flow", "shape_flow",
                                              "texture_flow", "fov_head", "depth_head")}
    return _build_pipeline({**components, "shape_vae": "micro16", "texture_vae": "micro16"},
                           PipelineSettings(image_size=64, min_structure_voxels=32, max_structure_voxels=256,
                                            structure_sampler=sampler, shape_sampler=sampler, texture_sampler=sampler))


def micro64_config() -> PipelineConfig:
    """`micro` decoding at R_hr = 64, the smallest resolution the voxeliser makes ground truth at.

    For tests that need the ground truth at the pipeline's own resolution (`pixal3d eval --oracle`); its shape
    and texture VAEs are those of configs/*_vae_micro_procedural.json.
    """
    config = micro_config()
    config.shape_vae, config.texture_vae = component_preset("shape_vae", "micro64"), \
        component_preset("texture_vae", "micro64")
    return config


def tiny_config() -> PipelineConfig:
    """The shipped default's architecture (DESIGN section 9): 256 px, 32^3 structure, 128^3 fine voxels.

    Sized for the budgets of DESIGN section 9 (image -> GLB in <= 60 s on a 2-core CPU): 512 dense stage-1 tokens
    (an 8^3 latent of the 32^3 occupancy) and one stage-2/3 token per active 32^3 voxel, capped at 4096.
    The encoder starts from random weights here: a pipeline's encoder weights always come from its own checkpoint
    (training initialises from ImageNet; see `pixal3d/training`), so inference never needs the ImageNet package.
    """
    config = _build_pipeline({name: "tiny" for name in PRESETS if name != "encoder"},
                             PipelineSettings(min_structure_voxels=64, max_structure_voxels=4096))
    config.encoder = dataclasses.replace(component_preset("encoder", "tiny"), pretrained=False)
    config.settings = settings_from_flows(config.settings, {name: getattr(config, name) for name in FLOWS})
    return config


PIPELINES: dict[str, Callable[[], PipelineConfig]] = {"micro": micro_config, "micro64": micro64_config,
                                                        "tiny": tiny_config}
"""Pipeline preset name -> `PipelineConfig` builder, for `from_config("micro")` and the CLI's `--random-weights`."""


def pipeline_preset(name: str) -> PipelineConfig:
    """The `PipelineConfig` of preset `name` (a key of `PIPELINES`)."""
    if name not in PIPELINES:
        raise InputError(f"unknown pipeline preset {name!r}; known presets: {sorted(PIPELINES)}")
    return PIPELINES[name]()


# ------------------------------------------------------------------------------------------------ chaining
CHAINS: tuple[tuple[str, str], ...] = (
    ("structure_flow.resolution", "structure_vae.latent_resolution"),
    ("structure_flow.in_channels", "structure_vae.latent_channels"),
    ("shape_vae.token_resolution", "structure_vae.resolution"),
    ("shape_flow.resolution", "shape_vae.token_resolution"),
    ("shape_flow.in_channels", "shape_vae.latent_channels"),
    ("texture_vae.resolution", "shape_vae.resolution"),
    ("texture_vae.token_resolution", "shape_vae.token_resolution"),
    ("texture_flow.resolution", "shape_vae.token_resolution"),
    ("texture_flow.in_channels", "texture_vae.latent_channels"),
    ("texture_flow.cond_channels", "shape_vae.latent_channels"),
    *((f"{flow}.feature_channels", "encoder.channels") for flow in FLOWS),
    ("depth_head.feature_channels", "encoder.channels"),
    ("fov_head.feature_channels", "encoder.channels"),
)
"""Config fields that must be equal for the components to fit together (`component.field`); a pair naming a head
the pipeline lacks is skipped."""


def check_compatible(modules: dict[str, nn.Module]) -> None:
    """Raise `InputError` unless the components' sizes chain (`CHAINS`: resolutions, latent and feature widths)."""
    c = {name: m.config for name, m in modules.items() if m is not None}

    def value(path: str) -> Any:
        component, name = path.split(".")
        return getattr(c[component], name)

    lifting = [flow for flow in FLOWS if c[flow].depth_lift]
    if lifting and "depth_head" not in c:
        raise InputError(f"the pipeline's {', '.join(lifting)} lift(s) depth (depth_lift) but it has no depth_head; "
                         "add one (pixal3d assemble --add-heads RUN) or use flows without depth_lift")
    pairs = [(a, value(a), b, value(b)) for a, b in CHAINS if a.split(".")[0] in c]
    if "fov_head" in c:
        pairs.append(("fov_head.tokens", c["fov_head"].tokens, "encoder.global_grid^2 + 1",
                      c["encoder"].global_grid ** 2 + 1))
    bad = [f"{a} = {x} but {b} = {y}" for a, x, b, y in pairs if x != y]
    if bad:
        raise InputError("the pipeline's components do not fit together: " + "; ".join(bad))
