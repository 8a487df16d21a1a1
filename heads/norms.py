"""Batch normalisation for heads that run one set of weights on several scales of padded maps.

``ScaleBatchNorm`` keeps one ``nn.BatchNorm2d`` per scale (its own affine parameters and
running statistics), so the pooled copies of a map that SFEM feeds through the same
convolution are each normalised with the statistics of their own distribution: with one
shared BatchNorm the batch statistics of a training step mix the scales, the running
average converges to that mixture, and evaluation normalises every scale with it, so the
predictions of a trained head differ between train and eval mode. This is the
"switchable batch normalisation" of slimmable networks (Yu et al., ICLR 2019), there per
width, here per scale.

Batch statistics are taken over *valid* cells only. Maps are padded bottom-right, so each
row's valid region is its top-left (h, w) block: the rows of one valid size are cropped
together (a view when the whole batch shares one size, as in TID2013 and KADID-10k), the
mean and variance of every crop are taken with ``torch.var_mean`` and pooled by their cell
counts. A batch may also be given as several tensors of different sizes (the spectra of
maps cropped to their valid regions), normalised with their pooled statistics. With one
unpadded tensor the result is ``nn.BatchNorm2d``'s in training mode (the same fused call);
in eval mode it *is* ``nn.BatchNorm2d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

Group = tuple[Tensor | None, int, int]


def size_groups(valid: Tensor | None, batch: int, height: int, width: int) -> list[Group]:
    """The rows of each distinct valid size: ``[(row indices, h, w), ...]``.

    Row indices are None when every row has that size (one group: crop by slicing, no
    copy). Sizes are clamped to ``[1, height] x [1, width]``; no ``valid`` means the whole map.
    """
    if valid is None or batch == 0:
        return [(None, height, width)]
    limit = torch.tensor([height, width], device=valid.device)
    sizes = valid.long().clamp(min=torch.ones_like(limit), max=limit)  # (B, 2)
    distinct, inverse = torch.unique(sizes, dim=0, return_inverse=True)
    if len(distinct) == 1:
        return [(None, int(distinct[0, 0]), int(distinct[0, 1]))]
    rows = [torch.nonzero(inverse == k).squeeze(1) for k in range(len(distinct))]
    return [(r, int(h), int(w)) for r, (h, w) in zip(rows, distinct.tolist(), strict=True)]


def crops(x: Tensor, groups: Sequence[Group]) -> list[Tensor]:
    """The valid block of each group's rows: (B_i, C, h_i, w_i) each."""
    return [x[..., :h, :w] if idx is None else x[idx, :, :h, :w] for idx, h, w in groups]


def _moments(parts: Sequence[Tensor]) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over all cells of all parts, and their count."""
    counts = [p.numel() // p.shape[1] for p in parts]
    stats = [torch.var_mean(p, dim=(0, 2, 3), unbiased=False) for p in parts]  # (C,) pairs
    variances = torch.stack([v for v, _ in stats])  # (K, C)
    means = torch.stack([m for _, m in stats])  # (K, C)
    total = sum(counts)
    weights = torch.tensor(counts, dtype=means.dtype, device=means.device).view(-1, 1) / total
    mean = (weights * means).sum(dim=0)  # (C,)
    var = (weights * (variances + (means - mean) ** 2)).sum(dim=0)  # within + between parts
    return mean, var, total


def pooled_batch_norm(
    bn: nn.BatchNorm2d, stats_from: Sequence[Tensor], apply_to: Sequence[Tensor]
) -> list[Tensor]:
    """Batch-normalise ``apply_to`` with the statistics of ``stats_from`` (pooled).

    Args:
        bn: holds the affine parameters, running statistics, momentum and eps.
        stats_from: tensors (B_i, C, h_i, w_i) whose cells give the batch statistics.
        apply_to: tensors (any batch and size, C channels) to normalise.

    Returns:
        The normalised ``apply_to``. In eval mode (or with fewer than 2 cells, where a
        variance does not exist) the running statistics are used and left unchanged.
    """
    if not bn.training:
        return [bn(p) for p in apply_to]
    mean, var, count = _moments(stats_from)
    if count < 2:
        return [_affine(bn, p, bn.running_mean, bn.running_var) for p in apply_to]
    _update_running(bn, mean, var, count)
    return [_affine(bn, p, mean, var) for p in apply_to]


def _affine(bn: nn.BatchNorm2d, x: Tensor, mean: Tensor | None, var: Tensor | None) -> Tensor:
    assert mean is not None and var is not None and bn.weight is not None
    scale = bn.weight * torch.rsqrt(var + bn.eps)  # (C,)
    shift = bn.bias - mean * scale  # (C,)
    return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)  # (B, C, H, W)


@torch.no_grad()
def _update_running(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: int) -> None:
    """``nn.BatchNorm2d``'s update: exponential average, unbiased variance."""
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None and bn.momentum is not None
    bn.running_mean.lerp_(mean, bn.momentum)
    bn.running_var.lerp_(var * (count / (count - 1)), bn.momentum)
    bn.num_batches_tracked += 1


class ScaleBatchNorm(nn.ModuleList):
    """One ``BatchNorm2d`` per scale, with statistics over valid cells only.

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

    def forward(self, x: Tensor, scale: int, valid: Tensor | None = None) -> Tensor:
        """Normalise maps ``x`` (B, C, H, W) of scale index ``scale``.

        Args:
            x: the maps; padded cells are normalised too but count in no statistic.
            scale: selects the BatchNorm.
            valid: (B, 2) valid (h, w) per row in cells of ``x``; None: all valid.
        """
        bn = self[scale]
        if valid is None or not bn.training:
            return bn(x)
        b, _, h, w = x.shape
        groups = size_groups(valid, b, h, w)
        if groups == [(None, h, w)]:
            return bn(x)
        return pooled_batch_norm(bn, crops(x, groups), [x])[0]

    def parts(self, parts: Sequence[Tensor], scale: int) -> list[Tensor]:
        """Normalise tensors of one scale (any sizes) with their pooled statistics."""
        if len(parts) == 1:
            return [self[scale](parts[0])]
        return pooled_batch_norm(self[scale], parts, parts)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        if f"{prefix}weight" in state_dict and f"{prefix}0.weight" not in state_dict:
            shared = {
                k: state_dict.pop(f"{prefix}{k}") for k in BN_PARAMS if prefix + k in state_dict
            }
            for i in range(len(self)):
                state_dict.update({f"{prefix}{i}.{k}": v.clone() for k, v in shared.items()})
        super()._load_from_state_dict(state_dict, prefix, *args)
