"""DP-IQA's student: an EfficientNet that predicts the teacher's QFD map and the score.

Follows DP-IQA (Fu et al., arXiv 2405.19996, §III-D, §IV-B; repository ``RomGai/DP-IQA``,
``iqa_models/student.py`` and ``train_student.py``): the torchvision EfficientNet-B7
feature trunk (classifier and pooling removed, 2560 x 16 x 16 at 512 px), a transposed
convolution 2560 -> 8 (kernel 3, stride 2, padding 1, output padding 1) with ReLU, nearest
resizing to the teacher's 8 x 64 x 64 QFD map, then the QFD's MLP (flatten -> 512 -> 512
-> 1, ReLU between, no output activation). Loss ``w_map * MSE(map, teacher map) + w_score
* MSE(score, target)`` with the reference's weights 1 : 1. At B7 with the 8 x 64 x 64 map
the student has the reference's 81,012,185 parameters.

Deviations:

* The trunk is chosen from ``TRUNKS`` (torchvision EfficientNet-B0 ... B7 definitions, and
  a tiny EfficientNet for tests); B7 is the paper's. Weights come from random init or a
  local file (``pipelines.distill.run``), never from a download.
* The map's channels and side come from the teacher-map store, not from constants; the
  trunk output is used as a map directly (the reference flattens it and views it back as
  16 x 16, which only works at 512 px), so any input side that is a multiple of 32 works.

Student checkpoints are plain dicts, read with ``weights_only=True``; ``"kind"`` is
``"dpiqa_student"``, which tells them apart from head checkpoints (``heads.checkpoint``)::

    {"kind", "format", "model", "config", "preprocessing", "label_norm", "teacher",
     "train", "epoch", "extra"}
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from heads.checkpoint import load_plain, save_atomic
from heads.specs import HeadConfigError

STUDENT_KIND = "dpiqa_student"
STUDENT_FORMAT = 1
STUDENT_KEYS = ("model", "config", "preprocessing", "label_norm", "teacher", "epoch")


def _torchvision_trunk(name: str) -> nn.Module:
    from torchvision import models

    return getattr(models, name)(weights=None).features


def _tiny_trunk() -> nn.Module:
    """A four-stage EfficientNet with 8-16 channels (output stride 32) for tests."""
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    stages = [
        MBConvConfig(1, 3, 2, 8, 8, 1),
        MBConvConfig(2, 3, 2, 8, 16, 1),
        MBConvConfig(2, 3, 2, 16, 16, 1),
        MBConvConfig(2, 3, 2, 16, 16, 1),
    ]
    return EfficientNet(stages, dropout=0.0, last_channel=32).features


TRUNKS: dict[str, Callable[[], nn.Module]] = {
    "efficientnet_b0": partial(_torchvision_trunk, "efficientnet_b0"),
    "efficientnet_b1": partial(_torchvision_trunk, "efficientnet_b1"),
    "efficientnet_b2": partial(_torchvision_trunk, "efficientnet_b2"),
    "efficientnet_b3": partial(_torchvision_trunk, "efficientnet_b3"),
    "efficientnet_b4": partial(_torchvision_trunk, "efficientnet_b4"),
    "efficientnet_b5": partial(_torchvision_trunk, "efficientnet_b5"),
    "efficientnet_b6": partial(_torchvision_trunk, "efficientnet_b6"),
    "efficientnet_b7": partial(_torchvision_trunk, "efficientnet_b7"),
    "efficientnet_tiny": _tiny_trunk,
}


class StudentCheckpointError(ValueError):
    """A student checkpoint is missing, unreadable or not a student checkpoint."""


@dataclass(frozen=True)
class StudentConfig:
    """Sizes of the student.

    Attributes:
        trunk: a key of ``TRUNKS`` (``efficientnet_b7`` in the paper).
        map_channels: channels of the teacher's QFD map; from the teacher-map store.
        map_size: side of the teacher's QFD map; from the teacher-map store.
        hidden: width of the two hidden MLP layers.
    """

    trunk: str = "efficientnet_b7"
    map_channels: int = 8
    map_size: int = 64
    hidden: int = 512

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            close = difflib.get_close_matches(self.trunk, TRUNKS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HeadConfigError(
                f"unknown student trunk {self.trunk!r} (known: {', '.join(TRUNKS)}){hint}"
            )
        if min(self.map_channels, self.map_size, self.hidden) < 1:
            raise HeadConfigError(f"student sizes must be positive, got {self}")


def _out_channels(trunk: nn.Module) -> int:
    last: Any = list(trunk.children())[-1]
    return int(last.out_channels)  # torchvision Conv2dNormActivation records it


class DPIQAStudent(nn.Module):
    """EfficientNet trunk -> transposed conv -> teacher-shaped map -> MLP score."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        c = self.config = config
        self.trunk = TRUNKS[c.trunk]()
        self.up = nn.ConvTranspose2d(
            _out_channels(self.trunk), c.map_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.mlp = nn.Sequential(
            nn.Linear(c.map_channels * c.map_size * c.map_size, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, c.hidden),
            nn.ReLU(),
            nn.Linear(c.hidden, 1),
        )

    def feature_map(self, x: Tensor) -> Tensor:
        """The predicted teacher map ``(B, map_channels, map_size, map_size)`` from pixels."""
        fmap = F.relu(self.up(self.trunk(x)))  # (B, map_channels, 2 h/32, 2 w/32)
        side = self.config.map_size
        if fmap.shape[-2:] != (side, side):
            fmap = F.interpolate(fmap, size=(side, side), mode="nearest")
        return fmap

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(quality (B,), map (B, map_channels, map_size, map_size)) of images (B, 3, H, W)."""
        fmap = self.feature_map(x)
        score = self.mlp(fmap.flatten(1)).squeeze(-1)  # flatten: (B, C * side * side)
        return score, fmap


@dataclass(frozen=True)
class StudentLoss:
    """Weights of the two distillation terms (the reference uses 1 : 1)."""

    map_weight: float = 1.0
    score_weight: float = 1.0

    def __post_init__(self) -> None:
        if min(self.map_weight, self.score_weight) < 0 or self.map_weight + self.score_weight == 0:
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {self}")

    def __call__(
        self, score: Tensor, fmap: Tensor, target: Tensor, teacher_map: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its two unweighted terms (``map``, ``score``) as floats."""
        map_term = F.mse_loss(fmap, teacher_map)
        score_term = F.mse_loss(score, target)
        total = self.map_weight * map_term + self.score_weight * score_term
        return total, {"map": float(map_term.detach()), "score": float(score_term.detach())}


def build_student(config: StudentConfig | Mapping[str, Any]) -> DPIQAStudent:
    """A student with random weights from a config or a checkpoint's config dict."""
    if isinstance(config, Mapping):
        config = StudentConfig(**dict(config))
    return DPIQAStudent(config)


def save_student(path: str | os.PathLike[str], model: DPIQAStudent, **fields: Any) -> Path:
    """Write a student checkpoint atomically (temporary file, then rename).

    Args:
        path: the file to write.
        model: the student; its weights and config are saved.
        **fields: the other keys (``preprocessing``, ``label_norm``, ``teacher``, ``train``,
            ``epoch``, ``extra``, and for resuming ``optimizer``/``scheduler``).
    """
    missing = [k for k in STUDENT_KEYS if k not in ("model", "config") and k not in fields]
    if missing:
        raise ValueError(f"save_student: missing fields {missing}")
    payload = {
        "kind": STUDENT_KIND,
        "format": STUDENT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dataclasses.asdict(model.config),
        **fields,
    }
    return save_atomic(path, payload)


def read_student(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a student checkpoint (CPU, ``weights_only=True``).

    Raises:
        StudentCheckpointError: missing or unreadable file, a head checkpoint or any
            other dict, or missing keys.
    """
    ckpt = load_plain(path, StudentCheckpointError, "student checkpoint")
    if not is_student(ckpt):
        what = "a head checkpoint" if isinstance(ckpt, dict) and "head" in ckpt else "not one"
        raise StudentCheckpointError(f"{path}: not a DP-IQA student checkpoint ({what})")
    missing = [k for k in STUDENT_KEYS if k not in ckpt]
    if missing:
        raise StudentCheckpointError(f"{path}: student checkpoint lacks keys {missing}")
    return ckpt


def is_student(ckpt: object) -> bool:
    """True for a loaded checkpoint dict written by :func:`save_student`."""
    return isinstance(ckpt, dict) and ckpt.get("kind") == STUDENT_KIND


def load_student_model(path: str | os.PathLike[str]) -> tuple[DPIQAStudent, dict[str, Any]]:
    """Rebuild a student from its checkpoint (strict) in eval mode, with the dict."""
    ckpt = read_student(path)
    model = build_student(ckpt["config"])
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise StudentCheckpointError(f"{path}: weights do not fit the student: {err}") from err
    return model.eval(), ckpt
