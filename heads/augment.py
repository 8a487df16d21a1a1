"""PromptIQA label augmentation and prompt (ISP) selection.

Follows PromptIQA (ECCV 2024, §3.2 F eq. 4 and §4.1 C, §4.4 A; repository
``chencn2020/PromptIQA``, ``train.py`` and ``PromptIQA/utils/dataset``):

* random scaling, p = 0.5. The paper's rule ``S / max(S)`` (the maximum becomes exactly 1)
  is the default (``scale_mode="paper"``); the reference code's ``S / U(max(S), 1)``
  (the maximum lands anywhere in [max, 1]) is ``scale_mode="code"``;
* random flipping, p = 0.1: ``alpha - S`` with alpha = 1;
* both applied to a whole training group (prompts and targets), scaling first;
* interval selection of the test-time prompt: sort the train labels, take rank 0, then
  every d-th rank with ``d = (L - 2) // (n - 2)`` until n - 1 are chosen, then the maximum;
  random selection for ablations. Deviation: random selection takes a seeded generator
  instead of re-seeding from OS entropy.

Labels are expected in [0, 1] (normalised, higher is better).
"""

from __future__ import annotations

import torch
from torch import Tensor

SCALE_MODES = ("paper", "code")


def _fires(p: float, generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator) < p)


def random_scale(
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    p: float = 0.5,
    mode: str = "paper",
) -> Tensor:
    """Divide a label group by its maximum (paper) or by U(max, 1) (code), with prob. p."""
    if mode not in SCALE_MODES:
        raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
    top = labels.max()
    if not _fires(p, generator) or top <= 0:
        return labels
    if mode == "paper":
        return labels / top
    u = torch.rand((), generator=generator).to(labels)
    return labels / (top + (1 - top) * u)


def random_flip(
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    p: float = 0.1,
    alpha: float = 1.0,
) -> Tensor:
    """Replace a label group by ``alpha - labels`` with probability p (reverses the order)."""
    return alpha - labels if _fires(p, generator) else labels


def augment_labels(
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    scale_p: float = 0.5,
    flip_p: float = 0.1,
    scale_mode: str = "paper",
) -> Tensor:
    """Random scaling then random flipping of one group's labels."""
    scaled = random_scale(labels, generator, p=scale_p, mode=scale_mode)
    return random_flip(scaled, generator, p=flip_p)


def interval_select(labels: Tensor, n: int = 10) -> Tensor:
    """Indices of n prompt images at uniform rank intervals, min and max included.

    Args:
        labels: train labels (L,).
        n: prompt size; all L indices (sorted by label) when L <= n.

    Returns:
        Indices into ``labels`` (n,), in increasing label order.
    """
    order = torch.argsort(labels, stable=True)
    total = order.numel()
    if total <= n:
        return order
    if n < 2:
        return order[-1:]
    step = max((total - 2) // (n - 2), 1) if n > 2 else total
    picks = [min(k * step, total - 2) for k in range(n - 1)]
    return order[torch.tensor([*picks, total - 1])]


def random_select(labels: Tensor, n: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Indices of n prompt images drawn at random (the paper's "random" ablation)."""
    total = labels.numel()
    return torch.randperm(total, generator=generator)[: min(n, total)]
