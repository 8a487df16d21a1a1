"""Score image files with a distilled DP-IQA student: no Stable Diffusion, no store, no GPU.

The student checkpoint (``pipelines.distill.student``, ``"kind": "dpiqa_student"``) holds everything
needed: the weights, the student config, the preprocessing the teacher's features were
computed with (squash resize to the input size with PIL, bilinear for SD 1.5; range [0, 1]
as in the reference; ``student_preprocessing``), the label map (``label_norm``) that turns the
predicted quality back into the dataset's scale, and the teacher's fingerprint.

API, for ``iqa-score`` and scripts::

    checkpoint_kind(path) == "dpiqa_student"     # a student (pipelines.score.kinds)
    scorer = load_student(path, device="cpu")    # build once ...
    scorer.score(paths, batch_size=16)           # ... score many: list[Scored]
    scorer.quality(images)                       # (B, 3, S, S) tensor -> (B,) quality
    scorer.score_files(request)                  # iqa-score's protocol (ImageScorer)

``Scored`` is ``pipelines.score.kinds.Scored`` (``image``, ``quality`` 0-1 higher is better,
``score`` on the training dataset's scale), the same type head scoring returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from extract.images import load_image
from extract.loader import prefetch_map
from heads.split_data import denormalise
from pipelines.distill.preprocess import preprocess
from pipelines.distill.student import (
    STUDENT_KIND,
    DPIQAStudent,
    load_student_model,
)
from pipelines.score.kinds import About, Scored, ScoreRequest, Scoring


class StudentScorer:
    """A loaded student: scores many images without rebuilding anything.

    Attributes:
        model: the student, eval mode, on ``device``.
        preprocessing: its input preprocessing (``student_preprocessing``).
        label_norm: quality -> dataset scale map of the training labels.
        teacher: what the checkpoint records of its teacher (store fingerprint, sha256).
        device: torch device.
        batch_size: images per forward in ``score_files``.
    """

    def __init__(
        self, model: DPIQAStudent, ckpt: Mapping[str, Any], device: str, batch_size: int = 16
    ) -> None:
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = dict(ckpt["preprocessing"])
        self.label_norm = dict(ckpt["label_norm"])
        self.teacher = dict(ckpt["teacher"])

    def quality(self, images: Tensor) -> Tensor:
        """Predicted quality (B,) of preprocessed images (B, 3, S, S)."""
        with torch.inference_mode():
            return self.model(images.to(self.device))[0].float().cpu()

    def _load(self, path: str | os.PathLike[str]) -> Tensor:
        return preprocess(load_image(path), self.preprocessing)

    def score(self, images: Sequence[str | os.PathLike[str]], batch_size: int = 16) -> list[Scored]:
        """Scores of image files; decoding of the next batch overlaps the forward."""
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        paths = list(images)
        out: list[Scored] = []
        with ThreadPoolExecutor(2) as pool:
            tensors = prefetch_map(self._load, paths, pool, depth=2 * batch_size)
            for start in range(0, len(paths), batch_size):
                batch = [next(tensors) for _ in paths[start : start + batch_size]]
                quality = self.quality(torch.stack(batch)).tolist()  # (B, 3, S, S) in
                out += [
                    Scored(str(p), float(q), denormalise(float(q), self.label_norm))
                    for p, q in zip(paths[start : start + batch_size], quality, strict=True)
                ]
        return out


    def describe(self) -> About:
        """What the scores mean: the dataset's scale, higher is better (``ImageScorer``)."""
        return {"head": STUDENT_KIND, "mode": "no-reference"}

    def score_files(self, request: ScoreRequest) -> Scoring:
        """Score a request's images (``ImageScorer``); a student reads images only, so the
        request's references and prompt are not used."""
        return Scoring(self.describe(), self.score(request.images, self.batch_size))


def load_student(
    path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 16
) -> StudentScorer:
    """Load a student checkpoint for scoring (``batch_size``: of ``score_files``).

    Raises:
        StudentCheckpointError: not a student checkpoint (e.g. a head checkpoint), or
            unreadable.
    """
    model, ckpt = load_student_model(path)
    return StudentScorer(model, ckpt, device, batch_size)

