"""Decode one image file to an ``(H, W, 3)`` uint8 RGB array, or fail with a short reason.

Decoding rules (Pillow does the work):

* EXIF orientation is applied (``ImageOps.exif_transpose``): pixels come out as viewed.
* Grayscale, bilevel, palette, CMYK, YCbCr and LAB are converted to RGB by Pillow. A CMYK
  file with an embedded ICC profile is converted through that profile (ImageCms) to sRGB.
* 16-bit (and 32-bit integer) grayscale is scaled to 8 bits by ``round(v / 257)`` (65535
  maps to 255), not clipped, which is what ``Image.convert`` would do.
* Alpha (RGBA, LA, PA, palette transparency) is composited on a solid background,
  **white by default**: a transparent region is shown as a viewer on a white page shows
  it. ``background="black"`` gives the other common convention.
* Only the first frame of a multi-frame file (GIF, TIFF) is used.
* A pixel limit is set explicitly (``max_pixels``, default ``MAX_PIXELS``); it is checked
  from the header before any pixel is decoded, so a decompression bomb costs nothing.

Every failure (missing, empty, not an image, truncated, too large, unsupported mode)
raises :class:`ImageDecodeError` whose message starts with the path and a short reason.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

MAX_PIXELS = 89_478_485  # Pillow's own default, set here explicitly so it never drifts
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
_DIRECT = {"RGB"}
_VIA_PIL = {"L", "1", "CMYK", "YCbCr", "LAB", "HSV", "P"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}
_HIGH_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class ImageDecodeError(ValueError):
    """An image file could not be decoded; ``reason`` is a short machine-friendly tag."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def _open(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise ImageDecodeError(path, "missing file")
    if not path.is_file():
        raise ImageDecodeError(path, "not a file")
    if path.stat().st_size == 0:
        raise ImageDecodeError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(path, "decompression bomb", str(err)) from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(path, "not an image") from err
    except OSError as err:
        raise ImageDecodeError(path, "truncated or corrupt", str(err)) from err
    _check_pixels(path, image, max_pixels)
    return image


def _check_pixels(path: Path, image: Image.Image, max_pixels: int) -> None:
    w, h = image.size
    if w * h > max_pixels:
        raise ImageDecodeError(
            path, "decompression bomb", f"{w}x{h} = {w * h} pixels > limit {max_pixels}"
        )
    if w < 1 or h < 1:
        raise ImageDecodeError(path, "empty image", f"{w}x{h}")


def _load(path: Path, image: Image.Image) -> Image.Image:
    try:
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
        raise ImageDecodeError(path, "truncated or corrupt", str(err)) from err


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK to sRGB through the embedded ICC profile when there is one."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            target = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, target, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: fall back to Pillow's plain conversion
    return image.convert("RGB")


def _high_bit_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)  # (H, W)
    scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(scaled[:, :, None], 3, axis=2))  # (H, W, 3)


def _composite(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")


def to_rgb(image: Image.Image, background: str = "white", path: Path | None = None) -> Image.Image:
    """Convert a decoded Pillow image of any supported mode to 8-bit RGB."""
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {background!r}")
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "PA"
    if mode in _DIRECT:
        return image
    if mode in _ALPHA:
        return _composite(image, BACKGROUNDS[background])
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    if mode in _HIGH_BIT:
        return _high_bit_to_rgb(image)
    if mode in _VIA_PIL:
        return image.convert("RGB")
    raise ImageDecodeError(path or "<image>", "unsupported mode", mode)


def load_image(
    path: str | os.PathLike[str], *, background: str = "white", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array.

    Args:
        path: the image file.
        background: colour alpha is composited on, ``"white"`` (default) or ``"black"``.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Raises:
        ImageDecodeError: with a short reason: ``missing file``, ``empty file``,
            ``not an image``, ``truncated or corrupt``, ``decompression bomb``,
            ``unsupported mode``.
    """
    path = Path(path)
    image = _open(path, max_pixels)
    with image:
        rgb = to_rgb(_load(path, image), background, path)
        array = np.array(rgb, dtype=np.uint8)  # (H, W, 3), a copy
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageDecodeError(path, "unsupported mode", f"decoded shape {array.shape}")
    return array


decode_image = load_image
