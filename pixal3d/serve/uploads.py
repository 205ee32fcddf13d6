"""What a client sends to `POST /v1/generate`, checked before a job is queued: the `options` JSON (strict, bounded,
`fov` in degrees converted once to radians) and the image bytes (a format Pillow decodes safely, a size limit, an
object in it).
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from typing import Any

from pixal3d.errors import InputError
from pixal3d.serve.jobs import JobOptions

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
"""Pillow formats the server decodes; anything else is 415 (no EPS/PDF-style formats that run external tools)."""

MAX_STEPS = 200
"""Upper bound on sampler steps per stage a client may ask for (bounds a job's time)."""

TEXTURE_SIZES = (256, 512, 1024, 2048, 4096)
"""The texture sides (pixels) a client may ask for."""

MAX_OPTIONS_CHARS = 4096
"""Longest `options` text parsed; longer is refused before parsing (a real request is ~100 characters)."""

MAX_OPTIONS_DEPTH = 4
"""Deepest bracket nesting of `options` parsed (the object itself is depth 1; no option holds a container)."""


OPTION_HINTS: dict[str, str] = {
    "fov": "fov is in DEGREES and must be a number in (0, 180), or null to estimate it",
    "seed": "seed must be an integer in [0, 2^63)",
    "steps": f"steps must be an integer in [1, {MAX_STEPS}], or null for the model's default",
    "guidance": "guidance must be a number in [0, 100) (1 = no guidance), or null for the model's default",
    "resolution": "resolution must be an integer, or null for the model's",
    "faces": "the face budget must be an integer in [12, 10000000]",
    "texture_size": f"the texture size must be one of {list(TEXTURE_SIZES)} pixels",
}
"""The keys of the `options` JSON object and what each accepts (null = the model's default)."""


class OptionsShapeError(ValueError):
    """`options` is valid JSON of the wrong shape: not an object, an unknown key, a wrong type (HTTP 422)."""


@functools.cache
def options_model() -> type:
    """The pydantic model of `options` (built on first use: pydantic comes with the `serve` extra).

    Strict: JSON types are not coerced (`"7"` is not a seed, `true` is not a step count), unknown keys are errors,
    and every number has bounds; `fov` is in degrees here and converted once, in `parse_options`.
    """
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    from pixal3d.geometry.cleanup import MAX_FACES, MIN_FACES

    class GenerateOptions(BaseModel):
        """The `options` form field of `POST /v1/generate`."""

        model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
        fov: float | None = Field(None, gt=0, lt=180, description="horizontal FoV in degrees; null: estimated")
        seed: int = Field(0, ge=0, lt=2**63, description="seed of the sampling noise")
        steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="sampler steps per stage")
        guidance: float | None = Field(None, ge=0, lt=100, description="classifier-free guidance (1 = none)")
        resolution: int | None = Field(None, ge=1, le=4096, description="fine voxel resolution (the model's)")
        faces: int = Field(JobOptions.faces, ge=MIN_FACES, le=MAX_FACES, description="face budget")
        texture_size: Literal[TEXTURE_SIZES] = Field(JobOptions.texture_size, description="texture side, pixels")

    return GenerateOptions


def _check_options_size(text: str) -> None:
    """Refuse oversized or deeply nested `options` before any parser sees them (InputError, HTTP 400)."""
    if len(text) > MAX_OPTIONS_CHARS:
        raise InputError(f"options is {len(text)} characters long, more than the limit of {MAX_OPTIONS_CHARS}; "
                         "send only the keys you need, e.g. {\"seed\": 1, \"fov\": 40}")
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # bracket depth outside strings (the text is at most MAX_OPTIONS_CHARS long)
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = char == "\\", char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    if deepest > MAX_OPTIONS_DEPTH:
        raise InputError(f"options nests {deepest} levels deep, more than {MAX_OPTIONS_DEPTH}; it must be one flat "
                         "JSON object, e.g. {\"seed\": 1, \"fov\": 40}")


def _shown(value: Any) -> str:
    """A short, always-printable form of a client's value (a huge int's `repr` can itself raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_options(text: str, resolution: int | None = None) -> JobOptions:
    """The `options` form field -> `JobOptions` (fov converted from degrees to radians, here, once).

    Raises:
        InputError: too long or too deep, malformed JSON, or a value out of range (HTTP 400).
        OptionsShapeError: not an object, an unknown key, a wrong JSON type (HTTP 422).
    """
    from pydantic import ValidationError

    text = text or "{}"
    _check_options_size(text)
    try:
        data = options_model().model_validate_json(text)
    except ValidationError as err:
        raise _options_error(err) from None
    if data.resolution is not None and resolution is not None and data.resolution != resolution:
        raise InputError(f"this server's model decodes at resolution {resolution} only, got {data.resolution}; "
                         "omit resolution")
    return JobOptions(fov=None if data.fov is None else math.radians(data.fov), seed=data.seed, steps=data.steps,
                      guidance=data.guidance, resolution=data.resolution, faces=data.faces,
                      texture_size=int(data.texture_size))


def _options_error(err: Any) -> ValueError:
    """The first problem of a pydantic `ValidationError` as `InputError` (400) or `OptionsShapeError` (422)."""
    first = err.errors(include_url=False)[0]
    kind, loc = first["type"], first["loc"]
    if kind == "json_invalid":
        return InputError(f"options is not valid JSON ({first['msg']}); send e.g. {{\"seed\": 1, \"fov\": 40}}")
    if not loc:
        return OptionsShapeError(f"options must be a JSON object, got {type(first.get('input')).__name__}; "
                                 "send e.g. {\"seed\": 1, \"fov\": 40}")
    key = str(loc[0])
    if kind == "extra_forbidden":
        return OptionsShapeError(f"unknown option(s) [{key!r}]; valid options: {sorted(OPTION_HINTS)}")
    if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "none_required"):
        return OptionsShapeError(f"option {key!r} must be {_json_type(key)}, got {_shown(first.get('input'))}")
    return InputError(f"{OPTION_HINTS[key]}; got {_shown(first.get('input'))}")


def _json_type(key: str) -> str:
    return {"fov": "float or int or null", "guidance": "float or int or null", "seed": "int",
            "faces": "int", "texture_size": "int"}.get(key, "int or null")


def sniff_image(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Check that `data` is an image Pillow reads (header and, for PNG, the chunk checksums) without decoding it.

    Returns:
        (Pillow format name, (width, height)).

    Raises:
        UnsupportedImage: not an image of `IMAGE_FORMATS` (HTTP 415).
        ImageTooLarge: more than `max_pixels` pixels (HTTP 413).
        InputError: empty, truncated or corrupt (HTTP 400).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError("the image upload is empty; send the file's bytes in the 'image' field")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except UnidentifiedImageError as err:
        raise UnsupportedImage(
            f"the upload is not an image this server reads ({len(data)} bytes starting {data[:8]!r}); "
            f"send one of {', '.join(IMAGE_FORMATS)}") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"the image has too many pixels to decode safely ({err}); downscale it") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the image header is truncated or corrupt ({err}); re-export it") from err
    fmt, (width, height) = image.format, image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} = {width * height} pixels, more than this "
                            f"server's limit of {max_pixels}; downscale it")
    try:
        image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the {fmt} image is truncated or corrupt ({err}); re-export it") from err
    return fmt, (width, height)


def check_has_object(data: bytes) -> None:
    """Refuse (HTTP 400) an image whose alpha channel is fully transparent: it holds no object to reconstruct.

    Decodes the image only when it carries an alpha channel; call after `sniff_image` (format and size checked).
    """
    from PIL import Image

    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    if not (image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info):
        return
    try:
        alpha = image.convert("RGBA").getchannel("A")
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"the {image.format} image is truncated or corrupt ({err}); re-export it") from err
    if alpha.getextrema()[1] == 0:
        raise InputError("the image's alpha channel is fully transparent: there is no object; fix the alpha, or "
                         "send the image without one so that the background is removed automatically")


class UnsupportedImage(ValueError):
    """Not an image of `IMAGE_FORMATS` (HTTP 415)."""


class ImageTooLarge(ValueError):
    """More pixels than the server's limit (HTTP 413)."""
