"""Prediction and metrics of a head on one split part (always the identity view, 0).

Heads are called through ``heads.protocols`` (by their declared kind, never their type).
A grouped head (PromptIQA) predicts under a prompt of ``prompt_size`` train images,
chosen by interval selection over the train labels (PromptIQA's default test-time
prompt, n = 10) or at random (its Table 4); the prompt may be altered as in its Table 5
(scores inverted or replaced by random numbers, features replaced by random numbers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from heads import protocols
from heads.augment import interval_select, random_select
from heads.metrics import compute_metrics
from heads.optim import TrainConfig
from heads.traindata import TrainData


def make_prompt(
    model: nn.Module,
    train: TrainData,
    n: int = 10,
    device: str | torch.device = "cpu",
    *,
    select: str = "interval",
    transform: str = "none",
    seed: int = 0,
) -> tuple[Tensor, list[str]]:
    """A cached prompt (1, n, dim) from ``n`` train rows, and their ids.

    Args:
        select: ``interval`` or ``random`` (seeded) selection of the prompt images.
        transform: ``none``, ``invert`` (scores ``1 - s``), ``random_scores`` or
            ``random_features`` (PromptIQA's Table 5 probes).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = random_select(train.targets, n, gen) if select == "random" else (
        interval_select(train.targets, n))  # fmt: skip
    feats, valid, _ = train.batch(rows, device=device)
    scores = train.targets[rows].to(device)
    if transform == "invert":
        scores = 1 - scores
    elif transform == "random_scores":
        scores = torch.rand(len(rows), generator=gen).to(device)
    elif transform == "random_features":
        feats = {k: torch.randn(v.shape, generator=gen).to(v) for k, v in feats.items()}
    with torch.no_grad():
        prompt = protocols.embed_prompt(model, feats, scores, valid)
    return prompt, [train.ids[int(i)] for i in rows]


def prompt_for(
    model: nn.Module, train: TrainData, training: TrainConfig, device: str | torch.device,
) -> tuple[Tensor | None, list[str]]:  # fmt: skip
    """The evaluation prompt a training config asks for (None for heads without prompts)."""
    if not protocols.is_grouped(model):
        return None, []
    return make_prompt(
        model, train, training.prompt_size, device, select=training.prompt_select,
        transform=training.prompt_transform,
    )  # fmt: skip


def predict(
    model: nn.Module,
    data: TrainData,
    *,
    prompt: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Predictions (N,) of ``model`` in eval mode over ``data`` (empty for no rows)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(data)))
            feats, valid, ref = data.batch(rows, device=device)
            out.append(protocols.predict(model, feats, valid, ref, prompt))
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
    pred = predict(model, data, prompt=prompt, batch_size=batch_size, device=device)
    target = data.targets.double().numpy()
    metrics = compute_metrics(pred, target) if len(data) >= 2 else {}
    return {"ids": list(data.ids), "pred": pred, "target": target, "metrics": metrics}
