"""A DP-IQA student's input preprocessing: the teacher's resize and range, at the
student's side (``student_preprocessing``), and one image to its input tensor
(``preprocess``). Distillation trains with it; ``pipelines.score.student`` scores with
it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from extract.base import check_rgb, pil_resize, to_chw_float
from pipelines.distill.student import StudentCheckpointError

RESIZES = {"squash_pil_bilinear": "bilinear", "squash_pil_bicubic": "bicubic"}


def student_preprocessing(source: Mapping[str, Any], input_size: int | None = None) -> dict:
    """The student's input preprocessing: the teacher's, optionally at another side.

    Args:
        source: the ``preprocessing`` record of the SD 1.5 store the teacher read.
        input_size: the student's input side (None: the teacher's); a multiple of 32.

    Raises:
        StudentCheckpointError: a resize method or size the student cannot reproduce.
    """
    resize = source.get("resize")
    if resize not in RESIZES:
        raise StudentCheckpointError(
            f"the teacher's features used resize {resize!r}; the student supports {list(RESIZES)}"
        )
    side = int(input_size or source["input_size"][0])
    if side % 32 or side < 32:
        raise StudentCheckpointError(f"student input size must be a multiple of 32, got {side}")
    return {
        "input_size": [side, side],
        "resize": resize,
        "input_range": list(source.get("input_range") or [0, 1]),
        "mean": source.get("mean"),
        "std": source.get("std"),
    }


def preprocess(image: np.ndarray, pre: Mapping[str, Any]) -> Tensor:
    """``(H, W, 3)`` uint8 RGB to the student's ``(3, S, S)`` float32 input."""
    h, w = pre["input_size"]
    x = to_chw_float(pil_resize(check_rgb(image), (h, w), RESIZES[pre["resize"]])) / 255.0
    low, high = pre["input_range"]
    x = x * (high - low) + low
    if pre.get("mean") is not None:
        mean = torch.tensor(pre["mean"], dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        std = torch.tensor(pre["std"], dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        x = (x - mean) / std
    return x
