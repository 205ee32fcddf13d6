"""Physically based shading: glTF metallic-roughness (GGX) under a cheap randomised environment + point lights.

BRDF (glTF 2.0 appendix B): Cook-Torrance specular with the GGX normal distribution (`alpha = roughness^2`),
height-correlated Smith-GGX visibility and Schlick's Fresnel with `F0 = lerp(0.04, base, metallic)`; Lambert
diffuse weighted by `(1 - F) (1 - metallic)`.

Environment: a hemispherical sky/ground gradient about `up` (+y, the volume frame's up). Diffuse ambient uses the
gradient at the normal; specular ambient the gradient at the reflection vector, blurred towards the normal's value
with roughness and weighted by a roughness-aware Schlick term. Point lights (1-3) are placed around the object in
the *camera* frame, so a random view is never lit only from behind; each light's colour is its irradiance at the
object's centre, falling off with the inverse square of the distance.

All colours here are linear; `tone_map` (hue-preserving) then `linear_to_srgb` give display values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from pixal3d.transfer import to_device


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1 piecewise curve)."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Linear values -> sRGB-encoded values, clamped to [0, 1]."""
    c = c.clamp(0.0, 1.0)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def tone_map(c: torch.Tensor, knee: float = 0.8) -> torch.Tensor:
    """Hue-preserving tone curve for linear colours `[..., 3]`, applied to the largest channel.

    The curve is the identity below `knee`, then an exponential shoulder reaching 1 asymptotically
    (slope-continuous); the colour is scaled by `curve(max) / max`, so a bright red highlight stays red
    instead of clipping to white channel by channel.
    """
    c = c.clamp(min=0)
    peak = c.amax(dim=-1, keepdim=True)
    width = 1.0 - knee
    curve = knee + width * (1.0 - torch.exp(-(peak - knee).clamp(min=0) / width))
    scale = torch.where(peak <= knee, torch.ones_like(peak), curve / peak.clamp(min=1e-12))
    return c * scale


@dataclass(frozen=True, eq=False)
class Lighting:
    """Lighting of one render; all tensors on the CPU, moved to the render's device when used.

    Attributes:
        sky: `[3] float32` linear radiance of the upper hemisphere (about `up`).
        ground: `[3] float32` linear radiance of the lower hemisphere.
        up: `[3] float32` unit up axis of the environment, render frame.
        light_directions: `[L, 3] float32` unit directions from the object's centre to each point light, camera
            frame (+z towards the camera, +y up).
        light_distances: `[L] float32` distance of each light from the centre, in bounding-sphere radii.
        light_colors: `[L, 3] float32` linear irradiance each light gives at the centre.
        exposure: multiplier applied before tone mapping.
    """

    sky: torch.Tensor
    ground: torch.Tensor
    up: torch.Tensor
    light_directions: torch.Tensor
    light_distances: torch.Tensor
    light_colors: torch.Tensor
    exposure: float = 1.0


def default_lighting() -> Lighting:
    """A fixed, neutral setup: grey sky, darker ground, one white key light above and left of the camera."""
    return Lighting(
        sky=torch.full((3,), 0.45),
        ground=torch.full((3,), 0.15),
        up=torch.tensor([0.0, 1.0, 0.0]),
        light_directions=F.normalize(torch.tensor([[-0.5, 0.7, 1.0]]), dim=-1),
        light_distances=torch.tensor([3.0]),
        light_colors=torch.full((1, 3), 2.5),
    )


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _tint(generator: torch.Generator, strength: float) -> torch.Tensor:
    """`[3]` a colour near white: channels in `[1 - strength, 1]`, normalised to a maximum of 1."""
    c = _uniform(generator, (3,), 1.0 - strength, 1.0)
    return c / c.max()


def random_lighting(generator: torch.Generator) -> Lighting:
    """Draw a lighting setup: tinted sky/ground environment and 1-3 point lights, the key light in front.

    Args:
        generator: a CPU `torch.Generator`; the same state gives the same `Lighting`.
    """
    sky = _tint(generator, 0.3) * _uniform(generator, (1,), 0.15, 0.6)
    ground = _tint(generator, 0.4) * sky.mean() * _uniform(generator, (1,), 0.1, 0.6)
    count = int(torch.randint(1, 4, (1,), generator=generator))
    directions = F.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    # Key light on the camera's side and not from below: |z|, |y| of the first light.
    directions[0, 1:] = directions[0, 1:].abs() + torch.tensor([0.2, 0.4])
    directions = F.normalize(directions, dim=-1)
    intensity = torch.cat([_uniform(generator, (1,), 1.5, 3.5), _uniform(generator, (count - 1,), 0.3, 1.5)])
    colors = torch.stack([_tint(generator, 0.25) for _ in range(count)]) * intensity[:, None]
    return Lighting(
        sky=sky,
        ground=ground,
        up=torch.tensor([0.0, 1.0, 0.0]),
        light_directions=directions,
        light_distances=_uniform(generator, (count,), 2.0, 5.0),
        light_colors=colors,
        exposure=float(_uniform(generator, (1,), 0.85, 1.15)),
    )


def lighting_to(lighting: Lighting, device: torch.device) -> Lighting:
    """The same lighting with its tensors on `device`."""
    return replace(
        lighting,
        sky=to_device(lighting.sky, device),
        ground=to_device(lighting.ground, device),
        up=to_device(lighting.up, device),
        light_directions=to_device(lighting.light_directions, device),
        light_distances=to_device(lighting.light_distances, device),
        light_colors=to_device(lighting.light_colors, device),
    )


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=-1, keepdim=True)


def _environment(lighting: Lighting, direction: torch.Tensor) -> torch.Tensor:
    """Radiance `[N, 3]` of the sky/ground gradient seen along unit `direction [N, 3]`."""
    t = 0.5 * (1.0 + _dot(direction, lighting.up))
    return lighting.ground + t * (lighting.sky - lighting.ground)


def ggx_specular(
    n_dot_l: torch.Tensor, n_dot_v: torch.Tensor, n_dot_h: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """`D * Vis` of the GGX microfacet model (Fresnel excluded); all inputs `[N, 1]`, cosines clamped >= 0."""
    a2 = alpha * alpha
    denom = n_dot_h * n_dot_h * (a2 - 1.0) + 1.0
    ndf = a2 / (math.pi * denom * denom)
    lambda_v = n_dot_l * torch.sqrt(n_dot_v * n_dot_v * (1.0 - a2) + a2)
    lambda_l = n_dot_v * torch.sqrt(n_dot_l * n_dot_l * (1.0 - a2) + a2)
    visibility = 0.5 / (lambda_v + lambda_l).clamp(min=1e-7)
    return ndf * visibility


def shade(
    position: torch.Tensor,
    normal: torch.Tensor,
    eye: torch.Tensor,
    base_color: torch.Tensor,
    metallic: torch.Tensor,
    roughness: torch.Tensor,
    lighting: Lighting,
    light_positions: torch.Tensor,
    light_colors: torch.Tensor,
) -> torch.Tensor:
    """Outgoing linear radiance `[N, 3]` towards the camera.

    Args:
        position: `[N, 3]` surface points, render frame.
        normal: `[N, 3]` unit shading normals facing the camera.
        eye: `[3]` camera centre.
        base_color: `[N, 3]` linear albedo.
        metallic, roughness: `[N]` in [0, 1].
        lighting: environment (on the same device).
        light_positions: `[L, 3]` point lights, render frame (or `L` tensors `[N, 3]`: per-point lights).
        light_colors: `[L, 3]` point-light intensities: the irradiance at `p` is `light_colors / |p - light|^2`
            (or `L` tensors `[N, 3]`).

    `lighting`'s sky, ground and up may be `[N, 3]` and its exposure `[N, 1]` (per point: `render_meshes`).
    """
    view = F.normalize(eye - position, dim=-1)
    n_dot_v = _dot(normal, view).clamp(min=1e-4)
    metallic, roughness = metallic[:, None], roughness[:, None].clamp(min=0.045, max=1.0)
    alpha = roughness * roughness
    f0 = 0.04 + (base_color - 0.04) * metallic
    diffuse_albedo = base_color * (1.0 - metallic)
    radiance = torch.zeros_like(base_color)
    for pos, col in zip(light_positions, light_colors, strict=True):
        to_light = pos - position
        dist2 = _dot(to_light, to_light).clamp(min=1e-8)
        light = to_light / dist2.sqrt()
        half = F.normalize(light + view, dim=-1)
        n_dot_l = _dot(normal, light).clamp(min=0.0)
        fresnel = f0 + (1.0 - f0) * (1.0 - _dot(view, half).clamp(0.0, 1.0)) ** 5
        specular = fresnel * ggx_specular(n_dot_l, n_dot_v, _dot(normal, half).clamp(min=0.0), alpha)
        diffuse = (1.0 - fresnel) * diffuse_albedo / math.pi
        radiance = radiance + (diffuse + specular) * (col / dist2) * n_dot_l
    # Ambient: gradient irradiance for diffuse; roughness-blurred reflection for specular.
    reflected = F.normalize(2.0 * n_dot_v * normal - view, dim=-1)
    env_diffuse = _environment(lighting, normal)
    env_specular = _environment(lighting, reflected) * (1.0 - roughness) + env_diffuse * roughness
    fresnel_ambient = f0 + (torch.maximum(1.0 - roughness, f0) - f0) * (1.0 - n_dot_v) ** 5
    radiance = (
        radiance + diffuse_albedo * env_diffuse * (1.0 - fresnel_ambient) + env_specular * fresnel_ambient
    )
    return radiance * lighting.exposure
