"""How ``iqa-score`` calls a scorer: one protocol, and which checkpoint makes which scorer.

Three kinds of checkpoint score images, each declared by the file itself:

* ``head``: a head checkpoint of ``iqa-train-head`` (``pipelines.score.scorers.Scorer`` rebuilds
  the backbone its store was computed with);
* ``promptiqa_release``: PromptIQA's released model, MoNet and the prompt head in one
  file (``heads.prompt_release``; the same ``Scorer``, under a user prompt);
* ``dpiqa_student``: a distilled DP-IQA student, ``"kind": "dpiqa_student"``
  (``pipelines.score.student.StudentScorer``: image files only, no backbone).

``checkpoint_kind`` reads which one a file is (once, memory-mapped where the file allows);
``pipelines.score.scorers.SCORERS`` maps the kind to its loader. Every scorer implements
:class:`ImageScorer`: ``describe()`` says what its scores mean and ``score_files`` answers
a :class:`ScoreRequest`, so the command line calls scorers only through these, as training
calls heads only through ``heads.protocols``, never on a scorer's type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict

import torch

from heads.prompt_release import is_release
from pipelines.distill.student import STUDENT_KIND, is_student

HEAD_KIND = "head"
RELEASE_KIND = "promptiqa_release"
KINDS = (HEAD_KIND, RELEASE_KIND, STUDENT_KIND)


@dataclass
class Scored:
    """One image's predicted quality."""

    image: str
    quality: float  # clipped to [0, 1], higher is better
    score: float  # on the training dataset's (or the prompt's) scale and orientation
    ref: str = ""


class About(TypedDict, total=False):
    """What a scorer's scores mean (``describe()``; printed above the scores)."""

    head: str
    mode: str  # no-reference, full-reference or prompted
    dataset: str | None
    scale: list[float | None]  # [low, high] of ``score``
    higher_is_better: bool | None  # None: as the prompt


@dataclass(frozen=True)
class ScoreRequest:
    """What a user asks a scorer for (``iqa-score``'s arguments).

    Attributes:
        images: image files (folders already expanded, ``pipelines.score.scorers.expand_images``).
        refs: references as given: one for all, one per image, or a folder.
        prompt_csv: a prompt of ``image,score`` rows (prompted heads).
        prompt_range: the prompt scores' range (default: their own min and max).
        prompt_store: a feature store holding the prompt images by id.
    """

    images: list[Path]
    refs: tuple[str, ...] = ()
    prompt_csv: str | None = None
    prompt_range: tuple[float, float] | None = None
    prompt_store: str | None = None


@dataclass
class Scoring:
    """A scorer's answer: what the scores mean (for this request) and the scores."""

    about: About
    scores: list[Scored]


class ImageScorer(Protocol):
    """What every kind of scorer does."""

    def describe(self) -> About:
        """What the scores mean: head, mode, training dataset, scale and orientation."""
        ...

    def score_files(self, request: ScoreRequest) -> Scoring:
        """Score the request's images (with its references or prompt where they apply)."""
        ...


def read_plain(path: str | os.PathLike[str]) -> object:
    """A checkpoint's contents (CPU, ``weights_only``), memory-mapped where the file allows
    (so the weights are not read); None when it cannot be read at all."""
    for mmap in (True, False):  # files of the legacy (non-zip) format cannot be mapped
        try:
            return torch.load(Path(path), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001 - torch raises several types for a bad file
            continue
    return None


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """Which kind of scorer a checkpoint makes (one of ``KINDS``).

    An unreadable file counts as a head checkpoint, whose loader says what is wrong.
    """
    ckpt = read_plain(path)
    if is_student(ckpt):
        return STUDENT_KIND
    if is_release(ckpt):
        return RELEASE_KIND
    return HEAD_KIND
