"""A generic CSV importer with a column mapping, for pyiqa meta-info files and team CSVs.

pyiqa's meta-info CSVs (``img_name,mos[,std,...]`` for NR sets,
``ref_name,dist_name,mos|dmos[,...]`` for FR sets; see the pyiqa docs,
``docs/Dataset_Preparation.md``) read columns by position; this importer reads them by
name through an explicit mapping, so a reordered or extended CSV still imports right.
Columns not mapped are kept as extra columns (pyiqa's split columns included).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path

from cache.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow
from pipelines.importers._common import (
    ExpectedLike,
    Located,
    as_expected,
    build_manifest,
    dataset_root,
    parse_float,
)

MAPPABLE = ("image", "score", "ref", "group", "distortion")


def _check_mapping(columns: Mapping[str, str], fieldnames: list[str], where: str) -> None:
    unknown = sorted(set(columns) - set(MAPPABLE))
    if unknown:
        raise ManifestError(f"column mapping has unknown keys {unknown} (use {list(MAPPABLE)})")
    for key in ("image", "score"):
        if key not in columns:
            raise ManifestError(f"column mapping needs {key!r} (e.g. {key}=<csv column>)")
    absent = sorted(c for c in columns.values() if c not in fieldnames)
    if absent:
        raise ManifestError(f"{where}: no column(s) {absent} (have {fieldnames})")


def _row(rec: dict[str, str], columns: Mapping[str, str], where: str) -> ManifestRow:
    image = (rec.get(columns["image"]) or "").strip()
    if not image:
        raise ManifestError(f"{where}: empty image name in column {columns['image']!r}")
    ref = (rec.get(columns.get("ref", ""), "") or "").strip()
    group = (rec.get(columns.get("group", ""), "") or "").strip() or Path(ref).stem or image
    mapped = set(columns.values())
    return ManifestRow(
        image=image,
        ref=ref,
        score=parse_float(rec.get(columns["score"]), where),
        group=group,
        distortion=(rec.get(columns.get("distortion", ""), "") or "").strip(),
        extra={k: v or "" for k, v in rec.items() if k not in mapped and k is not None},
    )


def _score_range(located: list[Located], where: str) -> tuple[float, float]:
    scores = [item.row.score for item in located]
    if not scores or min(scores) == max(scores):
        raise ManifestError(f"{where}: cannot infer a score range; pass score_range (--range)")
    return min(scores), max(scores)


def import_csv(
    path: str | os.PathLike[str],
    *,
    name: str,
    columns: Mapping[str, str],
    root: str | os.PathLike[str] | None = None,
    score_kind: str = "MOS",
    lower_better: bool = False,
    score_range: tuple[float, float] | None = None,
    expected: ExpectedLike = None,
) -> Manifest:
    """Import any CSV with a header, mapping its columns onto manifest fields.

    Args:
        path: the CSV file.
        name: dataset key recorded in the manifest.
        columns: manifest field -> CSV column; ``image`` and ``score`` are required,
            ``ref``, ``group`` and ``distortion`` optional. ``group`` defaults to the
            reference's stem (FR) or the image itself (NR).
        root: folder the image and ref paths are relative to (default: the CSV's folder).
        score_kind: ``MOS``, ``DMOS`` or ``pseudo-MOS``.
        lower_better: True when a lower score is better.
        score_range: nominal (low, high); inferred from the data when None.
        expected: (images, refs) or an image count to check, or None.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"label file not found: {path}")
    base = dataset_root(root if root is not None else path.parent)
    located = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        _check_mapping(columns, list(reader.fieldnames or []), f"{path}:1")
        for lineno, rec in enumerate(reader, start=2):
            where = f"{path}:{lineno}"
            located.append(Located(_row(rec, columns, where), where))
    low, high = score_range or _score_range(located, str(path))
    info = DatasetInfo(name, score_kind, lower_better, (low, high), str(base))
    return build_manifest(info, located, as_expected(expected), str(path))
