"""Prediction and metrics of a head on one split part (always the identity view, 0).

Heads are called through ``heads.protocols`` (by their declared kind, never their type).
A grouped head (PromptIQA) predicts under a prompt of ``prompt_size`` train images,
chosen by interval selection over the train labels (PromptIQA's default test-time
prompt, n = 10) or at random (its Table 4). At test time only (``iqa-test-head --probe``,
never during training or model selection) the prompt may be altered as in its Table 5
(sec. 4.4 C): scores inverted (``1 - s``, the reference's ``reverse``), scores replaced by
U(0, 1) numbers (the reference's ``reverse == 2``), images replaced by random images, or
both. Random images are real backbone features of images of random pixels (a store
extracted like any other, e.g. from ``iqa-data random-images``), not random feature
vectors: MoNet's features are post-ReLU pooled maps, non-negative, which N(0, 1) vectors
are not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cache.console import UsageProblem
from heads import protocols
from heads.augment import interval_select, random_select
from heads.metrics import compute_metrics
from heads.optim import TrainConfig
from heads.part_tensors import TrainData

PROBES = ("none", "invert", "random_scores", "random_images", "random_images_scores")
IMAGE_PROBES = ("random_images", "random_images_scores")


class ProbeError(UsageProblem):
    """A prompt probe cannot run as asked (no random images, too few of them)."""


def make_prompt(
    model: nn.Module,
    train: TrainData,
    n: int = 10,
    device: str | torch.device = "cpu",
    *,
    select: str = "interval",
    probe: str = "none",
    seed: int = 0,
    random_images: TrainData | None = None,
) -> tuple[Tensor, list[str]]:
    """A cached prompt (1, n, dim) from ``n`` train rows, and the ids of its images.

    Args:
        select: ``interval`` or ``random`` (seeded) selection of the prompt images.
        probe: ``none``, or one of PromptIQA's Table 5 probes (see the module docstring).
        seed: seeds random selection and the probes' random draws.
        random_images: features of random images (``random_images*`` probes); ``n`` of
            them, drawn with ``seed``, replace the prompt's images.
    """
    if probe not in PROBES:
        raise ProbeError(f"probe must be one of {PROBES}, got {probe!r}")
    gen = torch.Generator().manual_seed(seed)
    rows = random_select(train.targets, n, gen) if select == "random" else (
        interval_select(train.targets, n))
    feats, valid, _ = train.batch(rows, device=device)
    ids = [train.ids[int(i)] for i in rows]
    scores = train.targets[rows].to(device)
    if probe == "invert":
        scores = 1 - scores
    if probe in IMAGE_PROBES:
        feats, valid, ids = _random_images(random_images, len(rows), gen, device)
    if probe in ("random_scores", "random_images_scores"):
        scores = torch.rand(len(rows), generator=gen).to(device)
    with torch.no_grad():
        prompt = protocols.embed_prompt(model, feats, scores, valid)
    return prompt, ids


def _random_images(
    images: TrainData | None, n: int, gen: torch.Generator, device: str | torch.device
) -> tuple[dict[str, Tensor], Tensor | None, list[str]]:
    """``n`` rows of the random-image features, drawn with ``gen``."""
    if images is None:
        raise ProbeError(
            "the random-images probes need features of random images "
            "(iqa-test-head --random-images STORE)"
        )
    if len(images) < n:
        raise ProbeError(
            f"the random-images probe needs {n} random images; the store holds {len(images)}"
        )
    rows = torch.randperm(len(images), generator=gen)[:n]
    feats, valid, _ = images.batch(rows, device=device)
    return feats, valid, [images.ids[int(i)] for i in rows]


def prompt_for(
    model: nn.Module, train: TrainData, training: TrainConfig, device: str | torch.device,
) -> tuple[Tensor | None, list[str]]:
    """The evaluation prompt a training config asks for (None for heads without prompts)."""
    if not protocols.is_grouped(model):
        return None, []
    return make_prompt(model, train, training.prompt_size, device, select=training.prompt_select)


def evaluate(
    model: nn.Module,
    data: TrainData,
    *,
    prompt: Tensor | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Predictions of ``model`` in eval mode over ``data`` and their metrics.

    Returns:
        ``{"ids", "pred", "target", "metrics"}``; ``metrics`` (srcc, plcc, krcc, rmse from
        ``heads.metrics.compute_metrics``) is empty when ``data`` has fewer than 2 rows.
    """
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(data)))
            feats, valid, ref = data.batch(rows, device=device)
            out.append(protocols.predict(model, feats, valid, ref, prompt))
    pred = torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)
    target = data.targets.double().numpy()
    metrics = compute_metrics(pred, target) if len(data) >= 2 else {}
    return {"ids": list(data.ids), "pred": pred, "target": target, "metrics": metrics}
