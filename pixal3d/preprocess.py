"""Image preprocessing: any user image -> the square, object-centred RGBA crop the models see (DESIGN section 1).

Steps: decode (path, PIL image or array) with a pixel-count limit -> EXIF transpose -> RGBA (modes 1, L, LA,
P with or without transparency, RGB, RGBA, I;16, I, F, CMYK) -> alpha: a non-trivial alpha is used as is;
an opaque image gets its background removed by OpenCV GrabCut seeded from the image border (no downloaded
weights), unless switched off -> square crop of 1.1x the object's bounding box, centred on it (padding with
transparent black where it leaves the image) -> colour premultiplied by alpha (composited on black) -> resize
to `S x S`.

The output keeps its alpha channel: `RGB` is already composited on black, `A` is the object mask. Training
renders pass through this same function (DESIGN section 2), so train and inference crops agree.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixal3d.atomic import atomic_path
from pixal3d.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
"""Default decompression-bomb guard: images with more pixels are refused before decoding."""

CROP_MARGIN = 1.1
"""Side of the square crop relative to the longer side of the object's bounding box."""

ALPHA_THRESHOLD = 128
"""Alpha (0-255) at or above which a pixel belongs to the object for the bounding box."""

Background = Literal["auto", "grabcut", "none"]
ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class PreprocessResult:
    """The preprocessed image and where it came from.

    Attributes:
        image: `S x S` RGBA PIL image; RGB composited on black, A the object mask.
        bbox: object bounding box in the (EXIF-transposed) source image, `(x0, y0, x1, y1)` pixels, exclusive.
        crop: the square crop in source pixels, `(x0, y0, side)`; it may extend past the image.
        source_size: `(width, height)` of the (EXIF-transposed) source image.
        touches_border: whether the object's mask touches the source image border (it may be cut off).
        background_removed: whether GrabCut made the alpha.
    """

    image: Image.Image
    bbox: tuple[int, int, int, int]
    crop: tuple[float, float, float]
    source_size: tuple[int, int]
    touches_border: bool
    background_removed: bool


# --------------------------------------------------------------------------------------------- decoding
def _name(source: ImageInput) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def load_image(source: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `source` (a path, an encoded file's bytes, a PIL image or an array) into a fully loaded,
    EXIF-transposed PIL image (any mode).

    Every failure of the data itself, whatever Pillow raises for it, becomes an `InputError`.

    Raises:
        InputError: missing file, not an image, truncated or corrupt data, more than `max_pixels` pixels.
    """
    name = _name(source)
    if isinstance(source, np.ndarray):
        image = _array_to_image(source)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, os.PathLike, bytes)):
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise InputError(f"{name}: no such image file; check the path")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
        except UnidentifiedImageError as err:
            raise InputError(f"{name}: not an image Pillow can read; give a PNG, JPEG or WebP file") from err
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise InputError(f"{name}: too many pixels to decode safely ({err}); downscale the image") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:  # a plugin choking on a corrupt header
            raise InputError(f"{name}: corrupt or truncated image header ({err}); re-export or re-download it") \
                from err
    else:
        raise InputError(f"expected an image path, bytes, PIL image or numpy array, got {type(source).__name__}")
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(
            f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(decompression-bomb guard); downscale the image, or raise max_pixels (pixal3d preprocess --max-pixels)"
        )
    if width == 0 or height == 0:
        raise InputError(f"{name}: image has zero size ({width}x{height})")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InputError(f"{name}: truncated or corrupt image data ({err}); re-export or re-download it") from err
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError) as err:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, err)
        return image


def _array_to_image(array: np.ndarray) -> Image.Image:
    """`[H, W]`, `[H, W, 1|3|4]` arrays: uint8, uint16 (full range) or float in [0, 1] -> PIL image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"image array must be [H, W], [H, W, 3] or [H, W, 4], got shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise InputError("image array contains NaN or Inf values")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise InputError(f"image array dtype must be uint8, uint16, bool or float in [0, 1], got {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(a))


def to_rgba_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """Any PIL mode -> `[H, W, 4] uint8` RGBA and whether the image carried an alpha channel.

    16-bit and 32-bit greyscale (I;16, I, F) are rescaled to 8 bits by their full range (I;16: 65535) or,
    for I and F, by their maximum; CMYK and YCbCr go through Pillow's RGB conversion.
    """
    mode = image.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(grey.max()), 1.0)
        grey8 = (np.clip(grey / top, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        rgb = np.repeat(grey8[..., None], 3, axis=2)
        return np.concatenate([rgb, np.full_like(grey8[..., None], 255)], axis=2), False
    if mode == "1":
        image = image.convert("L")
    return np.asarray(image.convert("RGBA")).copy(), has_alpha


# --------------------------------------------------------------------------------------------- masking
def remove_background(rgb: np.ndarray, iterations: int = 5, work_size: int = 320) -> np.ndarray:
    """Foreground mask of an opaque image by GrabCut seeded from its border.

    The 1-pixel image border (at the working size) is definite background, the rest probable foreground.
    Runs at most `work_size` pixels on the long side (GrabCut costs seconds at 512 px, about a second at
    320 px on a 2-core CPU), then upsamples the mask.

    Args:
        rgb: `[H, W, 3] uint8`.

    Returns:
        `[H, W] uint8` alpha (0 or 255); the largest connected components holding 99% of the area are kept.

    Raises:
        InputError: the image is too thin to hold both a border and an interior at the working size, or GrabCut
            finds nothing to separate (OpenCV's error is passed on in the message).
    """
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, work_size / max(h, w))
    small = cv2.resize(rgb, (max(int(w * scale), 3), max(int(h * scale), 3)), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mask = np.full((sh, sw), cv2.GC_PR_FGD, np.uint8)
    border = max(1, round(0.01 * max(sh, sw)))
    if min(sh, sw) - 2 * border < 3:  # GrabCut needs samples of both classes: a border and an interior
        raise InputError(f"a {w}x{h} image is too thin for automatic background removal; give an image with an "
                         "alpha channel, or use background='none' / --background none")
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = (cv2.GC_BGD,) * 4
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(small[..., ::-1]), mask, None, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error as err:  # e.g. too few distinct samples for its colour models
        raise InputError(f"automatic background removal failed on this {w}x{h} image ({str(err).strip()}); "
                         "give an image with an alpha channel, or use background='none' / --background none") \
            from err
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    fg = _keep_main_components(fg)
    full = cv2.resize(fg * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(full >= 128, 255, 0).astype(np.uint8)


def _keep_main_components(fg: np.ndarray, keep_fraction: float = 0.99) -> np.ndarray:
    """Drop the small speckle components of a binary mask, keeping the largest ones up to `keep_fraction`."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count <= 2:
        return fg
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    cumulative = np.cumsum(areas[order]) / areas.sum()
    keep = order[: int(np.searchsorted(cumulative, keep_fraction)) + 1] + 1
    return np.isin(labels, keep).astype(np.uint8)


def _has_real_alpha(alpha: np.ndarray) -> bool:
    """An alpha is non-trivial when some pixel is meaningfully transparent."""
    return bool(alpha.min() < 250)


# --------------------------------------------------------------------------------------------- cropping
def object_bbox(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """`(x0, y0, x1, y1)` (exclusive) of the pixels with alpha >= threshold, or None when there are none."""
    ys, xs = np.nonzero(alpha >= threshold)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def square_crop(
    rgba: np.ndarray, bbox: tuple[int, int, int, int], size: int, margin: float = CROP_MARGIN
) -> tuple[Image.Image, tuple[float, float, float]]:
    """Crop a square of `margin` x the bbox's long side centred on the bbox, composite on black, resize.

    Args:
        rgba: `[H, W, 4] uint8` source.
        bbox: `(x0, y0, x1, y1)` object box in source pixels.
        size: output side `S`.

    Returns:
        The `S x S` RGBA image (RGB premultiplied by alpha) and the crop `(x0, y0, side)` in source pixels.
    """
    x0, y0, x1, y1 = bbox
    height, width = rgba.shape[:2]
    side = margin * max(x1 - x0, y1 - y0)
    left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    # Pad with transparent black so the crop box lies inside the array (Pillow rejects boxes outside it).
    pad = int(np.ceil(max(0.0, -left, -top, left + side - width, top + side - height))) + 1
    # Premultiply in float so the resampling filter never bleeds background colour into the edge. Written
    # straight into one padded plane per channel (what Pillow's "F" mode wants): no interleaved float copy.
    planes = np.zeros((4, height + 2 * pad, width + 2 * pad), dtype=np.float32)
    inner = (slice(pad, pad + height), slice(pad, pad + width))
    planes[3][inner] = rgba[..., 3]
    weight = planes[3][inner] / 255.0
    for c in range(3):
        np.multiply(rgba[..., c], weight, out=planes[c][inner], dtype=np.float32)
    box = (left + pad, top + pad, left + pad + side, top + pad + side)
    resample = Image.Resampling.BICUBIC if side < size else Image.Resampling.BOX
    channels = [np.asarray(Image.fromarray(plane).resize((size, size), resample, box=box)) for plane in planes]
    out = np.clip(np.stack(channels, axis=-1), 0.0, 255.0).round().astype(np.uint8)
    out[..., :3] = np.minimum(out[..., :3], out[..., 3:4])  # premultiplied colour never exceeds alpha
    return Image.fromarray(out), (float(left), float(top), float(side))


# --------------------------------------------------------------------------------------------- entry point
def check_background(background: str) -> None:
    """Raise `InputError` unless `background` is one of "auto", "grabcut", "none"."""
    if background not in ("auto", "grabcut", "none"):
        raise InputError(f"background must be 'auto', 'grabcut' or 'none', got {background!r}")


def preprocess_image(
    source: ImageInput,
    size: int = 512,
    background: Background = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreprocessResult:
    """Turn any image into the models' input: an `S x S` RGBA crop centred on the object, on black.

    Args:
        source: a file path, an encoded image file's bytes, a PIL image or a numpy array (`[H, W]`,
            `[H, W, 3|4]`, uint8/uint16/float).
        size: output side `S` in pixels.
        background: "auto" keeps a non-trivial alpha and runs GrabCut on opaque images; "grabcut" always
            runs GrabCut (ignoring alpha); "none" keeps the given alpha, or treats an opaque image as all object.
        max_pixels: refuse sources with more pixels (decompression-bomb guard).

    Raises:
        InputError: unreadable/oversized input, an all-transparent alpha, an empty mask, a zero-size crop.
    """
    check_background(background)
    if not (isinstance(size, int) and 8 <= size <= 8192):
        raise InputError(f"size must be an integer in [8, 8192] pixels, got {size!r}")
    name = _name(source)
    rgba, has_alpha = to_rgba_array(load_image(source, max_pixels=max_pixels))
    alpha = rgba[..., 3]
    if has_alpha and alpha.max() == 0:
        raise InputError(f"{name}: the alpha channel is fully transparent, there is no object; fix the alpha "
                         "or drop it so the background is removed automatically")
    removed = False
    if background == "grabcut" or (background == "auto" and not _has_real_alpha(alpha)):
        rgba[..., 3] = remove_background(rgba[..., :3])
        removed = True
    elif not _has_real_alpha(alpha):
        rgba[..., 3] = 255
    bbox = object_bbox(rgba[..., 3])
    if bbox is None:
        raise InputError(
            f"{name}: the object mask is empty (background removal found no object); give an RGBA image "
            "with the object's alpha, or use background='none' / --background none"
        )
    if min(bbox[2] - bbox[0], bbox[3] - bbox[1]) < 2:
        raise InputError(f"{name}: the object is only {bbox[2] - bbox[0]}x{bbox[3] - bbox[1]} pixels, too small "
                         "to crop; give a larger image of the object")
    height, width = alpha.shape
    touches = bbox[0] == 0 or bbox[1] == 0 or bbox[2] == width or bbox[3] == height
    if touches and background != "none":
        logger.warning("%s: the object touches the image border and may be cut off; processing anyway", name)
    image, crop = square_crop(rgba, bbox, size)
    return PreprocessResult(image=image, bbox=bbox, crop=crop, source_size=(width, height),
                            touches_border=touches, background_removed=removed)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Write `image` as PNG atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"output must be a .png file, got {path}")
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    with atomic_path(path, make_parents=False) as tmp:
        image.save(tmp, format="PNG")
