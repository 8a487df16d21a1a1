"""SAM-IQA heads: the spatial-frequency feature extraction module (SFEM), FR and NR.

Follows SAM-IQA (Li et al., arXiv 2307.04455): a Siamese SFEM with a spatial branch of
ordinary convolutions and a frequency branch of Fourier convolutions (eq. 2, Fig. 2) at
several scales, each pooled to one common size with adaptive average pooling. FR: the
element-wise L1 distance per branch ``|F_L - F_H|`` (eq. 3), mappings ``f`` and ``g``,
concatenation, FRRB (eq. 4). NR: mappings ``eta_s`` and ``eta_f``, concatenation, NRRB
(eq. 5). The paper gives no layer list; every open size is a field of ``SFEMConfig``.

Choices where the paper is silent (sizes start from the team's reference-note proposals):

* A shared stem Conv1x1 (C -> width) + BN + ReLU reduces the 256 SAM channels once.
  Spatial branch: Conv3x3 (width -> width) + BN + ReLU. Frequency branch: ``x +
  FourierUnit(x)``, then Conv1x1 (width -> width) (FFC's spectral transform, no local
  Fourier unit). The proposal's per-branch Conv3x3 on 256 channels is replaced by the
  shared 1x1 stem to keep CPU epochs short (measured below).
* Scales: the map and average-pooled copies (factors ``scales``); the same branch weights
  run on every scale; each result is pooled to ``pool_size`` and the scales are fused per
  branch by a Conv1x1 over their concatenation.
* Mappings ``f, g, eta_s, eta_f``: Conv3x3 + ReLU. FRRB/NRRB: Conv3x3 (2 width -> width) +
  ReLU, Conv3x3 (width -> width/2) + ReLU, masked global average pooling, MLP
  width/2 -> width/4 -> 1, no output activation.
* Padding: each row carries its valid size (h, w) in map cells. The invalid region is
  zeroed before SFEM; at every scale the branch output is zeroed outside the (pooled)
  valid region and adaptive pooling is a masked mean; the regression block ends with a
  global average weighted by the valid fraction of each pooled cell. Padded cells therefore
  never reach the output. (The FFT still sees the edge between image and zeros.)
* The FR reference map uses the distorted image's valid size (pairs share a size).

Default size (256-channel input, width 32, scales 1/2/4, pooled to 16x16): 70,657
parameters for ``sfem_nr`` and ``sfem_fr`` alike (the Siamese SFEM is shared). Measured on
this project's 2 shared CPU cores, a training step over 16 rows of 256x64x64 takes about
2.5 s (NR) / 3.3 s (FR), so an epoch over 800 rows takes 2-3 minutes; width 64 (265,473
parameters) doubles that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.fourier import FourierUnit
from heads.losses import L1
from heads.optim import TrainConfig
from heads.protocols import FULL_REFERENCE, PLAIN
from heads.specs import FeatureSpecs, HeadConfigError, pick_feature, valid_mask

BRANCHES = ("spatial", "frequency")


@dataclass(frozen=True)
class SFEMConfig:
    """Sizes of the SAM-IQA heads.

    Attributes:
        in_channels: channels of the cached map (256 for SAM); taken from the store.
        feature: name of the cached map the head reads.
        width: channels of each branch and of the mappings.
        scales: average-pooling factors of the multi-scale copies (1 = the map itself).
        pool_size: common side every scale is pooled to.
        branches: ablation switch: ("spatial", "frequency"), ("spatial",) or ("frequency",).
    """

    in_channels: int = 256
    feature: str = "embed"
    width: int = 32
    scales: tuple[int, ...] = (1, 2, 4)
    pool_size: int = 16
    branches: tuple[str, ...] = BRANCHES

    def __post_init__(self) -> None:
        bad = [b for b in self.branches if b not in BRANCHES]
        if bad or not self.branches:
            raise HeadConfigError(
                f"SFEM branches must be a non-empty subset of {BRANCHES}, got {self.branches}"
            )
        if not self.scales or min(self.scales) < 1:
            raise HeadConfigError(f"SFEM scales must be positive integers, got {self.scales}")
        if self.width < 4:
            raise HeadConfigError(f"SFEM width must be at least 4, got {self.width}")


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class _FrequencyBranch(nn.Module):
    """A residual Fourier unit and a Conv1x1 projection (FFC's spectral transform)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fourier = FourierUnit(width, width)
        self.project = nn.Conv2d(width, width, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(x + self.fourier(x))


def _make_branch(kind: str, width: int) -> nn.Module:
    if kind == "spatial":
        return _conv_bn_relu(width, width, 3)
    return _FrequencyBranch(width)


def _masked_pool(x: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Masked mean of ``x`` over the cells of a ``size`` x ``size`` grid.

    Returns:
        The pooled map (B, C, size, size) (0 where a cell has no valid input) and the valid
        fraction of each cell (B, 1, size, size).
    """
    frac = F.adaptive_avg_pool2d(mask, size)  # (B, 1, P, P)
    total = F.adaptive_avg_pool2d(x * mask, size)  # (B, C, P, P)
    return total / frac.clamp_min(1e-6) * (frac > 0), frac


class SFEM(nn.Module):
    """Spatial-frequency feature extraction over several scales (one shared instance)."""

    def __init__(self, config: SFEMConfig) -> None:
        super().__init__()
        self.config = config
        c, w, n = config.in_channels, config.width, len(config.scales)
        self.stem = _conv_bn_relu(c, w, 1)
        self.branches = nn.ModuleDict({b: _make_branch(b, w) for b in config.branches})
        self.fuse = nn.ModuleDict({b: nn.Conv2d(n * w, w, 1, bias=False) for b in config.branches})

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[dict[str, Tensor], Tensor]:
        """Branch features of a batch of maps.

        Args:
            x: maps (B, C, H, W).
            valid: (B, 2) valid (h, w) in cells, or None when the whole map is valid.

        Returns:
            ``{branch: (B, width, P, P)}`` and the valid fraction per pooled cell (B, 1, P, P).
        """
        b, _, h, w = x.shape
        mask = valid_mask(valid, b, h, w, x.device)  # (B, 1, H, W)
        x = self.stem(x * mask) * mask  # (B, width, H, W)
        levels = [_pooled_level(x, mask, s) for s in self.config.scales]
        p = self.config.pool_size
        out = {}
        for name, branch in self.branches.items():
            pooled = [_masked_pool(branch(xs) * ms, ms, p)[0] for xs, ms in levels]
            out[name] = self.fuse[name](torch.cat(pooled, dim=1))  # (B, width, P, P)
        return out, F.adaptive_avg_pool2d(mask, p)


def _pooled_level(x: Tensor, mask: Tensor, s: int) -> tuple[Tensor, Tensor]:
    """The map average-pooled by ``s`` (masked mean per cell) and its 0/1 valid mask."""
    if s == 1:
        return x, mask
    size = (-(-x.shape[-2] // s), -(-x.shape[-1] // s))
    frac = F.adaptive_avg_pool2d(mask, size)  # (B, 1, H/s, W/s)
    xs = F.adaptive_avg_pool2d(x, size) / frac.clamp_min(1e-6)  # (B, C, H/s, W/s)
    return xs, (frac > 0).float()


class _Mapping(nn.Module):
    """Conv3x3 + ReLU per branch (f, g for FR; eta_s, eta_f for NR)."""

    def __init__(self, config: SFEMConfig) -> None:
        super().__init__()
        w = config.width
        self.maps = nn.ModuleDict(
            {b: nn.Sequential(nn.Conv2d(w, w, 3, padding=1), nn.ReLU()) for b in config.branches}
        )

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        return torch.cat([self.maps[b](feats[b]) for b in self.maps], dim=1)  # (B, nb*w, P, P)


class RegressionBlock(nn.Module):
    """FRRB / NRRB: two convolutions, masked global average pooling, a small MLP."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        half, quarter = max(width // 2, 8), max(width // 4, 8)  # >= 8 units: no dead-ReLU collapse
        self.convs = nn.Sequential(
            nn.Conv2d(cin, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, half, 3, padding=1),
            nn.ReLU(),
        )
        self.mlp = nn.Sequential(nn.Linear(half, quarter), nn.ReLU(), nn.Linear(quarter, 1))

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        """Score (B,) from a map (B, cin, P, P) and its valid fraction (B, 1, P, P)."""
        y = self.convs(x)
        pooled = (y * weight).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1e-6)  # (B, C)
        return self.mlp(pooled).squeeze(-1)


def init_weights(module: nn.Module) -> None:
    """He-normal init for convolutions and linear layers, zero biases.

    PyTorch's default init shrinks activations through the mapping, the regression block
    and its MLP until the ReLUs die and the head predicts a constant; He init keeps the
    scale (ResNet practice).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def sfem_input_fields(specs: FeatureSpecs, overrides: Any) -> dict[str, Any]:
    """The store decides which map SFEM reads and its channel count."""
    name = pick_feature(specs, overrides.get("feature", ""), "sfem", map_only=True)
    return {"feature": name, "in_channels": specs[name][0]}


# SAM-IQA §4.2: Adam, learning rate 2e-5, batch 16, 500 epochs (no schedule is given).
SAM_IQA_TRAINING = TrainConfig(epochs=500, batch_size=16, lr=2e-5)


class SFEMNR(nn.Module):
    """No-reference SAM-IQA head: SFEM, eta_s / eta_f, concatenation, NRRB (eq. 5)."""

    kind = PLAIN
    config_cls = SFEMConfig
    input_fields = staticmethod(sfem_input_fields)
    default_loss = L1
    train_defaults = SAM_IQA_TRAINING
    # The smallest sensible instance (contract tests, examples) and store specs it reads.
    tiny_config: dict[str, Any] = {"width": 8, "scales": (1, 2), "pool_size": 4}
    example_specs = {"embed": (6, 8, 8)}

    def __init__(self, config: SFEMConfig) -> None:
        super().__init__()
        self.config = config
        self.sfem = SFEM(config)
        self.eta = _Mapping(config)
        self.nrrb = RegressionBlock(len(config.branches) * config.width, config.width)
        init_weights(self)

    def forward(
        self,
        features: dict[str, Tensor],
        valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Predicted quality (B,) of maps ``features[config.feature]`` (B, C, H, W)."""
        feats, weight = self.sfem(features[self.config.feature], valid)
        return self.nrrb(self.eta(feats), weight)


class SFEMFR(nn.Module):
    """Full-reference SAM-IQA head: Siamese SFEM, |F_L - F_H| per branch, f / g, FRRB."""

    kind = FULL_REFERENCE
    config_cls = SFEMConfig
    input_fields = staticmethod(sfem_input_fields)
    default_loss = L1
    train_defaults = SAM_IQA_TRAINING
    # The smallest sensible instance (contract tests, examples) and store specs it reads.
    tiny_config: dict[str, Any] = {"width": 8, "scales": (1, 2), "pool_size": 4}
    example_specs = {"embed": (6, 8, 8)}

    def __init__(self, config: SFEMConfig) -> None:
        super().__init__()
        self.config = config
        self.sfem = SFEM(config)
        self.mapping = _Mapping(config)
        self.frrb = RegressionBlock(len(config.branches) * config.width, config.width)
        init_weights(self)

    def forward(
        self,
        features: dict[str, Tensor],
        valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Predicted quality (B,) of distorted maps given their reference maps."""
        if ref is None:
            raise HeadConfigError("sfem_fr needs reference features (ref=...); got none")
        key = self.config.feature
        both = torch.cat([features[key], ref[key]], dim=0)  # (2B, C, H, W): one Siamese pass
        both_valid = None if valid is None else torch.cat([valid, valid], dim=0)
        feats, weight = self.sfem(both, both_valid)
        b = features[key].shape[0]
        dist = {k: (v[:b] - v[b:]).abs() for k, v in feats.items()}  # eq. 3, (B, w, P, P)
        return self.frrb(self.mapping(dist), weight[:b])
