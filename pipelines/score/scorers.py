"""Score new images end to end: the backbone a head was trained on, then the head.

A head checkpoint records its store's fingerprint fields and extraction record. A
:class:`Scorer` rebuilds that backbone once from the weights the caller gives, recomputes
the fingerprint fields and refuses to go on when any differ (other weights, preprocessing
or dtypes would give other features, and the head's numbers would silently mean nothing);
then it scores any number of images in batches, decoding one batch at a time, and rounds
the features exactly as the store did (storage dtype and lossy bit-rounding).

Outputs (:class:`Scored`): ``score`` on the training dataset's scale and orientation (a
DMOS head gives DMOS), and ``quality``, the same clipped to [0, 1] with higher = better.
A prompted head (PromptIQA) scores under the user's prompt instead: the prompt's own
scores, min-max normalised with ``prompt_range`` (default: their own min and max), so the
predictions come back in the prompt's scale and orientation (a prompt where lower is
better gives predictions where lower is better). A DP-IQA student checkpoint scores images
with no backbone at all (``pipelines.score.student``).

``load_scorer`` makes the scorer a checkpoint declares (``pipelines.score.kinds``: a head,
PromptIQA's released model, or a student) through the literal registry ``SCORERS``; every
scorer answers ``describe()`` and ``score_files(request)`` (``ImageScorer``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cache.console import UsageProblem
from cache.create import store_fields
from cache.fingerprint import describe_diff, diff_fields
from cache.record import ExtractionRecord, RecordError, record_of
from cache.store import open_store
from extract.config import ExtractConfig, build_backbone, fingerprint_fields
from extract.forward import forward_batches, to_stored
from extract.images import load_image
from heads import protocols
from heads.checkpoint import load_head
from heads.prompt_release import load_release_head
from heads.split_data import denormalise, normalise
from pipelines.distill.student import STUDENT_KIND
from pipelines.score.kinds import (
    HEAD_KIND,
    RELEASE_KIND,
    About,
    ImageScorer,
    Scored,
    ScoreRequest,
    Scoring,
    checkpoint_kind,
)
from pipelines.score.student import load_student

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class ScoreError(ValueError):
    """The checkpoint, the backbone weights or the inputs do not fit together."""


def _record(ckpt: dict[str, Any]) -> ExtractionRecord:
    extra = ckpt.get("extra") or {}
    try:
        record = record_of(extra, extra.get("store_fields") or {})
    except RecordError as err:
        raise ScoreError("the head checkpoint does not record its backbone; retrain it with "
                         "this version of iqa-train-head") from err
    if "store_fields" not in extra:
        raise ScoreError("the head checkpoint does not record its store's fingerprint fields")
    return record


class Scorer:
    """A head and its backbone, loaded and checked once, scoring many images.

    Args:
        head_ckpt: ``model.pt`` of ``iqa-train-head``.
        checkpoint: the backbone weights the head's store was computed with (None: none).
        device: torch device.
        batch_size: images per backbone forward.
    """

    def __init__(self, head_ckpt: str | Path, checkpoint: str | None = None,
                 device: str = "cpu", batch_size: int = 4) -> None:
        head, ckpt = load_head(head_ckpt)
        cfg = ExtractConfig.from_record(_record(ckpt), checkpoint, device)
        self._setup(head, ckpt, cfg, device, batch_size)
        self._check_backbone(head_ckpt)

    def _setup(self, head: torch.nn.Module, ckpt: dict[str, Any], cfg: ExtractConfig,
               device: str, batch_size: int) -> None:
        self.head, self.ckpt, self.cfg = head.to(device).eval(), ckpt, cfg
        self.backbone = build_backbone(cfg)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.norm: dict[str, Any] = dict(ckpt.get("label_norm") or {})

    @classmethod
    def from_release(cls, path: str | Path, device: str = "cpu", batch_size: int = 4,
                     monet: dict[str, Any] | None = None, **head: Any) -> Scorer:
        """PromptIQA's released model (``best_model.pth.tar``: MoNet and the prompt head in
        one file), scoring images under a user prompt; no store involved.

        Args:
            monet: MoNet architecture overrides (tests use tiny ones); head: prompt head ones.
        """
        self = cls.__new__(cls)
        cfg = ExtractConfig(backbone="monet", checkpoint=str(path), device=device,
                            arch=tuple(sorted((monet or {}).items())), storage_dtype="float32")
        ckpt = {"head": "prompt", "label_norm": {},
                "extra": {"dataset": "PromptIQA's training mix (released model)"}}
        self._setup(load_release_head(path, **head), ckpt, cfg, device, batch_size)
        return self

    def _check_backbone(self, head_ckpt: str | Path) -> None:
        trained = dict(self.ckpt["extra"]["store_fields"])
        given = store_fields(fingerprint_fields(self.backbone, self.cfg), self.cfg.keepbits)
        given["views"] = trained.get("views", given["views"])  # views do not change a row
        if diff_fields(trained, given):
            raise ScoreError(
                f"{head_ckpt}: the backbone given differs from the one the head was trained "
                f"on ({describe_diff(trained, given)}); pass the same --checkpoint"
            )

    @property
    def mode(self) -> str:
        """``no-reference``, ``full-reference`` or ``prompted``."""
        kind = protocols.kind_of(self.head)
        return {protocols.PLAIN: "no-reference", protocols.FULL_REFERENCE: "full-reference",
                protocols.GROUPED: "prompted"}[kind]

    def describe(self) -> About:
        """What the scores mean: head, mode, training dataset, scale and orientation."""
        norm = self.norm
        return {
            "head": self.ckpt["head"], "mode": self.mode,
            "dataset": self.ckpt["extra"].get("dataset"),
            "scale": [norm.get("low"), norm.get("high")],
            "higher_is_better": not norm.get("lower_better", False),
        }

    def features(self, paths: Sequence[str | Path]) -> tuple[dict[str, Tensor], Tensor]:
        """Backbone features of image files, as the store kept them, and valid sizes."""
        tensors, valid = [], []
        for path in paths:
            x, hw = self.backbone.preprocess(load_image(path))
            tensors.append(x)
            valid.append(torch.as_tensor(np.asarray(hw), dtype=torch.long))
        out = forward_batches(self.backbone, tensors, batch_size=self.batch_size,
                              dtype=self.cfg.dtype, device=self.device)
        stored = to_stored(out, self.cfg.storage_dtype, self.cfg.keepbits)  # as at training
        feats = {k: torch.from_numpy(v).float().to(self.device) for k, v in stored.items()}
        return feats, torch.stack(valid).to(self.device)

    def prompt(
        self, prompt_csv: str | Path, prompt_range: tuple[float, float] | None = None,
        store: str | None = None,
    ) -> tuple[Tensor, tuple[float, float]]:
        """The head's prompt from a CSV of ``image,score`` rows, and the range used.

        Args:
            store: a feature store of the head's fingerprint holding (some of) the prompt
                images by id (the CSV's ``image`` column): those are read, not recomputed.
        """
        if not protocols.is_grouped(self.head):
            raise ScoreError(f"head {self.ckpt['head']!r} takes no prompt")
        rows = read_prompt(prompt_csv)
        low, high = prompt_range or (min(s for _, s in rows), max(s for _, s in rows))
        if not high > low:
            raise ScoreError(f"{prompt_csv}: the prompt's scores need a range (low < high); "
                             "give --prompt-range LO,HI")
        feats, valid = self._prompt_features(prompt_csv, [p for p, _ in rows], store)
        norm = {"low": low, "high": high, "lower_better": False}
        scores = normalise([s for _, s in rows], norm).to(self.device)
        with torch.no_grad():
            return protocols.embed_prompt(self.head, feats, scores, valid), (low, high)

    def _prompt_features(self, prompt_csv: str | Path, paths: list[Path],
                         store: str | None) -> tuple[dict[str, Tensor], Tensor]:
        """Prompt features: read from ``store`` where it holds an image, else computed."""
        if store is None:
            return self.features(paths)
        base = Path(prompt_csv).parent
        ids = [p.relative_to(base).as_posix() for p in paths]
        found: dict[str, tuple[dict[str, Tensor], Tensor]] = {}
        with open_store(store, verify=True) as s:
            if s.fingerprint_fields != self.ckpt["extra"].get("store_fields"):
                raise ScoreError(f"{store}: not a store of the features this head was trained "
                                 "on (fingerprint fields differ)")
            for i in (i for i in ids if i in set(s.image_ids)):
                row = s.row_of(i)
                feats = {k: torch.from_numpy(v[0]) for k, v in s.read([row]).items()}
                found[i] = feats, torch.as_tensor(s.valid_size([row])[0], dtype=torch.long)
        new = [p for p, i in zip(paths, ids, strict=True) if i not in found]
        if new:
            fresh, fresh_valid = self.features(new)
            for n, p in enumerate(new):
                i = p.relative_to(base).as_posix()
                found[i] = {k: v[n].cpu() for k, v in fresh.items()}, fresh_valid[n].cpu()
        feats = {k: torch.stack([found[i][0][k] for i in ids]).to(self.device)
                 for k in found[ids[0]][0]}
        return feats, torch.stack([found[i][1] for i in ids]).to(self.device)

    def score(
        self, images: Sequence[str | Path], refs: Sequence[str | Path] = (),
        prompt: Tensor | None = None, prompt_range: tuple[float, float] | None = None,
    ) -> list[Scored]:
        """Scores of ``images`` (with ``refs`` for a full-reference head, aligned; with a
        prompt from :meth:`prompt` for a prompted head)."""
        if protocols.needs_ref(self.head) and len(refs) != len(images):
            raise ScoreError(f"head {self.ckpt['head']!r} is full-reference: give one "
                             "reference per image (--ref file or folder)")
        if protocols.is_grouped(self.head) and prompt is None:
            raise ScoreError("the prompt head needs a prompt (--prompt prompt.csv of "
                             "image,score rows)")
        out: list[Scored] = []
        for start in range(0, len(images), self.batch_size):
            part = list(images[start : start + self.batch_size])
            ref_part = list(refs[start : start + self.batch_size]) if refs else []
            out += self._score_batch(part, ref_part, prompt, prompt_range)
        return out

    def _score_batch(
        self,
        images: list[str | Path],
        refs: list[str | Path],
        prompt: Tensor | None,
        prompt_range: tuple[float, float] | None,
    ) -> list[Scored]:
        feats, valid = self.features(images)
        ref = self.features(refs)[0] if refs else None
        with torch.no_grad():
            quality = protocols.predict(self.head, feats, valid, ref, prompt).cpu().numpy()
        norm = self.norm
        if prompt is not None and prompt_range is not None:
            norm = {"low": prompt_range[0], "high": prompt_range[1], "lower_better": False}
        raw = denormalise(quality, norm)
        refs_out = [str(r) for r in refs] or [""] * len(images)
        return [Scored(str(p), float(np.clip(q, 0, 1)), float(s), r)
                for p, q, s, r in zip(images, quality, np.atleast_1d(raw), refs_out,
                                      strict=True)]

    def score_files(self, request: ScoreRequest) -> Scoring:
        """Score a request (``ImageScorer``): references matched to the images, the prompt
        read and embedded once; ``about`` then describes the prompt's scale.

        Raises:
            UsageProblem: references given to a head that is not full-reference.
        """
        about = self.describe()
        refs = match_refs(request.images, request.refs) if request.refs else []
        if request.refs and about["mode"] != "full-reference":
            raise UsageProblem(f"--ref: head {about['head']!r} is {about['mode']}")
        prompt, used = None, None
        if request.prompt_csv:
            prompt_range, store = request.prompt_range, request.prompt_store
            prompt, used = self.prompt(request.prompt_csv, prompt_range, store)
        scores = self.score(request.images, refs, prompt, used)
        if used is not None:
            about.update({"scale": list(used), "higher_is_better": None, "dataset": "the prompt"})
        return Scoring(about, scores)


def read_prompt(path: str | Path) -> list[tuple[Path, float]]:
    """``(image path, score)`` rows of a prompt CSV (paths relative to the CSV)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "score"} <= set(rows[0]):
        raise ScoreError(f"{path}: need a CSV with columns image,score (one row each)")
    base = Path(path).parent
    out = []
    for lineno, row in enumerate(rows, start=2):
        try:
            out.append((base / row["image"], float(row["score"])))
        except (TypeError, ValueError):
            raise ScoreError(f"{path}:{lineno}: bad score {row['score']!r}") from None
    return out


def expand_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted by name, not recursive)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ScoreError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        else:
            out.append(path)
    return out


def match_refs(images: Sequence[Path], refs: Sequence[str | Path]) -> list[Path]:
    """References for ``images``: one file for all, one per image, or a folder matched by
    file name (the same name, or the same stem with any image suffix)."""
    if len(refs) == 1 and Path(refs[0]).is_dir():
        folder = Path(refs[0])
        return [_ref_in(folder, image) for image in images]
    if len(refs) == 1:
        return [Path(refs[0])] * len(images)
    if len(refs) != len(images):
        raise ScoreError(f"{len(refs)} references for {len(images)} images: give one, one "
                         "per image, or a folder of references named like the images")
    return [Path(r) for r in refs]


def _ref_in(folder: Path, image: Path) -> Path:
    if (folder / image.name).is_file():
        return folder / image.name
    for candidate in _same_stem(folder, image.stem):
        return candidate
    raise ScoreError(f"no reference for {image.name} in {folder} (same file name or stem)")


def _same_stem(folder: Path, stem: str) -> Iterator[Path]:
    for suffix in IMAGE_SUFFIXES:
        for name in (stem + suffix, stem + suffix.upper()):
            if (folder / name).is_file():
                yield folder / name


# How each kind of checkpoint (``pipelines.score.kinds.checkpoint_kind``) is loaded:
# (path, backbone weights, device, batch size) -> scorer.
Loader = Callable[[Path, str | None, str, int], ImageScorer]


def _head(path: Path, checkpoint: str | None, device: str, batch_size: int) -> ImageScorer:
    return Scorer(path, checkpoint, device, batch_size)


def _release(path: Path, checkpoint: str | None, device: str, batch_size: int) -> ImageScorer:
    return Scorer.from_release(path, device, batch_size)  # MoNet's weights are in the file


def _student(path: Path, checkpoint: str | None, device: str, batch_size: int) -> ImageScorer:
    return load_student(path, device, batch_size)  # no backbone


SCORERS: dict[str, Loader] = {HEAD_KIND: _head, RELEASE_KIND: _release, STUDENT_KIND: _student}


def load_scorer(
    head_ckpt: str | Path, checkpoint: str | None = None, device: str = "cpu", batch_size: int = 4
) -> ImageScorer:
    """The scorer a checkpoint declares: a :class:`Scorer` for a head checkpoint or
    PromptIQA's released model, a DP-IQA student's scorer for a student checkpoint."""
    path = Path(head_ckpt)
    return SCORERS[checkpoint_kind(path)](path, checkpoint, device, batch_size)
