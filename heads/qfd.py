"""DP-IQA quality feature decoder (QFD) over cached diffusion U-Net maps.

Follows DP-IQA (arXiv 2405.19996, §III-C; repository ``RomGai/DP-IQA``, class
``QualityFeatureDecoder``): every input map is resized (bicubic, ``align_corners=False``)
to a common size, given a 3x3 convolution to 512 channels and squeeze-excitation; the maps
are concatenated; a 3x3 convolution to 512 + SE; 1x1 convolutions to 128, 32 and 8 with
ReLU; flattened; an MLP 512 -> 512 -> 1 with no output activation.

Deviations and choices:

* Any number of maps >= 1. They are concatenated in ``config.names`` order, by default the
  store's map names sorted (``up0, up1, up2, up3``); the reference concatenates
  ``[U3, U2, U1, U0]``. Pass ``names=("up3", "up2", "up1", "up0")`` for the reference order
  (only the position of the 512-channel blocks in the fuse convolution differs).
* The common size defaults to the largest map's side (64 for SD 1.5 taps).
* The reference's unused modules (``bnc1``, ``dropout``, ``softm``, ``classifier_dist``)
  are not declared. With the reference's four maps (1280, 1280, 640, 320 channels) the
  head has the reference's in-use count, 42,934,697 parameters.
* Valid sizes are ignored: SD features come from a squash-resized, unpadded image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.losses import MSE_RANK
from heads.optim import TrainConfig
from heads.protocols import PLAIN
from heads.specs import FeatureSpecs, HeadConfigError, map_names


@dataclass(frozen=True)
class QFDConfig:
    """Sizes of the QFD head.

    Attributes:
        names: cached map names, in concatenation order; from the store.
        in_channels: channels of each map, aligned with ``names``; from the store.
        size: common side every map is resized to.
        width: channels after each per-map conv and after the fuse conv.
        se_reduction: squeeze-excitation reduction factor.
        reduce: channels of the 1x1 convolutions after the fuse conv.
        hidden: width of the two hidden MLP layers.
    """

    names: tuple[str, ...] = ("up0", "up1", "up2", "up3")
    in_channels: tuple[int, ...] = (1280, 1280, 640, 320)
    size: int = 64
    width: int = 512
    se_reduction: int = 16
    reduce: tuple[int, ...] = (128, 32, 8)
    hidden: int = 512

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.in_channels):
            raise HeadConfigError(
                f"qfd needs one channel count per map: names {self.names}, "
                f"in_channels {self.in_channels}"
            )
        if not self.reduce:
            raise HeadConfigError("qfd: reduce must list at least one channel count")


class SqueezeExcitation(nn.Module):
    """SE: global average pool, Linear C -> C/r, ReLU, Linear C/r -> C, sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        mid = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, mid, bias=False),
            nn.ReLU(),
            nn.Linear(mid, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))  # (B, C)
        return x * gate[:, :, None, None]  # (B, C, H, W)


def _conv_se(cin: int, cout: int, reduction: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), SqueezeExcitation(cout, reduction))


def qfd_input_fields(specs: FeatureSpecs, overrides: Any) -> dict[str, Any]:
    """The store decides the maps QFD reads, their channels and the common size."""
    names = tuple(overrides.get("names") or map_names(specs))
    if not names:
        raise HeadConfigError(
            f"qfd needs at least one (C, H, W) feature map; the store has {dict(specs)}"
        )
    for name in names:
        if name not in specs or len(specs[name]) != 3:
            raise HeadConfigError(
                f"qfd needs (C, H, W) maps; {name!r} is {specs.get(name, 'missing')}"
            )
    size = overrides.get("size") or max(max(specs[n][1:]) for n in names)
    return {"names": names, "in_channels": tuple(specs[n][0] for n in names), "size": size}


# DP-IQA's teacher milestones by our dataset keys: RomGai/DP-IQA build.py build_optmizer
# (koniq [5], clive [10], livefb [2], spaq [5]). The paper's Table I (teacher row) gives
# KonIQ 5 and LIVEFB 2, and "-" for CLIVE and SPAQ.
DP_IQA_MILESTONES: dict[str, tuple[int, ...]] = {
    "koniq10k": (5,),
    "livec": (10,),
    "flive": (2,),
    "spaq": (5,),
}
# DP-IQA §IV-B and build.py: Adam 1e-5, MultiStepLR x0.2 at the dataset's milestone (5
# elsewhere), a batch of at least 12 (the code: 16); the loss of eq. 11, MSE + margin
# ranking (the reference trains MSE only: loss="mse"). The fine-tuned teacher trains "for
# up to 15 epochs"; this frozen-U-Net head gets more (docs/qfd.md).
DP_IQA_TRAINING = TrainConfig(
    epochs=15, batch_size=16, lr=1e-5, schedule="multistep", milestones=(5,), gamma=0.2,
    loss="mse_rank", milestones_by_dataset=DP_IQA_MILESTONES,
)


class QFD(nn.Module):
    """Quality feature decoder + MLP regressor."""

    kind = PLAIN
    config_cls = QFDConfig
    input_fields = staticmethod(qfd_input_fields)
    default_loss = MSE_RANK
    train_defaults = DP_IQA_TRAINING
    # The smallest sensible instance (contract tests, examples) and store specs it reads.
    tiny_config: dict[str, Any] = {"width": 8, "se_reduction": 2, "reduce": (4, 2), "hidden": 8}
    example_specs = {"up0": (6, 4, 4), "up1": (4, 8, 8)}

    def __init__(self, config: QFDConfig) -> None:
        super().__init__()
        c = self.config = config
        self.levels = nn.ModuleList(_conv_se(ch, c.width, c.se_reduction) for ch in c.in_channels)
        self.fuse = _conv_se(len(c.names) * c.width, c.width, c.se_reduction)
        chans = (c.width, *c.reduce)
        self.reduce = nn.Sequential(
            *(
                layer
                for a, b in zip(chans[:-1], chans[1:], strict=True)
                for layer in (nn.Conv2d(a, b, 1), nn.ReLU())
            )
        )
        self.mlp = nn.Sequential(
            nn.Linear(c.reduce[-1] * c.size * c.size, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, 1),
        )

    def feature_map(self, features: dict[str, Tensor]) -> Tensor:
        """The decoder's output map (B, reduce[-1], size, size), after ReLU."""
        size = self.config.size
        maps = []
        for name, level in zip(self.config.names, self.levels, strict=True):
            x = features[name]
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
            maps.append(level(x))  # (B, width, size, size)
        return self.reduce(self.fuse(torch.cat(maps, dim=1)))  # (B, 8, size, size)

    def forward(
        self,
        features: dict[str, Tensor],
        valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Predicted quality (B,) from the named maps, each (B, C_k, H_k, W_k)."""
        fmap = self.feature_map(features)
        return self.mlp(fmap.flatten(1)).squeeze(-1)  # flatten: (B, 8 * size * size)
