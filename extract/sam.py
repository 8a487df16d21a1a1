"""Segment Anything image encoders (ViT-H/L/B) as stage-1 backbones.

Follows ``facebookresearch/segment-anything`` (``build_sam.py``, ``predictor.py``,
``utils/transforms.py``): the ViT is segment_anything's own ``ImageEncoderViT``, built with
the same arguments as ``build_sam``; the preprocessing is ``SamPredictor.set_image``'s:
``ResizeLongestSide`` through its PIL path, normalisation with SAM's pixel mean/std on the
0-255 scale, zero padding bottom-right to a square (after normalisation, so padded pixels
are the mean colour). Output ``embed`` is the neck output, (256, 64, 64) at 1024 px.

Deviations: only the image encoder is kept (the official file's ``prompt_encoder.*`` and
``mask_decoder.*`` keys are dropped on load, strict on the rest); the checkpoint is read
with ``weights_only=True`` on the CPU instead of a bare ``torch.load``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from extract.base import (
    RANDOM_INIT,
    Backbone,
    check_rgb,
    longest_side_preprocessing,
    normalize,
    pad_bottom_right,
    require_checkpoint,
    split_overrides,
    to_chw_float,
    valid_cells,
)
from extract.weights import load_weights, weights_sha256

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
ENCODER_PREFIX = "image_encoder."

VARIANTS: dict[str, dict[str, Any]] = {
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
}
_SHARED = {"img_size": 1024, "patch_size": 16, "window_size": 14, "out_chans": 256}


class SamEncoder(Backbone):
    """SAM's image encoder with ``SamPredictor``'s preprocessing.

    Args:
        name: registry key.
        arch: ``ImageEncoderViT`` arguments (see ``VARIANTS``; JSON-able).
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, name: str, arch: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.arch = dict(arch)
        self.image_encoder = ImageEncoderViT(
            img_size=arch["img_size"],
            patch_size=arch["patch_size"],
            embed_dim=arch["embed_dim"],
            depth=arch["depth"],
            num_heads=arch["num_heads"],
            mlp_ratio=4,
            out_chans=arch["out_chans"],
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=arch["window_size"],
            global_attn_indexes=tuple(arch["global_attn_indexes"]),
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(3, 1, 1), False)
        self.transform = ResizeLongestSide(arch["img_size"])
        grid = arch["img_size"] // arch["patch_size"]
        self.outputs = {"embed": (arch["out_chans"], grid, grid)}

    def arch_config(self) -> dict[str, Any]:
        return {**self.arch, "global_attn_indexes": list(self.arch["global_attn_indexes"])}

    def preprocessing(self) -> dict[str, Any]:
        return longest_side_preprocessing(self.arch["img_size"], PIXEL_MEAN, PIXEL_STD)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Resize (longest side), normalise, pad: returns ``(3, S, S)`` and valid cells."""
        resized = self.transform.apply_image(check_rgb(image))  # (h, w, 3) uint8
        x = normalize(to_chw_float(resized), self.pixel_mean.cpu(), self.pixel_std.cpu())
        valid = valid_cells(resized.shape[:2], self.arch["patch_size"])
        return pad_bottom_right(x, self.arch["img_size"]), valid

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embed": self.image_encoder(x)}


def _encoder_keys(key: str) -> str | None:
    """Keep the official Sam checkpoint's ``image_encoder.*`` keys, without the prefix."""
    return key[len(ENCODER_PREFIX) :] if key.startswith(ENCODER_PREFIX) else None


def _build(
    variant: str, checkpoint: str | None, random_init: bool, overrides: dict[str, Any]
) -> SamEncoder:
    name = f"sam_{variant}"
    require_checkpoint(checkpoint, random_init, name)
    arch = split_overrides(overrides, {**_SHARED, **VARIANTS[variant]}, name)
    model = SamEncoder(name, arch)
    if checkpoint is not None:
        load_weights(model.image_encoder, checkpoint, strict=True, key_map=_encoder_keys)
        model.weights_sha256 = weights_sha256(checkpoint)
    else:
        model.weights_sha256 = RANDOM_INIT
    return model.freeze()


def build_sam_vit_h(
    checkpoint: str | None = None, *, random_init: bool = False, **arch_overrides: Any
) -> SamEncoder:
    """SAM ViT-H encoder from the official ``sam_vit_h_4b8939.pth`` (637 M parameters)."""
    return _build("vit_h", checkpoint, random_init, arch_overrides)


def build_sam_vit_l(
    checkpoint: str | None = None, *, random_init: bool = False, **arch_overrides: Any
) -> SamEncoder:
    """SAM ViT-L encoder from the official ``sam_vit_l_0b3195.pth``."""
    return _build("vit_l", checkpoint, random_init, arch_overrides)


def build_sam_vit_b(
    checkpoint: str | None = None, *, random_init: bool = False, **arch_overrides: Any
) -> SamEncoder:
    """SAM ViT-B encoder from the official ``sam_vit_b_01ec64.pth``."""
    return _build("vit_b", checkpoint, random_init, arch_overrides)
