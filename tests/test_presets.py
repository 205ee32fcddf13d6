"""One owner for sizes (issue 20): every training config in configs/ is its preset in `pixal3d.presets`.

A config `configs/<component>_<preset>.json` (`depth_head_<preset>.json` and `fov_head_<preset>.json` train a head
of a structure-flow run that carries the shipped depth-lift flow) must hold exactly `PRESETS[component][preset]` as
its `model_config`; a flow run's encoder and heads must be the size's presets too: a head the preset the config's
name gives where the head has one (`depth_head_tiny_v1`), the first round's from-scratch recipes the first FoV head
(`FIRST_FOV_HEAD`), and the encoder's `pretrained` aside (whether training starts from ImageNet is the run's choice).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pixal3d.config import config_from_dict, config_to_dict
from pixal3d.errors import InputError
from pixal3d.models import model_classes
from pixal3d.presets import PIPELINES, PRESETS, component_preset, flow_preset, pipeline_preset

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
FIRST_FOV_HEAD = {"structure_flow_tiny": "tiny_v1", "structure_flow_tiny_cross": "tiny_v1"}
"""The round-1 recipes that trained the first FoV head (the pooled tokens alone) from scratch."""


def _component_and_preset(path: Path, data: dict) -> tuple[str, str]:
    preset = path.stem.split("_", 2)[2]  # "<a>_<b>_<preset>": shape_flow_tiny_cross -> tiny_cross
    if path.stem.startswith(("depth_head_", "fov_head_")):  # a structure-flow run that trains only a head, beside
        return "structure_flow", preset.split("_")[0] + "_depthlift"  # the shipped (depth-lift) flow it carries
    component = f"{data['flow']['stage']}_flow" if data["model"] == "flow" else data["model"]
    return component, preset


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_is_its_preset(path: Path) -> None:
    data = json.loads(path.read_text())
    component, preset = _component_and_preset(path, data)
    expected = component_preset(component, preset)
    kind = "flow" if data["model"] == "flow" else data["model"]
    found = config_from_dict(model_classes(kind)[0], data["model_config"], where=str(path))
    assert config_to_dict(found) == config_to_dict(expected), path.name
    if data["model"] != "flow":
        return
    size = preset.split("_")[0]
    encoder = dict(data["flow"]["encoder"], pretrained=component_preset("encoder", size).pretrained)
    assert config_to_dict(config_from_dict(type(component_preset("encoder", size)), encoder)) == \
        config_to_dict(component_preset("encoder", size)), path.name
    for head in ("fov_head", "depth_head"):
        if data["flow"].get(head) is not None:
            named = path.stem.split("_", 2)[2]  # depth_head_tiny_v1 -> tiny_v1; otherwise the size's head
            if head == "fov_head":
                named = FIRST_FOV_HEAD.get(path.stem, named)
            wanted = component_preset(head, named if named in PRESETS[head] else size)
            assert config_to_dict(config_from_dict(type(wanted), data["flow"][head])) == config_to_dict(wanted), \
                (path.name, head)


def test_pipelines_are_built_from_the_component_presets() -> None:
    micro = pipeline_preset("micro")
    assert micro.structure_flow == flow_preset("structure", "micro") == component_preset("structure_flow", "micro")
    assert micro.encoder == component_preset("encoder", "micro")
    tiny = pipeline_preset("tiny")
    assert tiny.shape_vae == component_preset("shape_vae", "tiny")
    assert tiny.settings.texture_sampler == tiny.texture_flow.sampler  # the sampler defaults are written once
    assert dataclasses.replace(tiny.encoder, pretrained=True) == component_preset("encoder", "tiny")
    assert set(PIPELINES) == {"micro", "micro64", "tiny"} and all(PRESETS.values())


def test_unknown_presets_say_what_exists() -> None:
    with pytest.raises(InputError, match="presets"):
        component_preset("shape_vae", "huge")
    with pytest.raises(InputError, match="known presets"):
        pipeline_preset("huge")
