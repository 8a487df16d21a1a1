"""MoNet, PromptIQA's image encoder, as a frozen stage-1 backbone.

Follows the MoNet encoder inside PromptIQA (Chen et al., "PromptIQA: Boosting the
Performance and Generalization for No-Reference Image Quality Assessment via Prompts",
ECCV 2024; repository ``chencn2020/PromptIQA``, ``PromptIQA/models/promptiqa.py``): a
ViT-B/8 at 224 px whose blocks 3, 6, 9 and 12 (before the final norm, CLS dropped) give
four 768x28x28 views; three MAL(n=4) modules give three "opinions"; a MAL(n=3) fuses
them; one transformer block (768, 12 heads, no qkv bias, LayerNorm eps 1e-5); a CNN to a
128-d image feature. The ViT and the block are timm's (``VisionTransformer``, ``Block``).

Preprocessing: the whole image is squashed to 224x224 (aspect ratio not kept, no crop), to
[0, 1], normalised with mean = std = 0.5. The resize is PIL's antialiased bicubic by
default (``resize="pil_bicubic"``); ``resize="opencv_cubic"`` is OpenCV's ``INTER_CUBIC``,
which the reference uses (``PromptIQA/utils/dataset/loader_tools.py`` ``load_image``:
``cv2.resize(..., interpolation=cv2.INTER_CUBIC)``, no antialiasing) and which the released
weights were trained with. The choice is part of ``preprocessing()``, so of the store
fingerprint; the default's fingerprint fields are the same as before the option existed.

Deviations: intermediate blocks come from timm's ``forward_intermediates`` instead of
forward hooks appending to a shared list; the view of block ``i`` is its token sequence
transposed to channels-first (``(B, 784, 768) -> (B, 768, 28, 28)``, tokens row-major),
our reading of the reference's reshape. The CNN stages are configurable only so tests can
run a tiny grid; the defaults are the reference's. The encoder is frozen here, while the
reference trains it end to end (the design's point: cache once, train heads many times).

Outputs: ``feature`` (128,) and, with ``tokens=True``, the ViT's four tapped levels as
``tokens`` (4, 784, 768): 2,408,448 values, 4.6 MiB per image in float16.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import numpy as np
import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from extract.base import (
    RANDOM_INIT,
    Backbone,
    BackboneError,
    check_rgb,
    normalize,
    opencv_resize_cubic,
    pil_resize,
    require_checkpoint,
    to_chw_uint8,
)
from extract.monet_parts import MAL
from extract.weights import load_weights, weights_sha256

MEAN = STD = (0.5, 0.5, 0.5)
RESIZES = {"pil_bicubic": "squash_pil_bicubic", "opencv_cubic": "squash_opencv_inter_cubic"}
_KEEP = ("vit.", "MALs.", "fusion_mal.", "block.", "cnn.")
_RENAMES = (
    (r"^MALs\.", "mals."),
    (r"\.attention_module\.", ".view_attention."),
    (r"\.(q|k|v)Conv\.", r".\1."),
    (r"\.c_(q|k|v)\.", r".\1."),
)


@dataclass(frozen=True)
class MoNetConfig:
    """Architecture of MoNet; the defaults are the released PromptIQA model's."""

    img_size: int = 224
    patch_size: int = 8
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    taps: tuple[int, ...] = (2, 5, 8, 11)
    n_opinions: int = 3
    cnn: tuple[tuple[int, int, int], ...] = ((256, 5, 2), (128, 3, 2), (128, 3, 3))
    tokens: bool = False
    resize: str = "pil_bicubic"

    def __post_init__(self) -> None:
        if self.resize not in RESIZES:
            raise BackboneError(
                f"monet: resize must be one of {sorted(RESIZES)}, got {self.resize!r}"
            )

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


def _cnn(in_dim: int, stages: tuple[tuple[int, int, int], ...], grid: int) -> nn.Sequential:
    """(conv k, no padding) -> BN -> ReLU -> AvgPool per stage; must end at 1x1."""
    layers: list[nn.Module] = []
    size = grid
    for out_dim, kernel, pool in stages:
        layers += [nn.Conv2d(in_dim, out_dim, kernel), nn.BatchNorm2d(out_dim), nn.ReLU()]
        layers.append(nn.AvgPool2d(pool))
        in_dim, size = out_dim, (size - kernel + 1) // pool
    if size != 1:
        raise BackboneError(f"monet: the CNN stages {stages} turn a {grid} grid into {size}, not 1")
    return nn.Sequential(*layers)


class MoNet(Backbone):
    """MoNet image encoder: ViT-B/8 taps -> 3 x MAL(4) -> MAL(3) -> Block -> CNN."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: MoNetConfig) -> None:
        super().__init__()
        self.name, self.config = "monet", config
        c, s = config.embed_dim, config.grid
        self.vit = VisionTransformer(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=c,
            depth=config.depth,
            num_heads=config.num_heads,
            num_classes=0,
            final_norm=False,
        )
        n_views = len(config.taps)
        self.mals = nn.ModuleList(MAL(c, n_views, s) for _ in range(config.n_opinions))
        self.fusion_mal = MAL(c, config.n_opinions, s)
        self.block = Block(c, num_heads=config.num_heads, qkv_bias=False, norm_layer=nn.LayerNorm)
        self.cnn = _cnn(c, config.cnn, s)
        self.register_buffer("mean", torch.tensor(MEAN).view(3, 1, 1), False)
        self.register_buffer("std", torch.tensor(STD).view(3, 1, 1), False)
        self.outputs = {"feature": (config.cnn[-1][0],)}
        if config.tokens:
            self.outputs["tokens"] = (n_views, s * s, c)

    def arch_config(self) -> dict[str, Any]:
        arch = asdict(self.config)
        del arch["resize"]  # preprocessing, recorded there
        return arch

    def preprocessing(self) -> dict[str, Any]:
        size = self.config.img_size
        return {
            "input_size": [size, size],
            "resize": RESIZES[self.config.resize],
            "input_range": [0, 1],
            "mean": list(MEAN),
            "std": list(STD),
        }

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Squash-resize (PIL bicubic or OpenCV cubic) to uint8; ``valid_hw`` is the whole
        patch grid."""
        size, grid = self.config.img_size, self.config.grid
        rgb = check_rgb(image)
        resized = (
            opencv_resize_cubic(rgb, (size, size))
            if self.config.resize == "opencv_cubic"
            else pil_resize(rgb, (size, size), "bicubic")
        )
        return to_chw_uint8(resized), np.array([grid, grid], np.int64)

    def finish(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """To [0, 1], then normalised, on the device: ``(B, 3, size, size)``."""
        x = torch.stack(inputs).to(self.mean.device).float() / 255.0
        return normalize(x, self.mean.float(), self.std.float())

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Squash-resize and normalise; ``valid_hw`` is the whole patch grid."""
        x, valid = self.prepare(image)
        return self.finish([x])[0].cpu(), valid

    def vit_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens after each tapped block, before the final norm: ``(B, S*S, C)`` each."""
        taps = self.vit.forward_intermediates(
            x, indices=list(self.config.taps), norm=False, output_fmt="NLC", intermediates_only=True
        )
        return cast(list[torch.Tensor], taps)  # intermediates_only: a list per tap

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, s = x.shape[0], self.config.embed_dim, self.config.grid
        tokens = self.vit_tokens(x)
        views = torch.stack([t.transpose(1, 2).reshape(b, c, s, s) for t in tokens])  # (n,B,C,S,S)
        opinions = torch.stack([mal(views).view(b, c, s, s) for mal in self.mals])  # (3,B,C,S,S)
        fused = self.block(self.fusion_mal(opinions).transpose(1, 2))  # (B, S*S, C)
        feature = self.cnn(fused.transpose(1, 2).reshape(b, c, s, s)).flatten(1)  # (B, 128)
        out = {"feature": feature}
        if self.config.tokens:
            out["tokens"] = torch.stack(tokens, dim=1)  # (B, n, S*S, C)
        return out


def promptiqa_key_map(key: str) -> str | None:
    """Map a PromptIQA checkpoint key to MoNet's; prompt-head keys map to None (dropped)."""
    key = key.removeprefix("module.")
    if not key.startswith(_KEEP):
        return None
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def build_monet(
    checkpoint: str | None = None, *, random_init: bool = False, **arch_overrides: Any
) -> MoNet:
    """MoNet from a PromptIQA checkpoint (``{"state_dict": {"module.*": ...}}``), strict.

    Args:
        checkpoint: the PromptIQA ``best_model.pth.tar`` (or any file of that layout).
        random_init: random weights instead of a checkpoint (tests, benchmarks).
        **arch_overrides: fields of :class:`MoNetConfig` (e.g. ``tokens=True``,
            ``resize="opencv_cubic"``).
    """
    require_checkpoint(checkpoint, random_init, "monet")
    known = {f.name for f in fields(MoNetConfig)}
    unknown = sorted(set(arch_overrides) - known)
    if unknown:
        raise BackboneError(f"monet: unknown option(s) {unknown}; allowed: {sorted(known)}")
    cnn = tuple(tuple(stage) for stage in arch_overrides.pop("cnn", MoNetConfig.cnn))
    taps = tuple(arch_overrides.pop("taps", MoNetConfig.taps))
    model = MoNet(MoNetConfig(cnn=cnn, taps=taps, **arch_overrides))
    if checkpoint is not None:
        load_weights(model, checkpoint, strict=True, key_map=promptiqa_key_map)
        model.weights_sha256 = weights_sha256(checkpoint)
    else:
        model.weights_sha256 = RANDOM_INIT
    return model.freeze()
