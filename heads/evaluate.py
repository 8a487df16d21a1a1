"""Prediction and metrics of a head on one split part (always the identity view, 0).

The prompt head predicts under a prompt of ``n`` train images chosen by interval
selection over the train labels (PromptIQA's default test-time prompt, n = 10).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from heads.augment import interval_select
from heads.metrics import compute_metrics
from heads.prompt import PromptHead
from heads.traindata import TrainData


def make_prompt(
    model: nn.Module, train: TrainData, n: int = 10, device: str | torch.device = "cpu"
) -> tuple[Tensor, list[str]]:
    """A cached prompt (1, n, dim) from ``n`` interval-selected train rows, and their ids."""
    rows = interval_select(train.targets, n)
    feats, valid, _ = train.batch(rows, device=device)
    with torch.no_grad():
        prompt = cast(PromptHead, model).forward_prompt(
            feats, train.targets[rows].to(device), valid
        )
    return prompt, [train.ids[int(i)] for i in rows]


def predict(
    model: nn.Module,
    data: TrainData,
    *,
    prompt: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Predictions (N,) of ``model`` in eval mode over ``data``."""
    model.eval()
    out = []
    with torch.no_grad():
        for rows in torch.arange(len(data)).split(batch_size):
            feats, valid, ref = data.batch(rows, device=device)
            if prompt is not None:
                out.append(cast(PromptHead, model).predict(feats, prompt, valid))
            else:
                out.append(model(feats, valid, ref))
    return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)


def evaluate(
    model: nn.Module,
    data: TrainData,
    *,
    prompt: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Predictions and metrics of ``model`` on ``data``.

    Returns:
        ``{"ids", "pred", "target", "metrics"}``; ``metrics`` (srcc, plcc, krcc, rmse from
        ``heads.metrics.compute_metrics``) is empty when ``data`` has fewer than 2 rows.
    """
    if getattr(model, "grouped", False) and prompt is None:
        raise ValueError("the prompt head needs prompt=make_prompt(model, train) to evaluate")
    pred = predict(model, data, prompt=prompt, batch_size=batch_size, device=device)
    target = data.targets.double().numpy()
    metrics = compute_metrics(pred, target) if len(data) >= 2 else {}
    return {"ids": list(data.ids), "pred": pred, "target": target, "metrics": metrics}
