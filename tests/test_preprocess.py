"""Image preprocessing: every input kind and mode, alpha vs background removal, crops, and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixal3d.errors import InputError
from pixal3d.preprocess import object_bbox, preprocess_image, save_png


def _disc_rgba(h: int = 120, w: int = 160, cx: int = 90, cy: int = 50, r: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
    out = np.zeros((h, w, 4), np.uint8)
    out[inside] = (220, 40, 30, 255)
    return out


def _opaque_scene(h: int = 200, w: int = 260) -> np.ndarray:
    """A red disc on a noisy light-grey background, fully opaque."""
    rng = np.random.default_rng(0)
    img = rng.normal(205, 8, (h, w, 3)).clip(0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(xx - 150) ** 2 + (yy - 90) ** 2 < 45**2] = (200, 30, 30)
    return img


def _centroid(alpha: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(alpha > 127)
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_alpha_is_used_and_the_object_is_centred_at_1_1x() -> None:
    result = preprocess_image(_disc_rgba(), size=110)
    out = np.asarray(result.image)
    assert out.shape == (110, 110, 4)
    assert result.background_removed is False
    # the disc spans 1/1.1 of the side, centred
    cx, cy = _centroid(out[..., 3])
    assert abs(cx - 55) < 1.0 and abs(cy - 55) < 1.0
    x0, y0, x1, y1 = object_bbox(out[..., 3])
    assert abs((x1 - x0) - 100) <= 2 and abs((y1 - y0) - 100) <= 2
    # composited on black: transparent pixels are black, colour premultiplied
    assert (out[out[..., 3] == 0][:, :3] == 0).all()
    assert tuple(out[55, 55]) == (220, 40, 30, 255)


def test_opaque_image_gets_its_background_removed() -> None:
    result = preprocess_image(_opaque_scene(), size=64)
    assert result.background_removed
    x0, y0, x1, y1 = result.bbox
    assert abs(x0 - 105) <= 3 and abs(x1 - 195) <= 3 and abs(y0 - 45) <= 3 and abs(y1 - 135) <= 3
    alpha = np.asarray(result.image)[..., 3]
    # a disc of diameter 1/1.1 of the crop: area fraction pi/4/1.21
    assert abs((alpha > 127).mean() - np.pi / 4 / 1.21) < 0.03


def test_background_none_keeps_the_whole_opaque_image() -> None:
    result = preprocess_image(_opaque_scene(), size=64, background="none")
    assert result.bbox == (0, 0, 260, 200) and not result.background_removed
    alpha = np.asarray(result.image)[..., 3]
    # 260x200 in a 286-px square: the padding rows above and below are transparent
    assert alpha[0].max() == 0 and alpha[32, 3:-3].min() == 255 and alpha[32, 0] == 0


def test_grabcut_mode_ignores_a_given_alpha() -> None:
    rgba = np.dstack([_opaque_scene(), np.full((200, 260), 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a non-trivial alpha that does not describe the object
    assert preprocess_image(rgba, size=32, background="grabcut").background_removed


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "CMYK", "1", "I", "F"])
def test_every_mode_decodes(mode: str, tmp_path: Path) -> None:
    base = Image.fromarray(_disc_rgba())
    if mode == "I;16":
        grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(grey.astype("<u2"))
        assert image.mode == "I;16"
    elif mode == "P":
        image = base.convert("RGBA").convert("P")
        image.info["transparency"] = 0
        image = base.convert("RGB").quantize(8)
    elif mode == "PA":
        image = base.convert("RGBA").quantize(8)  # Pillow keeps the transparency as an RGBA palette
    else:
        image = base.convert(mode)
    result = preprocess_image(image, size=32, background="none")
    assert result.image.size == (32, 32) and result.image.mode == "RGBA"
    if mode in ("LA", "RGBA", "PA"):  # alpha carried through: the disc is the object
        assert abs(result.bbox[2] - result.bbox[0] - 60) <= 2


def test_palette_with_transparency_uses_it(tmp_path: Path) -> None:
    rgba = _disc_rgba()
    pal = Image.fromarray(rgba).convert("RGBA").quantize(4)
    path = tmp_path / "p.png"
    pal.save(path)
    reopened = Image.open(path)
    assert reopened.mode == "P" and "transparency" in reopened.info
    result = preprocess_image(path, size=32)
    assert not result.background_removed and abs(result.bbox[2] - result.bbox[0] - 60) <= 2


def test_inputs_as_path_pil_and_arrays_agree(tmp_path: Path) -> None:
    rgba = _disc_rgba()
    path = tmp_path / "disc.png"
    Image.fromarray(rgba).save(path)
    outs = [
        np.asarray(preprocess_image(src, size=48).image)
        for src in (path, str(path), Image.fromarray(rgba), rgba, rgba.astype(np.float32) / 255.0,
                    rgba.astype(np.uint16) * 257)
    ]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    rgba = _disc_rgba(h=100, w=200, cx=40, cy=50, r=20)  # object on the left
    image = Image.fromarray(rgba[..., :3]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    result = preprocess_image(path, size=32, background="none")
    assert result.source_size == (100, 200)  # width and height swapped by the transpose


def test_touching_the_border_warns_but_works(caplog: pytest.LogCaptureFixture) -> None:
    rgba = _disc_rgba(cx=10, cy=50, r=30)  # cut by the left border
    with caplog.at_level(logging.WARNING):
        result = preprocess_image(rgba, size=32)
    assert result.touches_border
    assert "touches the image border" in caplog.text


# --------------------------------------------------------------------------------------------- bad input
def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, I am text")
    with pytest.raises(InputError, match=r"notes\.png: not an image"):
        preprocess_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such image file"):
        preprocess_image(tmp_path / "nope.png")


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_opaque_scene()).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        preprocess_image(path)


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(InputError, match="exceeds the limit of 50000"):
        preprocess_image(path, max_pixels=50_000)


def test_all_transparent_alpha() -> None:
    with pytest.raises(InputError, match="fully transparent"):
        preprocess_image(np.zeros((40, 40, 4), np.uint8))


def test_empty_mask_after_background_removal() -> None:
    flat = np.full((60, 60, 3), 128, np.uint8)  # nothing but background
    with pytest.raises(InputError, match="mask is empty"):
        preprocess_image(flat)


def test_zero_size_crop() -> None:
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[10:30, 10:30, 3] = 5  # faint everywhere below the object threshold ...
    rgba[20, 20] = (255, 255, 255, 255)  # ... and a single opaque pixel
    with pytest.raises(InputError, match="too small to crop"):
        preprocess_image(rgba)


def test_bad_options() -> None:
    with pytest.raises(InputError, match="background"):
        preprocess_image(_disc_rgba(), background="magic")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="size"):
        preprocess_image(_disc_rgba(), size=0)
    with pytest.raises(InputError, match="shape"):
        preprocess_image(np.zeros((4, 4, 2), np.uint8))


def test_save_png_is_atomic_and_checks_the_target(tmp_path: Path) -> None:
    image = preprocess_image(_disc_rgba(), size=16).image
    save_png(image, tmp_path / "ok.png")
    assert Image.open(tmp_path / "ok.png").size == (16, 16)
    with pytest.raises(InputError, match="folder does not exist"):
        save_png(image, tmp_path / "missing" / "x.png")
    with pytest.raises(InputError, match=".png"):
        save_png(image, tmp_path / "x.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]


# ------------------------------------------------------------------------------------------------ fuzzing (issue 17)
def _encoded(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pixels[..., 3] = np.where(rng.random(pixels.shape[:2]) < 0.5, 255, 0) if mode == "RGBA" else 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


FUZZ_SEEDS = [("PNG", "RGBA", (24, 20)), ("PNG", "P", (20, 24)), ("PNG", "L", (16, 16)), ("JPEG", "RGB", (24, 24)),
              ("WEBP", "RGBA", (24, 16)), ("WEBP", "RGB", (16, 16)), ("BMP", "RGB", (16, 24)), ("BMP", "P", (16, 8)),
              ("PNG", "RGB", (200, 3)), ("BMP", "RGB", (1000, 1)), ("PNG", "RGB", (3, 40)), ("JPEG", "L", (5, 5))]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip a few bytes, truncate, insert random bytes, overwrite a 4-byte field with an extreme value."""
    out = bytearray(data)
    kind = int(rng.integers(0, 5))
    if kind == 0:
        for _ in range(int(rng.integers(1, 6))):
            out[int(rng.integers(0, len(out)))] = int(rng.integers(0, 256))
    elif kind == 1:
        out = out[: int(rng.integers(0, len(out)))]
    elif kind == 2:
        at = int(rng.integers(0, len(out)))
        out[at:at] = rng.bytes(int(rng.integers(1, 16)))
    elif kind == 3:
        at = int(rng.integers(0, max(1, min(len(out) - 4, 64))))  # headers live at the start
        out[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(out)  # kind 4: the seed itself (thin images must fail cleanly too)


def test_fuzzed_image_bytes_give_a_result_or_an_input_error(caplog: pytest.LogCaptureFixture) -> None:
    """400 mutated PNG/JPEG/WebP/BMP files (seeded), as bytes and as opened PIL images: no other exception escapes.

    Before issue 17, 384 of 2,100 such inputs escaped as raw OSError or cv2.error.
    """
    import io

    rng = np.random.default_rng(17)
    seeds = [_encoded(*spec, seed=i) for i, spec in enumerate(FUZZ_SEEDS)]
    outcomes = {"result": 0, "input_error": 0}
    escapes = []
    with caplog.at_level(logging.ERROR):  # the border warnings of thin images are expected; keep the log small
        for i in range(400):
            data = _mutate(seeds[i % len(seeds)], rng)
            source: bytes | Image.Image = data
            if i % 4 == 3:  # the server's route: Pillow opened the header, preprocess decodes the pixels
                try:
                    source = Image.open(io.BytesIO(data))
                except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
                    continue
            try:
                result = preprocess_image(source, size=16)
                assert result.image.size == (16, 16) and result.image.mode == "RGBA"
                outcomes["result"] += 1
            except InputError:
                outcomes["input_error"] += 1
            except Exception as err:  # noqa: BLE001 (what the test hunts)
                escapes.append(f"input {i}: {type(err).__name__}: {err}")
    assert not escapes, f"{len(escapes)} escapes: {escapes[:5]}"
    assert outcomes["result"] > 20 and outcomes["input_error"] > 20, outcomes


@pytest.mark.parametrize("size", [(200, 3), (1000, 1), (3, 200), (4, 4)])
def test_thin_opaque_images_are_input_errors(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    with pytest.raises(InputError, match="background"):
        preprocess_image(pixels, size=16)
    if min(size) >= 2:  # a 1-pixel-thin object is too small to crop, with or without background removal
        assert preprocess_image(pixels, size=16, background="none").image.size == (16, 16)
