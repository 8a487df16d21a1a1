"""NSS backbone: hand-checked MSCN values, shapes, and features that track distortion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, filters

from extract.base import BackboneError
from extract.nss import _shift_product, build_nss, build_nss_ml, mscn


def _photo() -> np.ndarray:
    return data.astronaut()[:384]  # (384, 512, 3): a real photograph, 4:3


def _features(model: torch.nn.Module, image: np.ndarray) -> torch.Tensor:
    x, _ = model.preprocess(image)
    with torch.no_grad():
        return model.forward_features(x[None])["nss"]


def test_mscn_of_a_constant_image_is_zero_and_of_a_step_is_signed() -> None:
    flat = torch.full((1, 1, 20, 20), 128.0)
    assert torch.allclose(mscn(flat), torch.zeros_like(flat), atol=1e-4)
    step = torch.zeros(1, 1, 20, 20)
    step[..., 10:] = 100.0
    m = mscn(step)
    assert m[0, 0, 5, 9] < -0.5 and m[0, 0, 5, 10] > 0.5  # either side of the edge
    assert m[0, 0, 5, 0].abs() < 1e-3  # far from the edge


def test_shift_product_pairs_the_right_neighbours() -> None:
    m = torch.arange(12.0).view(1, 1, 3, 4)
    h = _shift_product(m, 0, 1)
    assert h[0, 0, 1, 1] == m[0, 0, 1, 1] * m[0, 0, 1, 2]
    d2 = _shift_product(m, 1, -1)
    assert d2[0, 0, 0, 2] == m[0, 0, 0, 2] * m[0, 0, 1, 1]
    assert h.shape == d2.shape == m.shape


def test_shapes_determinism_and_valid_size() -> None:
    model = build_nss()
    x, valid = model.preprocess(_photo())
    assert x.shape == (3, 512, 512) and tuple(valid) == (64, 64)
    a, b = _features(model, _photo()), _features(model, _photo())
    assert a.shape == (1, *model.outputs["nss"]) == (1, 30, 64, 64)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    ml = build_nss_ml(colour=True)
    with torch.no_grad():
        out = ml.forward_features(x[None])
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == ml.outputs
    assert ml.outputs == {"lvl0": (45, 64, 64), "lvl1": (45, 32, 32)}


@pytest.mark.parametrize("kind", ["blur", "noise"])
def test_feature_change_grows_with_distortion_strength(kind: str) -> None:
    model = build_nss(size=256, grid=32)
    image = _photo()
    base = _features(model, image)
    rng = np.random.default_rng(0)
    diffs = []
    for level in (0.5, 1.0, 2.0, 4.0) if kind == "blur" else (3.0, 8.0, 16.0, 32.0):
        if kind == "blur":
            out = filters.gaussian(image, sigma=level, channel_axis=-1) * 255
        else:
            out = image + rng.normal(0.0, level, image.shape)
        distorted = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        diffs.append((_features(model, distorted) - base).abs().mean().item())
    assert all(a < b for a, b in zip(diffs, diffs[1:], strict=False)), diffs


def test_bad_options() -> None:
    with pytest.raises(BackboneError, match="nss has no weights"):
        build_nss("weights.pth")
    with pytest.raises(BackboneError, match=r"unknown option\(s\) \['sise'\]"):
        build_nss(sise=3)


def test_moments_make_brightness_and_contrast_visible() -> None:
    """MSCN divides out local mean and contrast; the optional moment maps keep them."""
    photo = _photo()[::4, ::4]  # (96, 128, 3)
    darker = (photo.astype(np.float64) * 0.5).astype(np.uint8)
    plain = build_nss(size=64, grid=8)
    with_moments = build_nss(size=64, grid=8, moments=True)
    assert with_moments.outputs["nss"][0] == plain.outputs["nss"][0] * 7 // 5
    assert with_moments.arch_config()["maps"][-2:] == ["mu", "sigma"]

    def change(model: torch.nn.Module) -> float:
        a, b = _features(model, photo), _features(model, darker)
        return float((a - b).abs().mean() / a.abs().mean())

    assert change(with_moments) > 2 * change(plain)  # measured: 0.21 vs 0.07
    # the BRISQUE maps themselves are the same with or without the moments
    n = plain.outputs["nss"][0] // 2  # per scale: maps x stats, moments appended per scale
    full = _features(with_moments, photo)[0]
    assert torch.allclose(full[: n // 3], _features(plain, photo)[0][: n // 3])
