"""A linear probe: the frozen features' global averages and one linear layer.

Follows DP-IQA (arXiv 2405.19996) Table VI, where a frozen backbone with "only a linear
regressor" trained is compared across backbones (Stable Diffusion, CLIP, ResNet-50). The
paper does not say how the maps are reduced; here each (C, H, W) map is averaged over its
valid region (vectors are used as they are), the results are concatenated in name order
and one ``Linear(sum C, 1)`` predicts the quality. Loss: MSE (the paper names none for
this probe; DP-IQA's own code trains with MSE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from heads.losses import MSE
from heads.protocols import PLAIN
from heads.qfd import DP_IQA_TRAINING
from heads.specs import FeatureSpecs, HeadConfigError, valid_mask


@dataclass(frozen=True)
class LinearConfig:
    """Sizes of the linear probe.

    Attributes:
        names: cached features read, in concatenation order; from the store.
        in_dims: channels (maps) or widths (vectors) of each, aligned with ``names``.
    """

    names: tuple[str, ...] = ("feature",)
    in_dims: tuple[int, ...] = (128,)

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.in_dims):
            raise HeadConfigError(f"linear: one width per feature: {self.names} {self.in_dims}")


def linear_input_fields(specs: FeatureSpecs, overrides: Any) -> dict[str, Any]:
    """Every feature of the store (or those named), with its channel count."""
    names = tuple(overrides.get("names") or sorted(specs))
    bad = [n for n in names if n not in specs or len(specs[n]) not in (1, 3)]
    if bad:
        raise HeadConfigError(f"linear reads vectors (D,) or maps (C, H, W); not {bad}")
    return {"names": names, "in_dims": tuple(specs[n][0] for n in names)}


class LinearProbe(nn.Module):
    """Global average of each feature (valid region), concatenated, one linear layer."""

    kind = PLAIN
    config_cls = LinearConfig
    input_fields = staticmethod(linear_input_fields)
    default_loss = MSE
    # The paper gives no settings for its linear probe: the QFD's (DP-IQA §IV-B, build.py).
    train_defaults = DP_IQA_TRAINING.replace(loss="mse")
    tiny_config: dict[str, Any] = {}
    example_specs = {"feature": (6,), "map": (3, 4, 4)}

    def __init__(self, config: LinearConfig) -> None:
        super().__init__()
        self.config = config
        self.fc = nn.Linear(sum(config.in_dims), 1)

    def forward(
        self, features: dict[str, Tensor], valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Quality (B,) from the named features (B, D) or (B, C, H, W)."""
        parts = []
        for name in self.config.names:
            x = features[name]
            if x.dim() == 4:
                mask = valid_mask(valid, x.shape[0], x.shape[2], x.shape[3], x.device)
                x = (x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1.0)  # (B, C)
            parts.append(x)
        return self.fc(torch.cat(parts, dim=1)).squeeze(-1)
