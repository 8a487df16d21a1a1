"""Training losses of the three heads.

* L1 (SAM-IQA eq. 6; PromptIQA "We take L1 loss").
* MSE + margin ranking (DP-IQA §III-C, eq. 9-11; ``DynamicMarginRankingLoss`` of
  ``RomGai/DP-IQA``): over all pairs i < j of a batch,
  ``max(0, -sign(y_i - y_j) * (p_i - p_j) + m)`` averaged, with the margin
  ``m = 0.25 * std(y)`` (unbiased std of the batch targets). Vectorised over the pair
  matrix instead of the reference's Python double loop. The paper adds both terms
  (eq. 11); the reference code trains with MSE only (``train_dpiqa.py``:
  ``loss = loss_qu#+loss_rk``). Both are named losses (``LOSSES``: ``mse_rank``, ``mse``),
  chosen with the training option ``loss`` and recorded in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (0 switches a term off).

    Attributes:
        l1: weight of the mean absolute error.
        mse: weight of the mean squared error.
        rank: weight of the margin ranking loss.
        margin_coef: margin as a multiple of the batch targets' standard deviation.
    """

    l1: float = 0.0
    mse: float = 0.0
    rank: float = 0.0
    margin_coef: float = 0.25

    def __post_init__(self) -> None:
        if min(self.l1, self.mse, self.rank) < 0 or self.l1 + self.mse + self.rank == 0:
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {self}")


L1 = LossConfig(l1=1.0)
MSE = LossConfig(mse=1.0)
MSE_RANK = LossConfig(mse=1.0, rank=1.0)
# the losses a run can name (training option ``loss``; "" keeps the head's default_loss)
LOSSES: dict[str, LossConfig] = {"l1": L1, "mse": MSE, "mse_rank": MSE_RANK}


def loss_name(config: LossConfig) -> str:
    """The name of a loss in ``LOSSES``, or ``custom`` for other term weights."""
    return next((name for name, cfg in LOSSES.items() if cfg == config), "custom")


def margin_ranking_loss(pred: Tensor, target: Tensor, margin_coef: float = 0.25) -> Tensor:
    """Mean hinge loss over all pairs i < j with a margin of ``margin_coef * std(target)``.

    Args:
        pred: predictions (B,).
        target: targets (B,).
        margin_coef: the margin coefficient (0.25 in DP-IQA).

    Returns:
        A scalar; 0 for a batch of fewer than two items.
    """
    n = target.shape[0]
    if n < 2:
        return pred.sum() * 0.0
    margin = margin_coef * target.std()
    i, j = torch.triu_indices(n, n, offset=1, device=pred.device)  # pairs i < j
    sign = torch.sign(target[i] - target[j])
    return torch.clamp(-sign * (pred[i] - pred[j]) + margin, min=0).mean()


def head_loss(pred: Tensor, target: Tensor, config: LossConfig) -> Tensor:
    """Weighted sum of the switched-on terms for predictions (B,) and targets (B,)."""
    target = target.to(pred.dtype)
    total = pred.new_zeros(())
    if config.l1:
        total = total + config.l1 * F.l1_loss(pred, target)
    if config.mse:
        total = total + config.mse * F.mse_loss(pred, target)
    if config.rank:
        total = total + config.rank * margin_ranking_loss(pred, target, config.margin_coef)
    return total
