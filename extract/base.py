"""The backbone contract of stage 1 and the preprocessing helpers the backbones share.

A backbone is a frozen ``nn.Module`` that turns one decoded RGB image into a fixed-size
input tensor (``preprocess``) and a batch of such tensors into named feature maps
(``forward_features``). Everything that decides its numbers is JSON-able
(``arch_config``, ``preprocessing``, ``weights_sha256``) so the feature store can
fingerprint it. See ``docs/INTERFACES.md`` ("extract.backbones").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

RANDOM_INIT = "random-init"
WEIGHT_FREE = "weight-free"

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class BackboneError(ValueError):
    """A backbone was asked for something it cannot build or run."""


class Backbone(nn.Module):
    """Base class: a frozen feature extractor with declared outputs.

    Attributes:
        name: registry key (``sam_vit_h``).
        outputs: per-image output shapes, e.g. ``{"embed": (256, 64, 64)}``.
        weights_sha256: sha256 of the weights that were loaded, or ``"random-init"``.
    """

    name: str = ""
    outputs: dict[str, tuple[int, ...]]
    weights_sha256: str = RANDOM_INIT

    def arch_config(self) -> dict[str, Any]:
        """JSON-able architecture configuration (everything but the weights)."""
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """JSON-able description of ``preprocess``: sizes, resize method, normalisation."""
        raise NotImplementedError

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Turn an ``(H, W, 3)`` uint8 RGB image into ``((3, h, w) float32, valid_hw)``."""
        raise NotImplementedError

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The CPU half of ``preprocess`` (decode threads): by default all of it.

        Backbones with a device half return a compact ``(3, h, w)`` uint8 tensor here
        (resized, not normalised) and turn a batch of them into the model input in
        ``finish``, on the device; ``finish([prepare(im)])[0]`` equals ``preprocess(im)``.
        """
        return self.preprocess(image)

    def finish(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """The device half of ``preprocess``: ``prepare`` outputs to a ``(B, 3, h, w)`` batch."""
        return torch.stack(inputs)  # (B, 3, h, w)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run a ``(B, 3, h, w)`` batch and return the declared outputs."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(x)

    def freeze(self) -> Self:
        """Evaluation mode, no gradients: the state every extraction runs in."""
        self.eval().requires_grad_(False)
        return self


def check_rgb(image: np.ndarray) -> np.ndarray:
    """Fail unless ``image`` is an ``(H, W, 3)`` uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise BackboneError(f"expected a uint8 numpy image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise BackboneError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image


def to_chw_uint8(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 to a contiguous ``(3, H, W)`` uint8 tensor (``prepare`` outputs)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, H, W), a copy


def to_chw_float(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 to a ``(3, H, W)`` float32 tensor on the 0-255 scale."""
    return to_chw_uint8(image).float()


def longest_side_shape(h: int, w: int, target: int) -> tuple[int, int]:
    """Size after scaling the longest side to ``target`` (SAM's rounding: ``int(x + 0.5)``)."""
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def pil_resize(image: np.ndarray, hw: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``hw`` with PIL (antialiased when shrinking)."""
    if method not in _RESAMPLE:
        raise BackboneError(f"unknown resize method {method!r}; choose from {sorted(_RESAMPLE)}")
    if tuple(image.shape[:2]) == tuple(hw):
        return image
    resized = Image.fromarray(image).resize((hw[1], hw[0]), _RESAMPLE[method])
    return np.asarray(resized)


def opencv_resize_cubic(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``hw`` with OpenCV's ``INTER_CUBIC`` (no
    antialiasing when shrinking), as ``cv2.resize`` does in PromptIQA's loaders."""
    import cv2  # opencv-python-headless; imported here so other backbones never load it

    if tuple(image.shape[:2]) == tuple(hw):
        return image
    return np.asarray(
        cv2.resize(np.ascontiguousarray(image), (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    )


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with per-channel ``(3, 1, 1)`` constants."""
    return (x - mean) / std


def pad_bottom_right(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a ``(C, h, w)`` tensor to ``(C, size, size)`` at the bottom and right."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise BackboneError(f"cannot pad a {h}x{w} input to {size}x{size}")
    return F.pad(x, (0, size - w, 0, size - h))


def longest_side_preprocessing(
    size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> dict[str, Any]:
    """``preprocessing()`` of a backbone that resizes the longest side to ``size`` with PIL
    bilinear, normalises on the 0-255 scale and zero-pads bottom-right to a square."""
    return {
        "input_size": [size, size],
        "resize": "longest_side_pil_bilinear",
        "pad": "bottom_right_zero_after_normalize",
        "mean": list(mean),
        "std": list(std),
        "input_range": [0, 255],
    }


def valid_cells(hw: tuple[int, int], cell: int) -> np.ndarray:
    """Valid extent of an ``hw`` image in cells of ``cell`` pixels (ceil), as int64 (2,)."""
    return np.array([math.ceil(hw[0] / cell), math.ceil(hw[1] / cell)], dtype=np.int64)


def split_overrides(
    overrides: Mapping[str, Any], allowed: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Merge ``overrides`` into the defaults ``allowed``; unknown keys are an error."""
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise BackboneError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return {**allowed, **overrides}


def require_checkpoint(checkpoint: str | None, random_init: bool, name: str) -> None:
    """A builder needs a checkpoint unless it is asked for random weights."""
    if checkpoint is None and not random_init:
        raise BackboneError(
            f"{name}: give a local checkpoint path, or random_init=True for random weights "
            "(nothing is ever downloaded)"
        )
    if checkpoint is not None and random_init:
        raise BackboneError(f"{name}: give a checkpoint or random_init=True, not both")
