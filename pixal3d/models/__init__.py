"""The model registry: the one explicit name -> (config class, module class) table that files on disk refer to.

A checkpoint's `config.json` names its model (e.g. "flow"); loading looks the name up here and builds
`Module(Config(**fields))`. A miss lists the known names. No decorators, no `getattr` on modules.
"""

from __future__ import annotations

from pixal3d.encoder import EncoderConfig, ImageEncoder
from pixal3d.errors import InputError
from pixal3d.models.depth_head import DepthHead, DepthHeadConfig
from pixal3d.models.flow import FlowConfig, FlowTransformer
from pixal3d.models.fov_head import FovHead, FovHeadConfig
from pixal3d.models.shape_vae import ShapeVAE, ShapeVAEConfig
from pixal3d.models.structure_vae import StructureVAE, StructureVAEConfig
from pixal3d.models.texture_vae import TextureVAE, TextureVAEConfig

MODELS: dict[str, tuple[type, type]] = {
    "encoder": (EncoderConfig, ImageEncoder),
    "flow": (FlowConfig, FlowTransformer),
    "fov_head": (FovHeadConfig, FovHead),
    "depth_head": (DepthHeadConfig, DepthHead),
    "structure_vae": (StructureVAEConfig, StructureVAE),
    "shape_vae": (ShapeVAEConfig, ShapeVAE),
    "texture_vae": (TextureVAEConfig, TextureVAE),
}


def model_classes(name: str) -> tuple[type, type]:
    """`(ConfigClass, ModuleClass)` registered as `name`; an unknown name raises and lists the known ones."""
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name]
