"""Batch normalisation for heads that run one set of weights on several scales of padded maps.

``ScaleBatchNorm`` keeps one ``nn.BatchNorm2d`` per scale (its own affine parameters and
running statistics), so the three pooled copies of a map that SFEM feeds through the same
convolution are each normalised with the statistics of their own distribution: with one
shared BatchNorm the batch statistics of a training step mix the scales, the running
average converges to that mixture, and evaluation normalises every scale with it, so the
predictions of a trained head differ between train and eval mode. This is the
"switchable batch normalisation" of slimmable networks (Yu et al., ICLR 2019), there per
width, here per scale.

Batch statistics are taken over *valid* positions only: every part of the batch may carry
a 0/1 mask (B, 1, H, W) and padded cells count neither in the mean nor in the variance, and
a batch may be given as several parts of different spatial sizes (the spectra of maps
cropped to their valid region) whose statistics are pooled. With full masks and one part
the result equals ``nn.BatchNorm2d`` in training mode (same running-statistics update:
momentum, unbiased variance); in eval mode it *is* ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _moments(
    parts: Sequence[Tensor], masks: Sequence[Tensor | None]
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean and biased variance over the valid positions of all parts, and the count."""
    counts = [p[:, :1].numel() if m is None else m.sum() for p, m in zip(parts, masks, strict=True)]
    count = torch.as_tensor(sum(counts), dtype=parts[0].dtype, device=parts[0].device)
    total = sum(
        (p if m is None else p * m).sum(dim=(0, 2, 3)) for p, m in zip(parts, masks, strict=True)
    )
    mean = total / count  # (C,)
    centred = [(p - mean.view(1, -1, 1, 1)) ** 2 for p in parts]  # (B, C, H, W) each
    sq = sum(
        (c if m is None else c * m).sum(dim=(0, 2, 3)) for c, m in zip(centred, masks, strict=True)
    )
    return mean, sq / count, count


def masked_batch_norm(
    bn: nn.BatchNorm2d, parts: Sequence[Tensor], masks: Sequence[Tensor | None]
) -> list[Tensor]:
    """Batch-normalise ``parts`` with statistics over their valid positions.

    Args:
        bn: holds the affine parameters, running statistics, momentum and eps.
        parts: tensors (B_i, C, H_i, W_i) normalised together (sizes may differ).
        masks: per part a (B_i, 1, H_i, W_i) 0/1 mask, or None when every position counts.

    Returns:
        The normalised parts. In eval mode (or with fewer than 2 valid positions, where a
        variance does not exist) the running statistics are used and left unchanged.
    """
    if not bn.training or not parts:
        return [bn(p) for p in parts]
    if len(parts) == 1 and masks[0] is None:
        return [bn(parts[0])]  # the fused kernel; identical statistics
    mean, var, count = _moments(parts, masks)
    if count < 2:
        return [_affine(bn, p, bn.running_mean, bn.running_var) for p in parts]
    _update_running(bn, mean, var, count)
    return [_affine(bn, p, mean, var) for p in parts]


def _affine(bn: nn.BatchNorm2d, x: Tensor, mean: Tensor | None, var: Tensor | None) -> Tensor:
    assert mean is not None and var is not None and bn.weight is not None
    scale = bn.weight * torch.rsqrt(var + bn.eps)  # (C,)
    shift = bn.bias - mean * scale  # (C,)
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)  # (B, C, H, W)


@torch.no_grad()
def _update_running(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: Tensor) -> None:
    """``nn.BatchNorm2d``'s update: exponential average, unbiased variance."""
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None and bn.momentum is not None
    bn.running_mean.lerp_(mean, bn.momentum)
    bn.running_var.lerp_(var * count / (count - 1), bn.momentum)
    bn.num_batches_tracked += 1


class ScaleBatchNorm(nn.ModuleList):
    """One ``BatchNorm2d`` per scale, with statistics over valid positions only.

    Args:
        channels: channels normalised.
        n_scales: number of scales (one BatchNorm each).

    State-dict keys are ``{i}.weight``, ``{i}.running_mean``, ... per scale ``i``. A state
    dict written by a single shared BatchNorm (keys ``weight``, ``running_mean``, ...)
    loads too: its parameters and running statistics are copied to every scale, which
    reproduces that BatchNorm's eval-mode output exactly.
    """

    def __init__(self, channels: int, n_scales: int) -> None:
        super().__init__(nn.BatchNorm2d(channels) for _ in range(n_scales))

    def __getitem__(self, scale: int) -> nn.BatchNorm2d:  # type: ignore[override]
        """The BatchNorm of scale index ``scale`` (no slicing)."""
        if not isinstance(scale, int):
            raise TypeError(f"ScaleBatchNorm is indexed by scale (int), got {scale!r}")
        bn = super().__getitem__(scale)
        assert isinstance(bn, nn.BatchNorm2d)
        return bn

    def forward(self, x: Tensor, scale: int, mask: Tensor | None = None) -> Tensor:
        """Normalise ``x`` (B, C, H, W) of scale index ``scale``; ``mask`` (B, 1, H, W)."""
        return masked_batch_norm(self[scale], [x], [mask])[0]

    def parts(self, parts: Sequence[Tensor], scale: int) -> list[Tensor]:
        """Normalise several unmasked tensors of one scale with their pooled statistics."""
        return masked_batch_norm(self[scale], parts, [None] * len(parts))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        if f"{prefix}weight" in state_dict and f"{prefix}0.weight" not in state_dict:
            shared = {
                k: state_dict.pop(f"{prefix}{k}") for k in BN_PARAMS if prefix + k in state_dict
            }
            for i in range(len(self)):
                state_dict.update({f"{prefix}{i}.{k}": v.clone() for k, v in shared.items()})
        super()._load_from_state_dict(state_dict, prefix, *args)
