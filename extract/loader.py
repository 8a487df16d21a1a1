"""Decode and preprocess images in a background pool, ahead of the forward pass.

One image is decoded once for all its views; each view is flipped as pixels (before the
backbone's preprocessing), so a flipped view is the flipped *image*, not a flipped feature
map. Failures (corrupt, missing, oversized files) come back as values, never as
exceptions, so one bad file cannot stop a run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from extract.images import ImageDecodeError, load_image

T = TypeVar("T")
R = TypeVar("R")

VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "hvflip": lambda a: a[::-1, ::-1],
}


def check_views(views: Iterable[str]) -> tuple[str, ...]:
    """Validate view names; ``identity`` must come first so row 0 of an image is unflipped."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; choose from {sorted(VIEWS)}")
    if not views or views[0] != "identity" or len(set(views)) != len(views):
        raise ValueError(f"views must start with 'identity' and not repeat, got {list(views)}")
    return views


@dataclass
class PreparedView:
    """One backbone-ready input (or the reason there is none)."""

    tensor: torch.Tensor | None
    valid_hw: tuple[int, int]
    orig_hw: tuple[int, int]
    error: str | None = None


# ``Backbone.prepare``: pixels to (input tensor, valid size (h, w) as an array or a pair)
Preprocess = Callable[[np.ndarray], tuple[torch.Tensor, np.ndarray | tuple[int, int]]]


def prepare_image(
    path: Path, views: tuple[str, ...], preprocess: Preprocess, pin: bool = False
) -> list[PreparedView]:
    """Decode one file and preprocess each requested view of it.

    Args:
        preprocess: ``Backbone.prepare`` (uint8, finished on the device) or ``preprocess``.
        pin: copy each tensor into page-locked memory (for non-blocking copies to a GPU).
    """
    try:
        rgb = load_image(path)  # (H, W, 3) uint8
    except ImageDecodeError as err:
        return [PreparedView(None, (0, 0), (0, 0), str(err)) for _ in views]
    orig_hw = (int(rgb.shape[0]), int(rgb.shape[1]))
    out = []
    for view in views:
        pixels = np.ascontiguousarray(VIEWS[view](rgb))
        tensor, valid_hw = preprocess(pixels)
        tensor = tensor.pin_memory() if pin else tensor
        out.append(PreparedView(tensor, (int(valid_hw[0]), int(valid_hw[1])), orig_hw))
    return out


def prefetch_map(
    fn: Callable[[T], R], items: Iterable[T], executor: Executor, depth: int
) -> Iterator[R]:
    """Like ``executor.map`` but keeps at most ``depth`` calls in flight, in order."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
