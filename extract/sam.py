"""Segment Anything image encoders (ViT-H/L/B) as stage-1 backbones.

Follows ``facebookresearch/segment-anything`` (``build_sam.py``, ``predictor.py``,
``utils/transforms.py``): the ViT is segment_anything's own ``ImageEncoderViT``, built with
the same arguments as ``build_sam``; the preprocessing is ``SamPredictor.set_image``'s:
``ResizeLongestSide`` through its PIL path, normalisation with SAM's pixel mean/std on the
0-255 scale, zero padding bottom-right to a square (after normalisation, so padded pixels
are the mean colour). Output ``embed`` is the neck output, (256, 64, 64) at 1024 px.

Deviations: only the image encoder is kept (the official file's ``prompt_encoder.*`` and
``mask_decoder.*`` keys are dropped on load, strict on the rest); the checkpoint is read
with ``weights_only=True`` on the CPU instead of a bare ``torch.load``. Attention runs
through SDPA by default (``extract.sam_attention``: the same function, other rounding;
``attention="reference"`` keeps segment_anything's own). The preprocessing is split in two:
``prepare`` (decode threads) resizes to uint8, ``finish`` (on the device) normalises and
pads. ``resize="device"`` moves the resize to the device too (the antialiased bilinear
resize of ``ResizeLongestSide.apply_image_torch``, rounded to the 0-255 grid; not
SamPredictor's numbers, so it is recorded in the preprocessing and the fingerprint).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from extract.base import (
    RANDOM_INIT,
    Backbone,
    BackboneError,
    check_rgb,
    longest_side_shape,
    require_checkpoint,
    split_overrides,
    to_chw_uint8,
    valid_cells,
)
from extract.sam_attention import set_attention
from extract.weights import WeightsError, load_state, read_state_dict, weights_sha256

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
ENCODER_PREFIX = "image_encoder."

VARIANTS: dict[str, dict[str, Any]] = {
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
}
_SHARED = {"img_size": 1024, "patch_size": 16, "window_size": 14, "out_chans": 256}
RESIZES = {"pil": "longest_side_pil_bilinear", "device": "longest_side_torch_bilinear_aa"}


class SamEncoder(Backbone):
    """SAM's image encoder with ``SamPredictor``'s preprocessing.

    Args:
        name: registry key.
        arch: ``ImageEncoderViT`` arguments (see ``VARIANTS``; JSON-able).
        attention: attention kernel (``extract.sam_attention.KERNELS``).
        resize: ``"pil"`` (SamPredictor's, in the decode threads) or ``"device"``.
    """

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self, name: str, arch: dict[str, Any], attention: str = "sdpa", resize: str = "pil"
    ) -> None:
        super().__init__()
        if resize not in RESIZES:
            raise BackboneError(f"{name}: resize must be one of {sorted(RESIZES)}, got {resize!r}")
        self.name, self.resize = name, resize
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
        self.set_attention(attention)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(3, 1, 1), False)
        self.transform = ResizeLongestSide(arch["img_size"])
        grid = arch["img_size"] // arch["patch_size"]
        self.outputs = {"embed": (arch["out_chans"], grid, grid)}

    def set_attention(self, kernel: str) -> None:
        """Switch the attention kernel of every block (the weights stay)."""
        set_attention(self.image_encoder, kernel)
        self.attention = kernel

    def kernel_config(self) -> dict[str, Any]:
        """What besides the weights and dtype changes the bits: the attention kernel."""
        return {} if self.attention == "reference" else {"attention": self.attention}

    def arch_config(self) -> dict[str, Any]:
        return {**self.arch, "global_attn_indexes": list(self.arch["global_attn_indexes"])}

    def preprocessing(self) -> dict[str, Any]:
        size = self.arch["img_size"]
        return {
            "input_size": [size, size],
            "resize": RESIZES[self.resize],
            "pad": "bottom_right_zero_after_normalize",
            "mean": list(PIXEL_MEAN),
            "std": list(PIXEL_STD),
            "input_range": [0, 255],
        }

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Resize (longest side, PIL) to ``(3, h, w)`` uint8; the valid cells of the input."""
        image = check_rgb(image)
        hw = longest_side_shape(image.shape[0], image.shape[1], self.arch["img_size"])
        if self.resize == "pil":
            image = self.transform.apply_image(image)  # (h, w, 3) uint8
        return to_chw_uint8(image), valid_cells(hw, self.arch["patch_size"])

    def finish(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Normalise (and with ``resize="device"`` resize) uint8 inputs; zero-pad to square."""
        size = self.arch["img_size"]
        mean, std = self.pixel_mean, self.pixel_std
        out = torch.zeros(len(inputs), 3, size, size, device=mean.device)  # (B, 3, S, S)
        for i, image in enumerate(inputs):
            x = image.to(mean.device, non_blocking=True).float()  # (3, h, w)
            if self.resize == "device":
                x = self._resize_on_device(x)
            out[i, :, : x.shape[1], : x.shape[2]] = (x - mean) / std
        return out

    def _resize_on_device(self, x: torch.Tensor) -> torch.Tensor:
        """``ResizeLongestSide.apply_image_torch``'s resize (antialiased bilinear), on the
        0-255 grid. Called directly: that method sizes its output from the batch and channel
        axes of its input (segment-anything 1.0), not from the image's height and width."""
        hw = longest_side_shape(x.shape[1], x.shape[2], self.arch["img_size"])
        resized = F.interpolate(x[None], hw, mode="bilinear", align_corners=False, antialias=True)
        return resized[0].round_().clamp_(0, 255)  # (3, h, w)

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Resize (longest side), normalise, pad: returns ``(3, S, S)`` and valid cells."""
        chw, valid = self.prepare(image)
        return self.finish([chw])[0], valid

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embed": self.image_encoder(x)}


def _encoder_keys(key: str) -> str | None:
    """Keep the official Sam checkpoint's ``image_encoder.*`` keys, without the prefix."""
    return key[len(ENCODER_PREFIX) :] if key.startswith(ENCODER_PREFIX) else None


def _encoder_state(checkpoint: str) -> dict[str, torch.Tensor]:
    """The ``image_encoder.*`` tensors of an official SAM checkpoint, without the prefix."""
    state = {}
    for key, value in read_state_dict(checkpoint).items():
        short = _encoder_keys(key)
        if short is not None:
            state[short] = value
    if not state:
        raise WeightsError(f"{checkpoint} holds no {ENCODER_PREFIX}* weights: not an official "
                           "SAM checkpoint (sam_vit_h_4b8939.pth and its siblings)")
    return state


def variant_of(state: dict[str, torch.Tensor]) -> str | None:
    """The SAM variant (``vit_b``, ``vit_l``, ``vit_h``) an encoder state dict was made for."""
    proj = state.get("patch_embed.proj.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    for name, arch in VARIANTS.items():
        if proj is not None and proj.shape[0] == arch["embed_dim"] and depth == arch["depth"]:
            return name
    return None


def _check_variant(state: dict[str, torch.Tensor], variant: str, arch: dict[str, Any],
                   checkpoint: str) -> None:
    """A one-line error when the checkpoint is another SAM variant than the one asked for."""
    found = variant_of(state)
    asked = (arch["embed_dim"], arch["depth"]) == (VARIANTS[variant]["embed_dim"],
                                                   VARIANTS[variant]["depth"])
    if found is not None and found != variant and asked:
        v = VARIANTS[found]
        raise WeightsError(
            f"{checkpoint} looks like SAM {found} ({v['depth']} blocks of width "
            f"{v['embed_dim']}), not {variant}: use --backbone sam_{found}"
        )


def _build(
    variant: str, checkpoint: str | None, random_init: bool, overrides: dict[str, Any]
) -> SamEncoder:
    """Overrides are ``ImageEncoderViT`` arguments plus ``attention`` and ``resize``."""
    name = f"sam_{variant}"
    require_checkpoint(checkpoint, random_init, name)
    options = {k: overrides.pop(k) for k in ("attention", "resize") if k in overrides}
    arch = split_overrides(overrides, {**_SHARED, **VARIANTS[variant]}, name)
    state = None
    if checkpoint is not None:  # checked before a (ViT-H: 2.5 GB) model is built
        state = _encoder_state(checkpoint)
        _check_variant(state, variant, arch, checkpoint)
    model = SamEncoder(name, arch, **options)
    if checkpoint is not None:
        assert state is not None
        load_state(model.image_encoder, state, strict=True, where=checkpoint)
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
