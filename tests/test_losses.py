"""Losses: hand-computed values of L1, MSE and the DP-IQA margin ranking loss."""

from __future__ import annotations

import pytest
import torch

from heads.losses import L1, MSE_RANK, LossConfig, head_loss, margin_ranking_loss


def _loop_rank(pred: torch.Tensor, target: torch.Tensor, coef: float) -> float:
    margin = coef * target.std().item()
    terms = []
    for i in range(len(target)):
        for j in range(i + 1, len(target)):
            sign = float(torch.sign(target[i] - target[j]))
            terms.append(max(0.0, -sign * float(pred[i] - pred[j]) + margin))
    return sum(terms) / len(terms)


def test_margin_ranking_by_hand() -> None:
    pred = torch.tensor([0.2, 0.8])
    target = torch.tensor([1.0, 0.0])
    margin = 0.25 * target.std().item()  # 0.25 * sqrt(0.5)
    assert margin_ranking_loss(pred, target).item() == pytest.approx(0.6 + margin)
    assert margin_ranking_loss(target, target).item() == pytest.approx(max(0.0, margin - 1.0))


def test_margin_ranking_matches_the_pairwise_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(9, generator=gen), torch.rand(9, generator=gen)
    target[3] = target[5]  # a tie: contributes the bare margin
    assert margin_ranking_loss(pred, target, 0.3).item() == pytest.approx(
        _loop_rank(pred, target, 0.3), rel=1e-6
    )
    assert margin_ranking_loss(pred[:1], target[:1]).item() == 0.0


def test_weighted_terms() -> None:
    pred = torch.tensor([0.0, 1.0, 2.0])
    target = torch.tensor([1.0, 1.0, 1.0])
    assert head_loss(pred, target, L1).item() == pytest.approx(2 / 3)
    assert head_loss(pred, target, LossConfig(mse=2.0)).item() == pytest.approx(4 / 3)
    rank = margin_ranking_loss(pred, target).item()
    assert head_loss(pred, target, MSE_RANK).item() == pytest.approx(2 / 3 + rank)
    with pytest.raises(ValueError, match="at least one"):
        LossConfig()


def test_rank_loss_gradient_orders_predictions() -> None:
    pred = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    margin_ranking_loss(pred, torch.tensor([0.0, 0.5, 1.0])).backward()
    assert pred.grad[0] > 0 > pred.grad[2]
