"""Training runs -> a pipeline folder (`pixal3d assemble`): what `Pixal3DPipeline.from_pretrained` loads.

A trained cascade is six runs (`configs/*_tiny.json`): three VAEs and three conditioned flows. The pipeline takes
each VAE, each stage's flow, the encoder and the FoV head from the flow runs (the FoV head from whichever run
trained one, normally stage 1), and the sampler defaults from each flow's config. All flow runs must share one
encoder: the shipped recipe trains them with the same frozen encoder file (`make_encoder_component`), and
`assemble_pipeline` refuses runs whose encoder weights differ, since the pipeline runs a single encoder.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from pixal3d.encoder import EncoderConfig, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.models.shape_vae import ShapeVAE, narrow_corner_head
from pixal3d.presets import FLOWS, check_compatible, settings_from_flows, tiny_config
from pixal3d.training.conditioned import flow_run_components, load_frozen_vae
from pixal3d.weights import PipelineSettings, save_component, write_pipeline

logger = logging.getLogger(__name__)

RUN_COMPONENTS = ("structure_vae", "structure_flow", "shape_vae", "shape_flow", "texture_vae", "texture_flow")
"""The six training runs of a cascade, by the pipeline component each provides."""


def make_encoder_component(folder: str | Path, config: EncoderConfig | None = None, seed: int = 0) -> Path:
    """Write the ImageNet-initialised encoder (`pretrained=True`; FPN and token layers seeded) as a component folder.

    Flow runs that freeze the encoder (`train_encoder: false`) name this folder as `encoder_checkpoint`, so every
    stage sees the same features and the assembled pipeline can run one encoder for all three.
    """
    config = config or EncoderConfig(pretrained=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = ImageEncoder(config)
    save_component(encoder, folder)
    return Path(folder)


def assemble_pipeline(runs: dict[str, str | Path], out: str | Path, settings: PipelineSettings | None = None,
                      dtype: torch.dtype | None = torch.float16, weights: str = "ema",
                      shape_decoder: str | None = None) -> Path:
    """Collect six training runs into one pipeline folder, written atomically.

    Args:
        runs: component name (`RUN_COMPONENTS`) -> run folder, its `checkpoints/` or a `step_*` folder.
        out: the pipeline folder to write (an existing pipeline folder there is replaced).
        settings: pipeline settings; None takes `tiny_config()`'s, with each stage's sampler from its flow config
            (`settings_from_flows`).
        dtype: on-disk dtype of the weights (float16 halves the size; loading casts back to float32).
        weights: "ema" (the averaged weights, the usual choice) or "model".
        shape_decoder: None keeps the shape VAE's decoder target as trained; "edges" writes a "corners" run as an
            edges decoder (`as_edges_decoder`).
    """
    if shape_decoder not in (None, "edges"):
        raise InputError(f'assemble: shape_decoder must be None or "edges", got {shape_decoder!r}')
    missing = [name for name in RUN_COMPONENTS if name not in runs]
    if missing:
        raise InputError(f"assemble: no run given for {missing}; every one of {list(RUN_COMPONENTS)} is needed")
    for name, path in runs.items():
        if not Path(path).exists():
            raise InputError(f"assemble: {name} run {path} does not exist; train it first (configs/{name}_tiny.json)")
    modules: dict[str, nn.Module] = {}
    for name in ("structure_vae", "shape_vae", "texture_vae"):
        modules[name] = load_frozen_vae(name, str(runs[name]), {}, weights, torch.device("cpu"))
    if shape_decoder == "edges":
        modules["shape_vae"] = as_edges_decoder(modules["shape_vae"])
    encoders: dict[str, nn.Module] = {}
    for name in FLOWS:
        parts = flow_run_components(runs[name], weights)
        if name not in parts:
            raise InputError(f"assemble: {runs[name]} trained {sorted(k for k in parts if k.endswith('_flow'))}, "
                             f"not {name}")
        modules[name] = parts[name]
        encoders[name] = parts["encoder"]
        for head in ("fov_head", "depth_head"):
            if head in parts and head not in modules:
                modules[head] = parts[head]
    _check_one_encoder(encoders)
    modules["encoder"] = encoders["structure_flow"]
    if settings is None:
        settings = settings_from_flows(tiny_config().settings, {name: modules[name].config for name in FLOWS})
    check_compatible(modules)
    folder = write_pipeline(out, settings, modules, dtype)
    logger.info("assembled %s from %s", folder, {k: str(v) for k, v in runs.items()})
    return folder


def as_edges_decoder(vae: ShapeVAE) -> ShapeVAE:
    """The shape VAE `vae` with an `"edges"` decoder: itself when it has one, else a copy without the corner and
    open outputs (`models.shape_vae.narrow_corner_head`). Encoder and latent space are unchanged, so the flows
    trained on `vae`'s latents fit the result."""
    if vae.config.decoder_target == "edges":
        return vae
    edges = ShapeVAE(replace(vae.config, decoder_target="edges"))
    state = {k: v.float() for k, v in vae.state_dict().items()}
    edges.load_state_dict(narrow_corner_head(state), strict=True)
    return edges.eval().requires_grad_(False)


def add_heads(base: str | Path, run: str | Path, out: str | Path, dtype: torch.dtype | None = torch.float16,
              weights: str = "ema") -> tuple[Path, list[str]]:
    """Write the pipeline `base` with the heads (`fov_head`, `depth_head`) a flow run trained put in, to `out`.

    The run's encoder must equal the pipeline's (heads read its features), so a head trained on a frozen copy of the
    shipped encoder drops into the shipped model. Returns the folder and the heads replaced or added.
    """
    from pixal3d.pipeline import Pixal3DPipeline

    pipe = Pixal3DPipeline.from_pretrained(base)
    parts = flow_run_components(run, weights)
    heads = [name for name in ("fov_head", "depth_head") if name in parts]
    if not heads:
        raise InputError(f"assemble: the run {run} trained no fov_head or depth_head")
    mine, theirs = pipe.encoder.state_dict(), parts["encoder"].state_dict()
    # Close, not equal: an EMA of frozen weights can differ from them in the last bit.
    if mine.keys() != theirs.keys() or not all(torch.allclose(mine[k].float(), theirs[k].float(), atol=1e-3)
                                               for k in mine):
        raise InputError(f"assemble: the run {run} trained its heads on another encoder than {base}'s; train them "
                         f"with flow.encoder_checkpoint = {base}/encoder and train_encoder false")
    for name in heads:
        setattr(pipe, name, parts[name])
    check_compatible(pipe.components)
    return pipe.save_pretrained(out, dtype=dtype), heads


def _check_one_encoder(encoders: dict[str, nn.Module]) -> None:
    reference = encoders["structure_flow"].state_dict()
    for name, encoder in encoders.items():
        state = encoder.state_dict()
        same = state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
        if not same:
            raise InputError(f"assemble: the {name} run's encoder differs from the structure_flow run's; the "
                             "pipeline runs one encoder, so train every flow with the same frozen encoder "
                             "(flow.encoder_checkpoint, train_encoder: false)")
