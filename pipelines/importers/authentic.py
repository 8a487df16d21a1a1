"""Importers for the authentic-distortion (no-reference) sets: KonIQ-10k, SPAQ, LIVE Challenge, BID.

Label-file layouts follow the official downloads (as also read by hyperIQA and PromptIQA
loaders; no code taken). Each image is its own ``group``; ``ref`` is empty.

Deviations, on purpose:

* KonIQ-10k copies differ in the MOS scale (1-5 in ``koniq10k_scores_and_distributions``
  style copies, 1-100 in ``koniq10k_distributions_sets.csv``): the scale is detected
  from the maximum and recorded as ``score_range``; the official ``set`` column is kept
  as the ``official_split`` extra (train / val / test), not used to drop rows.
* LIVE Challenge drops its 7 training images by name (``t*``), not by position, so a
  reordered copy cannot shift labels (pyiqa's row-offset trap).
"""

from __future__ import annotations

import csv
import os

from cache.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow
from pipelines.importers._common import (
    Expected,
    ExpectedLike,
    Located,
    as_expected,
    build_manifest,
    dataset_root,
    header_index,
    load_mat,
    mat_strings,
    parse_float,
    require_file,
    xlsx_rows,
)

KONIQ_SETS = {"training": "train", "validation": "val", "test": "test"}
SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")


def _authentic_row(image: str, score: float, **extra: str) -> ManifestRow:
    return ManifestRow(image=image, score=score, group=image, extra=extra)


def import_koniq10k(
    root: str | os.PathLike[str],
    *,
    label_file: str = "koniq10k_distributions_sets.csv",
    image_dir: str = "1024x768",
    expected: ExpectedLike = Expected(10073),
) -> Manifest:
    """KonIQ-10k: ``image_name,...,MOS,SD,set``; 10,073 images, MOS scale detected."""
    base = dataset_root(root)
    label_path = require_file(base, label_file)
    located = []
    with open(label_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"image_name", "MOS"} - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{label_path}:1: missing columns {sorted(missing)}")
        for lineno, rec in enumerate(reader, start=2):
            where = f"{label_path}:{lineno}"
            extra = {"sd": rec.get("SD") or ""}
            if rec.get("set"):
                extra["official_split"] = KONIQ_SETS.get(rec["set"], rec["set"])
            score = parse_float(rec["MOS"], where)
            located.append(
                Located(_authentic_row(f"{image_dir}/{rec['image_name']}", score, **extra), where)
            )
    top = max((item.row.score for item in located), default=0.0)
    score_range = (1.0, 5.0) if top <= 5.0 else (0.0, 100.0)
    info = DatasetInfo("koniq10k", "MOS", False, score_range, str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def import_spaq(
    root: str | os.PathLike[str],
    *,
    label_file: str = "Annotations/MOS and Image attribute scores.xlsx",
    image_dir: str = "TestImage",
    expected: ExpectedLike = Expected(11125),
) -> Manifest:
    """SPAQ: xlsx ``Image name, MOS, Brightness, ...``; 11,125 images, MOS 0-100.

    The five attribute scores are kept as lower-case extra columns.
    """
    base = dataset_root(root)
    label_path = require_file(base, [label_file, label_file.replace(" ", "_")])
    rows = xlsx_rows(label_path)
    _, header = next(rows, (1, ()))
    name_col = header_index(header, "Image name", f"{label_path}: row 1")
    mos_col = header_index(header, "MOS", f"{label_path}: row 1")
    attr_cols = {a.lower(): header.index(a) for a in SPAQ_ATTRIBUTES if a in header}
    located = []
    for number, values in rows:
        where = f"{label_path}: row {number}"
        if values[name_col] is None:
            raise ManifestError(f"{where}: empty image name")
        extra = {k: str(values[c]) for k, c in attr_cols.items() if values[c] is not None}
        score = parse_float(values[mos_col], where)
        row = _authentic_row(f"{image_dir}/{values[name_col]}", score, **extra)
        located.append(Located(row, where))
    info = DatasetInfo("spaq", "MOS", False, (0.0, 100.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))


def import_livec(
    root: str | os.PathLike[str],
    *,
    image_dir: str = "Images",
    expected: ExpectedLike = Expected(1162),
) -> Manifest:
    """LIVE Challenge: ``Data/AllImages_release.mat`` + ``AllMOS_release.mat``; 1,162.

    The 7 training images (names starting with ``t``) are dropped.
    """
    base = dataset_root(root)
    names_path = require_file(base, "Data/AllImages_release.mat")
    mos_path = require_file(base, "Data/AllMOS_release.mat")
    names = mat_strings(load_mat(names_path, "AllImages_release"))
    scores = load_mat(mos_path, "AllMOS_release").reshape(-1)
    if len(names) != len(scores):
        raise ManifestError(
            f"{mos_path}: {len(scores)} scores for {len(names)} images in {names_path}"
        )
    located = []
    for k, (name, score) in enumerate(zip(names, scores, strict=True)):
        if name.lower().startswith("t"):
            continue
        where = f"{mos_path}: entry {k + 1} ({name})"
        located.append(
            Located(_authentic_row(f"{image_dir}/{name}", parse_float(score, where)), where)
        )
    info = DatasetInfo("livec", "MOS", False, (0.0, 100.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(mos_path))


def import_bid(
    root: str | os.PathLike[str],
    *,
    label_file: str = "DatabaseGrades.xlsx",
    image_dir: str = "",
    expected: ExpectedLike = Expected(586),
) -> Manifest:
    """BID: xlsx rows ``(image number, MOS)`` after a header -> ``DatabaseImage%04d.JPG``.

    MOS is on 0-5 (higher = better). ``image_dir`` is ``ImageDatabase`` for copies that
    keep the images in that subfolder.
    """
    base = dataset_root(root)
    label_path = require_file(base, label_file)
    prefix = f"{image_dir.rstrip('/')}/" if image_dir else ""
    located = []
    for number, values in xlsx_rows(label_path):
        if number == 1:
            continue  # header
        where = f"{label_path}: row {number}"
        if len(values) < 2:
            raise ManifestError(f"{where}: expected (image number, MOS), got {values}")
        index = parse_float(values[0], where, "image number")
        if index != int(index):
            raise ManifestError(f"{where}: image number {values[0]!r} is not an integer")
        image = f"{prefix}DatabaseImage{int(index):04d}.JPG"
        located.append(Located(_authentic_row(image, parse_float(values[1], where)), where))
    info = DatasetInfo("bid", "MOS", False, (0.0, 5.0), str(base))
    return build_manifest(info, located, as_expected(expected), str(label_path))
