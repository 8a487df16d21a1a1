"""Shared helpers for building heads from a store's per-row array shapes.

``feature_specs`` is ``dict[str, tuple[int, ...]]``: the per-row shape of every feature array
a store holds (``{"embed": (256, 64, 64)}``, ``{"feature": (128,)}``, ``{"up0": ...}``).
A head reads its input sizes from here and never retypes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

FeatureSpecs = Mapping[str, tuple[int, ...]]


class HeadConfigError(ValueError):
    """A head cannot be built for the given features or options."""


def map_names(specs: FeatureSpecs) -> list[str]:
    """Names of the features that are (C, H, W) maps, sorted."""
    return sorted(name for name, shape in specs.items() if len(shape) == 3)


def pick_feature(specs: FeatureSpecs, name: str, head: str, *, map_only: bool) -> str:
    """Choose the single feature a one-input head reads.

    Args:
        specs: per-row shapes from the store.
        name: the requested feature name, or "" to take the only suitable one.
        head: head name, for messages.
        map_only: accept only (C, H, W) maps.

    Raises:
        HeadConfigError: the name is unknown, the feature has the wrong rank, or the choice
            is ambiguous.
    """
    if not specs:
        raise HeadConfigError(f"{head}: the store has no feature arrays")
    ok = map_names(specs) if map_only else sorted(specs)
    if name:
        if name not in specs:
            raise HeadConfigError(f"{head}: feature {name!r} not in the store {sorted(specs)}")
        if name not in ok:
            raise HeadConfigError(
                f"{head} needs a (C, H, W) feature map; {name!r} has shape {specs[name]}"
            )
        return name
    what = "(C, H, W) feature map" if map_only else "feature"
    if not ok:
        raise HeadConfigError(f"{head} needs a {what}; the store has only {dict(specs)}")
    if len(ok) > 1:
        raise HeadConfigError(
            f"{head} reads one {what}; the store has {ok}: pass feature=NAME to choose"
        )
    return ok[0]


def valid_mask(
    valid: Tensor | None, batch: int, height: int, width: int, device: torch.device
) -> Tensor:
    """A (B, 1, H, W) float mask that is 1 inside each row's valid (h, w) extent.

    Args:
        valid: (B, 2) valid sizes in map cells, or None for fully valid maps.
        batch: batch size B.
        height: map height H.
        width: map width W.
        device: device of the mask.
    """
    if valid is None:
        return torch.ones(batch, 1, height, width, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)  # (1, H, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)  # (1, 1, W)
    v = valid.to(device).long()
    inside = (rows < v[:, 0].view(-1, 1, 1)) & (cols < v[:, 1].view(-1, 1, 1))  # (B, H, W)
    return inside.unsqueeze(1).float()  # (B, 1, H, W)
