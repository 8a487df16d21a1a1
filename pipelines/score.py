"""Score new images end to end: the backbone a head was trained on, then the head.

A head checkpoint records the fingerprint fields of its feature store and the extraction
settings (``extra.store_fields``, ``extra.extract_config``). Scoring rebuilds that backbone
from the weights the caller gives, recomputes the fingerprint fields, and refuses to go on
when any differ (other weights, preprocessing or dtype would give other features, and the
head's numbers would silently mean nothing).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.fingerprint import describe_diff, diff_fields
from cache.record import ExtractionRecord, RecordError
from cache.shard_writer import storage_values
from cache.store import store_fields
from extract.images import load_image
from extract.run import ExtractConfig, build_backbone, fingerprint_fields
from extract.shards import autocast
from heads import protocols
from heads.checkpoint import load_head
from heads.data import normalise


class ScoreError(ValueError):
    """The checkpoint, the backbone weights or the inputs do not fit together."""


@dataclass
class Scored:
    """One image's predicted quality."""

    image: str
    quality: float  # the head's output: normalised, higher is better
    score: float  # the same on the training dataset's raw scale and orientation


def _record(ckpt: dict[str, Any]) -> ExtractionRecord:
    extra = ckpt.get("extra") or {}
    try:
        record = ExtractionRecord.from_dict(extra.get("extraction") or extra.get("extract_config"))
    except RecordError as err:
        raise ScoreError("the head checkpoint does not record its backbone; retrain it with "
                         "this version of iqa-train-head") from err
    if "store_fields" not in extra:
        raise ScoreError("the head checkpoint does not record its store's fingerprint fields")
    return record


def _extract_config(ckpt: dict[str, Any], checkpoint: str | None, device: str) -> ExtractConfig:
    return ExtractConfig.from_record(_record(ckpt), checkpoint, device)


def load_scorer(head_ckpt: str | Path, checkpoint: str | None, device: str = "cpu") -> Any:
    """(backbone, head, checkpoint dict, config) after checking the backbone's fingerprint."""
    head, ckpt = load_head(head_ckpt)
    cfg = _extract_config(ckpt, checkpoint, device)
    backbone = build_backbone(cfg)
    trained = dict(ckpt["extra"]["store_fields"])
    given = store_fields(fingerprint_fields(backbone, cfg), cfg.keepbits)
    given["views"] = trained.get("views", given["views"])  # views do not change a row
    if diff_fields(trained, given):
        raise ScoreError(
            f"{head_ckpt}: the backbone given differs from the one the head was trained on "
            f"({describe_diff(trained, given)}); pass the same --checkpoint"
        )
    return backbone, head.to(device).eval(), ckpt, cfg


def _features(backbone: Any, cfg: ExtractConfig, paths: Sequence[str | Path]) -> Any:
    tensors, valid = [], []
    for path in paths:
        x, hw = backbone.preprocess(load_image(path))
        tensors.append(x)
        valid.append(torch.as_tensor(np.asarray(hw), dtype=torch.long))
    device = torch.device(cfg.device)
    with torch.inference_mode(), autocast(device, cfg.dtype):
        out = backbone.forward_features(torch.stack(tensors).to(device))  # (B, 3, H, W) in
    feats = {  # the values the store kept for the training features: dtype and bit-rounding
        k: torch.from_numpy(
            storage_values(v.float().cpu().numpy(), cfg.storage_dtype, cfg.keepbits)
        ).float().to(device)
        for k, v in out.items()
    }
    return feats, torch.stack(valid).to(device)


def _prompt(backbone: Any, cfg: ExtractConfig, head: Any, ckpt: dict, prompt_csv: str) -> Any:
    with open(prompt_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "score"} <= set(rows[0]):
        raise ScoreError(f"{prompt_csv}: need a CSV with columns image,score (one row each)")
    base = Path(prompt_csv).parent
    feats, valid = _features(backbone, cfg, [base / r["image"] for r in rows])
    scores = normalise([float(r["score"]) for r in rows], ckpt["label_norm"])
    with torch.no_grad():
        return head.forward_prompt(feats, scores.to(valid.device), valid)


def score_images(
    head_ckpt: str | Path,
    images: Sequence[str | Path],
    *,
    checkpoint: str | None = None,
    refs: Sequence[str | Path] = (),
    prompt_csv: str | None = None,
    device: str = "cpu",
) -> list[Scored]:
    """Predict the quality of ``images`` (with ``refs`` for FR heads, a prompt for PromptIQA).

    Raises:
        ScoreError: a missing reference or prompt, or a backbone that differs from training.
    """
    backbone, head, ckpt, cfg = load_scorer(head_ckpt, checkpoint, device)
    if protocols.needs_ref(head) and len(refs) not in (1, len(images)):
        raise ScoreError(f"head {ckpt['head']!r} is full-reference: give one --ref per image "
                         "or a single --ref for all")
    if protocols.is_grouped(head) and not prompt_csv:
        raise ScoreError("the prompt head needs --prompt prompt.csv (image,score rows)")
    feats, valid = _features(backbone, cfg, images)
    with torch.no_grad():
        if prompt_csv and protocols.is_grouped(head):
            quality = head.predict(feats, _prompt(backbone, cfg, head, ckpt, prompt_csv), valid)
        else:
            ref = None
            if protocols.needs_ref(head):
                ref_paths = list(refs) * len(images) if len(refs) == 1 else list(refs)
                ref, _ = _features(backbone, cfg, ref_paths)
            quality = head(feats, valid, ref)
    return [Scored(str(p), float(q), _to_raw(float(q), ckpt["label_norm"]))
            for p, q in zip(images, quality.cpu().tolist(), strict=True)]


def _to_raw(quality: float, norm: dict[str, Any]) -> float:
    """Inverse of ``heads.data.normalise``: back to the dataset's scale and orientation."""
    if not norm:
        return quality
    t = 1 - quality if norm.get("lower_better") else quality
    return norm["low"] + t * (norm["high"] - norm["low"])
