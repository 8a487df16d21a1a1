"""Image decoding: a corpus of awkward files made here, each converted or refused correctly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from extract.images import ImageDecodeError, load_image


def _solid_halves(h: int = 32, w: int = 64) -> np.ndarray:
    """Left half red, right half blue: orientation is easy to read back."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2 :] = (0, 0, 255)
    return img


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs: object) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (the data is never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path, "a.png", Image.fromarray(img)))
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, img)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = load_image(_save(tmp_path, "g.png", Image.fromarray(gray, "L")))
    assert out.shape == (5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32896], [65535, 514, 1000]], dtype=np.uint16)
    path = _save(tmp_path, "g16.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 128], [255, 2, 4]])


def test_rgba_is_composited_on_white_by_default_or_black(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red channel 200
    rgba[:2, ..., 3] = 255  # top half opaque
    rgba[2:, ..., 3] = 0  # bottom half fully transparent
    path = _save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))
    white, black = load_image(path), load_image(path, background="black")
    np.testing.assert_array_equal(white[0, 0], (200, 0, 0))
    np.testing.assert_array_equal(white[3, 3], (255, 255, 255))
    np.testing.assert_array_equal(black[3, 3], (0, 0, 0))


def test_palette_image_maps_through_its_palette(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 2))
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.putdata([0, 1, 0, 1, 1, 0])
    out = load_image(_save(tmp_path, "p.png", pal))
    np.testing.assert_array_equal(out[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(out[0, 1], (40, 50, 60))


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    cmyk = Image.fromarray(_solid_halves()).convert("CMYK")
    out = load_image(_save(tmp_path, "c.jpg", cmyk, quality=95))
    assert out.shape == (32, 64, 3)
    np.testing.assert_allclose(out[16, 8], (255, 0, 0), atol=12)
    np.testing.assert_allclose(out[16, 56], (0, 0, 255), atol=12)


def test_exif_orientation_6_rotates_the_pixels(tmp_path: Path) -> None:
    image = Image.fromarray(_solid_halves(32, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    out = load_image(_save(tmp_path, "r.jpg", image, exif=exif.tobytes(), quality=95))
    assert out.shape == (64, 32, 3)  # width and height swap
    np.testing.assert_allclose(out[8, 16], (255, 0, 0), atol=12)  # left half is now on top
    np.testing.assert_allclose(out[56, 16], (0, 0, 255), atol=12)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    good = _save(tmp_path, "t.jpg", Image.fromarray(noise), quality=90)
    for keep in (good.stat().st_size // 2, 200):  # cut in the scan data, cut in the header
        bad = tmp_path / f"cut{keep}.jpg"
        bad.write_bytes(good.read_bytes()[:keep])
        with pytest.raises(ImageDecodeError, match=f"cut{keep}.jpg: truncated or corrupt"):
            load_image(bad)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [("empty.png", b"", "empty file"), ("notes.jpg", b"just some text\n", "not an image")],
)
def test_empty_and_non_image_files(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        load_image(path)
    assert info.value.reason == reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="nope.png: missing file"):
        load_image(tmp_path / "nope.png")


def test_decompression_bomb_beyond_the_limit(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 G pixels, 100 bytes
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(bomb)
    small = _save(tmp_path, "s.png", Image.fromarray(_solid_halves(20, 20)))
    with pytest.raises(ImageDecodeError, match="400 pixels > limit 100"):
        load_image(small, max_pixels=100)
    assert load_image(small, max_pixels=400).shape == (20, 20, 3)
