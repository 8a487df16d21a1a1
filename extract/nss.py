"""A weight-free natural-scene-statistics backbone (BRISQUE-style feature maps).

Follows BRISQUE (Mittal, Moorthy, Bovik, "No-Reference Image Quality Assessment in the
Spatial Domain", IEEE TIP 2012): mean-subtracted contrast-normalised (MSCN) coefficients
``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6) on the 0-255 scale, and
their products with the horizontal, vertical and two diagonal neighbours, at full and half
resolution. Where BRISQUE fits (asymmetric) generalised Gaussians to the whole image, this
backbone keeps the statistics *local*: for each of the 5 maps it pools the mean, the mean
absolute value and the variance over cells (adaptive average pooling), so heads that expect
spatial maps (SFEM, QFD) can run on it. Optional colour-opponent channels (R-G and
(R+G)/2-B, as in colour NSS work) triple the channels. Option ``stats`` chooses the
per-cell statistics; besides the three moments, ``log_var`` and ``shape`` (the moment ratio
``E|x|^2 / E[x^2]`` that determines a generalised Gaussian's shape, the quantity BRISQUE's
fit estimates) carry the same information in a content-scale-free form.

Input: the image is **squash-resized** to ``size x size`` (default 512, PIL bicubic). Not
aspect-preserving with padding like SAM, because a padded border is a hard edge that MSCN
statistics would see as structure in every cell next to it; squashing keeps every cell
valid (``valid_hw`` is the whole map). The anisotropic stretch (1.33 for 4:3 images) is
the same for every image of a dataset.

Outputs: ``nss`` (C, 64, 64) with both scales pooled to the 64x64 grid; the multi-level
backbone ``nss_ml`` gives ``lvl0`` (C/2, 64, 64) from full resolution and ``lvl1``
(C/2, 32, 32) from half resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from extract.base import (
    WEIGHT_FREE,
    Backbone,
    BackboneError,
    check_rgb,
    pil_resize,
    split_overrides,
    to_chw_uint8,
)

KERNEL = 7
SIGMA = 7 / 6
C_STAB = 1.0
N_MAPS = 5  # MSCN + 4 paired products
STATS = ("mean", "mean_abs", "var", "log_var", "shape")
DEFAULT_STATS = ("mean", "mean_abs", "var")
_DEFAULTS = {"size": 512, "grid": 64, "colour": False, "moments": False,
             "stats": list(DEFAULT_STATS)}


def _shift_product(m: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``m(y, x) * m(y + dy, x + dx)``, replicate-padded back to the input size."""
    h, w = m.shape[-2:]
    a = m[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    b = m[..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
    prod = a * b
    pad = (max(0, -dx), max(0, dx), max(0, -dy), max(0, dy))
    return F.pad(prod, pad, mode="replicate")


def _gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """Separable 7x7 Gaussian (sigma 7/6, weights sum to 1), reflect-padded, per channel."""
    k = torch.signal.windows.gaussian(KERNEL, std=SIGMA, dtype=x.dtype, device=x.device)
    k = k / k.sum()
    c, r = x.shape[1], KERNEL // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, KERNEL).expand(c, 1, 1, KERNEL), groups=c)
    return F.conv2d(x, k.view(1, 1, KERNEL, 1).expand(c, 1, KERNEL, 1), groups=c)


def local_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-weighted local mean and standard deviation, each ``(B, C, H, W)``."""
    c = x.shape[1]
    moments = _gaussian_blur(torch.cat([x, x * x], dim=1))  # (B, 2C, H, W)
    mu, second = moments[:, :c], moments[:, c:]
    return mu, (second - mu * mu).clamp_min(0).sqrt()


def mscn(x: torch.Tensor) -> torch.Tensor:
    """MSCN coefficients of a ``(B, C, H, W)`` 0-255 image (Gaussian 7x7, sigma 7/6)."""
    mu, sigma = local_moments(x)
    return (x - mu) / (sigma + C_STAB)


def nss_maps(x: torch.Tensor, moments: bool = False) -> torch.Tensor:
    """MSCN and its 4 neighbour products, ``(B, C, H, W)`` -> ``(B, 5C, H, W)``; with
    ``moments`` also the local mean and standard deviation (/255): ``(B, 7C, H, W)``."""
    m = mscn(x)
    products = [_shift_product(m, dy, dx) for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1))]
    extra = [v / 255.0 for v in local_moments(x)] if moments else []
    return torch.cat([m, *products, *extra], dim=1)  # (B, 5C | 7C, H, W)


def local_stats(
    maps: torch.Tensor, grid: int, stats: tuple[str, ...] = DEFAULT_STATS
) -> torch.Tensor:
    """Statistics per cell: ``(B, K, H, W)`` -> ``(B, len(stats) K, grid, grid)``.

    ``mean``, ``mean_abs`` and ``var`` are the cell's moments; ``log_var`` is
    ``log(var + 1e-4)`` (scale-free: a contrast change shifts it, not stretches it);
    ``shape`` is ``E|x|^2 / E[x^2]``, the moment ratio that fixes a generalised Gaussian's
    shape parameter (BRISQUE's main cue, and the same for any content scale).
    """
    mean = F.adaptive_avg_pool2d(maps, grid)
    mean_abs = F.adaptive_avg_pool2d(maps.abs(), grid)
    second = F.adaptive_avg_pool2d(maps * maps, grid)
    var = (second - mean * mean).clamp_min(0)
    table = {
        "mean": lambda: mean,
        "mean_abs": lambda: mean_abs,
        "var": lambda: var,
        "log_var": lambda: torch.log(var + 1e-4),
        "shape": lambda: mean_abs * mean_abs / (second + 1e-6),
    }
    return torch.cat([table[s]() for s in stats], dim=1)  # (B, len(stats) K, grid, grid)


def opponent_channels(rgb: torch.Tensor, colour: bool) -> torch.Tensor:
    """Luminance (ITU-R 601), plus R-G and (R+G)/2-B when ``colour``: ``(B, 1|3, H, W)``."""
    y = TF.rgb_to_grayscale(rgb)
    if not colour:
        return y
    r, g, b = rgb.unbind(dim=1)
    return torch.stack([y[:, 0], r - g, 0.5 * (r + g) - b], dim=1)  # (B, 3, H, W)


class NSSBackbone(Backbone):
    """BRISQUE-style local statistics at two scales; no weights.

    Args:
        multi_level: give ``lvl0``/``lvl1`` (one map per scale) instead of one ``nss`` map.
        size: side of the squash-resized input.
        grid: side of the full-scale output map (the half scale gives ``grid // 2``).
        colour: add the two colour-opponent channels.
        moments: add the local mean and standard deviation (/255) as two more maps. MSCN
            divides them out, which makes BRISQUE blind to brightness, contrast and
            saturation changes; these maps keep them visible (not part of BRISQUE).
        stats: per-cell statistics of each map, from ``STATS``.
    """

    def __init__(
        self, multi_level: bool, size: int, grid: int, colour: bool, moments: bool,
        stats: Sequence[str] = DEFAULT_STATS,
    ) -> None:
        super().__init__()
        if size % 2 or grid % 2 or size < 2 * KERNEL or grid > size // 2:
            raise BackboneError(
                f"nss: need even size >= 14 and even grid <= size/2, got {size}, {grid}"
            )
        unknown = [s for s in stats if s not in STATS]
        if unknown or not stats or len(set(stats)) != len(stats):
            raise BackboneError(f"nss: stats must be distinct names from {STATS}, got {stats}")
        self.stats = tuple(stats)
        self.name = "nss_ml" if multi_level else "nss"
        self.multi_level, self.size, self.grid, self.colour = multi_level, size, grid, colour
        self.moments = moments
        self.weights_sha256 = WEIGHT_FREE
        per_scale = (3 if colour else 1) * (N_MAPS + 2 * moments) * len(self.stats)
        if multi_level:
            self.outputs = {
                "lvl0": (per_scale, grid, grid),
                "lvl1": (per_scale, grid // 2, grid // 2),
            }
        else:
            self.outputs = {"nss": (2 * per_scale, grid, grid)}

    def arch_config(self) -> dict[str, Any]:
        return {
            "multi_level": self.multi_level,
            "grid": self.grid,
            "colour": self.colour,
            "window": [KERNEL, SIGMA],
            "stats": list(self.stats),
            "maps": ["mscn", "h", "v", "d1", "d2"] + (["mu", "sigma"] if self.moments else []),
        }

    def preprocessing(self) -> dict[str, Any]:
        return {
            "input_size": [self.size, self.size],
            "resize": "squash_pil_bicubic",
            "input_range": [0, 255],
            "mean": None,
            "std": None,
        }

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Squash-resize (PIL bicubic) to ``(3, size, size)`` uint8."""
        resized = pil_resize(check_rgb(image), (self.size, self.size), "bicubic")
        return to_chw_uint8(resized), np.array([self.grid, self.grid], dtype=np.int64)

    def finish(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs).float()  # (B, 3, size, size) on the 0-255 scale

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        x, valid = self.prepare(image)
        return self.finish([x])[0], valid

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        channels = opponent_channels(x.float(), self.colour)  # (B, 1|3, H, W)
        half = F.avg_pool2d(channels, 2)  # (B, 1|3, H/2, W/2)
        full_maps = nss_maps(channels, self.moments)
        half_maps = nss_maps(half, self.moments)
        if self.multi_level:
            return {
                "lvl0": local_stats(full_maps, self.grid, self.stats),
                "lvl1": local_stats(half_maps, self.grid // 2, self.stats),
            }
        stats = [local_stats(full_maps, self.grid, self.stats),
                 local_stats(half_maps, self.grid, self.stats)]
        return {"nss": torch.cat(stats, dim=1)}  # (B, C, grid, grid)


def _build(multi_level: bool, checkpoint: str | None, overrides: dict[str, Any]) -> NSSBackbone:
    name = "nss_ml" if multi_level else "nss"
    if checkpoint is not None:
        raise BackboneError(f"{name} has no weights; got checkpoint {checkpoint!r}")
    options = split_overrides(overrides, _DEFAULTS, name)
    return NSSBackbone(multi_level, **options).freeze()


def build_nss(
    checkpoint: str | None = None, *, random_init: bool = False, **options: Any
) -> NSSBackbone:
    """Single-map NSS backbone (``nss``); ``random_init`` is accepted and ignored."""
    return _build(False, checkpoint, options)


def build_nss_ml(
    checkpoint: str | None = None, *, random_init: bool = False, **options: Any
) -> NSSBackbone:
    """Two-level NSS backbone (``lvl0`` 64x64, ``lvl1`` 32x32 by default)."""
    return _build(True, checkpoint, options)
