"""SAM-IQA heads: the spatial-frequency feature extraction module (SFEM), FR and NR.

Follows SAM-IQA (Li et al., arXiv 2307.04455): a Siamese SFEM with a spatial branch of
ordinary convolutions and a frequency branch of Fourier convolutions (eq. 2, Fig. 2) at
several scales, each pooled to one common size with adaptive average pooling. FR: a
distance per branch, by default the element-wise L1 distance ``|F_L - F_H|`` (eq. 3),
mappings ``f`` and ``g``, concatenation, FRRB (eq. 4). NR: mappings ``eta_s`` and
``eta_f``, concatenation, NRRB (eq. 5). The paper gives no layer list; every open size is
a field of ``SFEMConfig``.

Choices where the paper is silent (sizes start from the team's reference-note proposals):

* A shared stem Conv1x1 (C -> width) + BN + ReLU reduces the 256 SAM channels once.
  Spatial branch: Conv3x3 (width -> width) + BN + ReLU. Frequency branch: ``x +
  FourierUnit(x)``, then Conv1x1 (width -> width) (FFC's spectral transform, no local
  Fourier unit). The proposal's per-branch Conv3x3 on 256 channels is replaced by the
  shared 1x1 stem to keep CPU epochs short (measured below).
* Scales: the map and average-pooled copies (factors ``scales``); the same branch weights
  run on every scale; each result is pooled to ``pool_size`` and the scales are fused per
  branch by a Conv1x1 over their concatenation.
* Normalisation: one BatchNorm *per scale* in the spatial branch and in the Fourier unit
  (``heads.norms.ScaleBatchNorm``; the convolutions stay shared). One BatchNorm shared by
  the scales (the first release) saw three distributions per step and kept one running
  average of their mixture: once it had converged on a fixed batch, eval-mode
  predictions differed from train-mode ones by 0.15-0.20 on [0, 1] targets at the
  default size (16 rows of 256x64x64, a 4:3 valid region) and 0.27-0.29 in
  ``tests/test_sfem_norm.py``; per scale they agree to 1.3e-3-1.5e-3 (what is left is
  BatchNorm's unbiased running variance against the biased batch variance). A norm
  without batch statistics (GroupNorm, LayerNorm, InstanceNorm) would avoid running
  averages altogether, but it normalises each image by its own statistics and so divides
  out the image's feature energy, and with it the contrast and noise-energy differences
  (in the frequency branch: the spectral energy that noise and blur change) that a
  quality score depends on; BatchNorm normalises with dataset statistics and keeps them,
  as FFC's Fourier unit does. Cost: 384 parameters at the default size, no extra time.
* Padding: each row carries its valid size (h, w) in map cells. BatchNorm statistics are
  taken over valid cells only (from crops of each valid size); the Fourier unit
  transforms each row's valid region alone (rows of one size together), so its spectrum
  and its BatchNorm statistics hold no padding either. At every scale the branch output
  is zeroed outside the (pooled) valid region, adaptive pooling is a masked mean, the FR
  distance is zeroed on fully padded cells, and the regression block ends with a global
  average weighted by the valid fraction of each pooled cell: padded cells reach neither
  the output nor the statistics. Checkpoints of the first release load (the shared
  BatchNorm is copied to every scale) and predict as before on unpadded maps; on padded
  maps the frequency branch now sees the valid region only.
* Mappings ``f, g, eta_s, eta_f``: Conv3x3 + ReLU. FRRB/NRRB: Conv3x3 (2 width -> width) +
  ReLU, Conv3x3 (width -> width/2) + ReLU, masked global average pooling, MLP
  width/2 -> width/4 -> 1, no output activation.
* The FR reference map uses the distorted image's valid size (pairs share a size).

FR distances (``distance``, the paper's Table 5): ``heads.distances``.

Default size (256-channel input, width 32, scales 1/2/4, pooled to 16x16): 71,041
parameters for ``sfem_nr`` and ``sfem_fr`` alike (the Siamese SFEM is shared); width 64
has 266,241. A training step over 16 rows of 256x64x64 costs about 0.6 s of CPU time
(``sfem_fr``; 0.3 s ``sfem_nr``) on one thread of this project's machine, and
``bench/bench_heads.py`` measured 100-210 s per ``sfem_fr`` epoch over a LIVE-sized store
(779 rows) on its 2 shared cores, depending on their load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.distances import DISTANCES, PER_POSITION
from heads.fourier import FourierUnit
from heads.losses import L1
from heads.norms import ScaleBatchNorm
from heads.optim import TrainConfig
from heads.protocols import FULL_REFERENCE, PLAIN
from heads.specs import FeatureSpecs, HeadConfigError, pick_feature, valid_mask

BRANCHES = ("spatial", "frequency")


@dataclass(frozen=True)
class SFEMConfig:
    """Sizes and ablation switches of the SAM-IQA heads (every field JSON-able).

    Attributes:
        in_channels: channels of the cached map (256 for SAM); taken from the store.
        feature: name of the cached map the head reads.
        width: channels of each branch and of the mappings.
        scales: average-pooling factors of the multi-scale copies (1 = the map itself).
        pool_size: common side every scale is pooled to.
        branches: Table 4 switch: ("spatial", "frequency"), ("spatial",) or ("frequency",).
        distance: Table 5 switch (``sfem_fr`` only): "l1" (the paper's), "l2", "cos",
            "kl" or "sub"; each is defined in ``heads.distances``.
    """

    in_channels: int = 256
    feature: str = "embed"
    width: int = 32
    scales: tuple[int, ...] = (1, 2, 4)
    pool_size: int = 16
    branches: tuple[str, ...] = BRANCHES
    distance: str = "l1"

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
        if self.distance not in DISTANCES:
            raise HeadConfigError(
                f"SFEM distance must be one of {sorted(DISTANCES)}, got {self.distance!r}"
            )


class _Level(NamedTuple):
    """One scale of the map: values, 0/1 valid mask and valid (h, w) (None: all valid)."""

    x: Tensor
    mask: Tensor | None
    valid: Tensor | None


class _ConvNorm(nn.Sequential):
    """Conv (no bias), per-scale masked BatchNorm, ReLU (state-dict keys ``0.*``, ``1.*``)."""

    def __init__(self, cin: int, cout: int, k: int, n_scales: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            ScaleBatchNorm(cout, n_scales),
            nn.ReLU(),
        )

    def forward(self, level: _Level, scale: int = 0) -> Tensor:
        conv, norm, act = self
        return act(norm(conv(level.x), scale, level.valid))


class _FrequencyBranch(nn.Module):
    """A residual Fourier unit and a Conv1x1 projection (FFC's spectral transform)."""

    def __init__(self, width: int, n_scales: int) -> None:
        super().__init__()
        self.fourier = FourierUnit(width, width, n_scales=n_scales)
        self.project = nn.Conv2d(width, width, 1, bias=False)

    def forward(self, level: _Level, scale: int = 0) -> Tensor:
        return self.project(level.x + self.fourier(level.x, level.valid, scale))


def _make_branch(kind: str, width: int, n_scales: int) -> nn.Module:
    if kind == "spatial":
        return _ConvNorm(width, width, 3, n_scales)
    return _FrequencyBranch(width, n_scales)


def _masked(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


def _masked_pool(x: Tensor, mask: Tensor | None, size: int) -> Tensor:
    """Mean over the valid cells of ``x`` (B, C, H, W), zero where padded, per cell of a
    ``size`` x ``size`` grid; grid cells without valid input are 0."""
    if mask is None:
        return F.adaptive_avg_pool2d(x, size)
    frac = F.adaptive_avg_pool2d(mask, size)  # (B, 1, P, P)
    return F.adaptive_avg_pool2d(x, size) / frac.clamp_min(1e-6)  # (B, C, P, P)


def _extent(mask: Tensor) -> Tensor:
    """Valid (h, w) (B, 2) of top-left-aligned 0/1 masks (B, 1, H, W), each >= 1 cell."""
    rows, cols = mask[:, 0, :, 0].sum(dim=1), mask[:, 0, 0, :].sum(dim=1)  # (B,) each
    return torch.stack([rows, cols], dim=1).long()  # (B, 2)


def _pooled_level(level: _Level, s: int) -> _Level:
    """The map average-pooled by ``s`` (masked mean per cell), its mask and valid size."""
    x, mask = level.x, level.mask
    if s == 1:
        return level
    size = (-(-x.shape[-2] // s), -(-x.shape[-1] // s))
    if mask is None:
        return _Level(F.adaptive_avg_pool2d(x, size), None, None)  # (B, C, H/s, W/s)
    frac = F.adaptive_avg_pool2d(mask, size)  # (B, 1, H/s, W/s)
    xs = F.adaptive_avg_pool2d(x, size) / frac.clamp_min(1e-6)  # (B, C, H/s, W/s)
    ms = (frac > 0).float()
    return _Level(xs, ms, _extent(ms))


def _all_valid(valid: Tensor | None, h: int, w: int) -> bool:
    return valid is None or bool((valid[:, 0] >= h).all() and (valid[:, 1] >= w).all())


class SFEM(nn.Module):
    """Spatial-frequency feature extraction over several scales (one shared instance)."""

    def __init__(self, config: SFEMConfig) -> None:
        super().__init__()
        self.config = config
        c, w, n = config.in_channels, config.width, len(config.scales)
        self.stem = _ConvNorm(c, w, 1, 1)
        self.branches = nn.ModuleDict({b: _make_branch(b, w, n) for b in config.branches})
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
        p = self.config.pool_size
        if _all_valid(valid, h, w):
            base = _Level(x, None, None)
            weight = x.new_ones(b, 1, p, p)
        else:
            mask = valid_mask(valid, b, h, w, x.device)  # (B, 1, H, W)
            base = _Level(x, mask, _extent(mask))  # the 1x1 stem keeps padding local
            weight = F.adaptive_avg_pool2d(mask, p)  # (B, 1, P, P)
        base = base._replace(x=_masked(self.stem(base), base.mask))  # (B, width, H, W)
        levels = [_pooled_level(base, s) for s in self.config.scales]
        out = {}
        for name, branch in self.branches.items():
            pooled = [
                _masked_pool(_masked(branch(lv, i), lv.mask), lv.mask, p)
                for i, lv in enumerate(levels)
            ]
            out[name] = self.fuse[name](torch.cat(pooled, dim=1))  # (B, width, P, P)
        return out, weight


class _Mapping(nn.Module):
    """Conv3x3 + ReLU per branch (f, g for FR; eta_s, eta_f for NR)."""

    def __init__(self, config: SFEMConfig, cin: int) -> None:
        super().__init__()
        w = config.width
        self.maps = nn.ModuleDict(
            {b: nn.Sequential(nn.Conv2d(cin, w, 3, padding=1), nn.ReLU()) for b in config.branches}
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


class _SFEMHead(nn.Module):
    """SFEM, a mapping per branch, concatenation, a regression block.

    Subclasses name the mapping and the regression block (``PARTS``: their state-dict
    prefixes, kept from the first release so existing checkpoints load) and say what the
    mappings read (``_inputs``).
    """

    config_cls = SFEMConfig
    input_fields = staticmethod(sfem_input_fields)
    default_loss = L1
    train_defaults = SAM_IQA_TRAINING
    # The smallest sensible instance (contract tests, examples) and store specs it reads.
    tiny_config: ClassVar[dict[str, Any]] = {"width": 8, "scales": (1, 2), "pool_size": 4}
    example_specs: ClassVar[dict[str, tuple[int, ...]]] = {"embed": (6, 8, 8)}

    PARTS: ClassVar[tuple[str, str]]

    def __init__(self, config: SFEMConfig, map_channels: int) -> None:
        super().__init__()
        self.config = config
        self.sfem = SFEM(config)
        mapping, block = self.PARTS
        self.add_module(mapping, _Mapping(config, map_channels))
        self.add_module(block, RegressionBlock(len(config.branches) * config.width, config.width))
        init_weights(self)

    def forward(
        self,
        features: dict[str, Tensor],
        valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Predicted quality (B,) of maps ``features[config.feature]`` (B, C, H, W)."""
        inputs, weight = self._inputs(features, valid, ref)
        mapping, block = (self.get_submodule(name) for name in self.PARTS)
        return block(mapping(inputs), weight)

    def _inputs(
        self, features: dict[str, Tensor], valid: Tensor | None, ref: dict[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], Tensor]:
        raise NotImplementedError


class SFEMNR(_SFEMHead):
    """No-reference SAM-IQA head: SFEM, eta_s / eta_f, concatenation, NRRB (eq. 5)."""

    kind = PLAIN
    PARTS = ("eta", "nrrb")

    def __init__(self, config: SFEMConfig) -> None:
        if config.distance != "l1":
            raise HeadConfigError(
                f"sfem_nr compares no pair: distance={config.distance!r} applies to sfem_fr only"
            )
        super().__init__(config, config.width)

    def _inputs(
        self, features: dict[str, Tensor], valid: Tensor | None, ref: dict[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], Tensor]:
        return self.sfem(features[self.config.feature], valid)


class SFEMFR(_SFEMHead):
    """Full-reference SAM-IQA head: Siamese SFEM, a distance per branch, f / g, FRRB."""

    kind = FULL_REFERENCE
    PARTS = ("mapping", "frrb")

    def __init__(self, config: SFEMConfig) -> None:
        per_position = config.distance in PER_POSITION
        super().__init__(config, 1 if per_position else config.width)

    def _inputs(
        self, features: dict[str, Tensor], valid: Tensor | None, ref: dict[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], Tensor]:
        if ref is None:
            raise HeadConfigError("sfem_fr needs reference features (ref=...); got none")
        key = self.config.feature
        both = torch.cat([features[key], ref[key]], dim=0)  # (2B, C, H, W): one Siamese pass
        both_valid = None if valid is None else torch.cat([valid, valid], dim=0)
        feats, weight = self.sfem(both, both_valid)
        b = features[key].shape[0]
        inside = (weight[:b] > 0).to(weight.dtype)  # (B, 1, P, P): 0 on fully padded cells
        distance = DISTANCES[self.config.distance]
        return {k: distance(v[:b], v[b:]) * inside for k, v in feats.items()}, weight[:b]
