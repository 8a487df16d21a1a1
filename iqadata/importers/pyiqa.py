"""pyiqa (IQA-PyTorch) meta-info CSVs, imported as they are, official splits included.

pyiqa's meta files (its ``docs/Dataset_Preparation.md`` and ``data/*_dataset.py``
conventions; none of its code is used) are read by column position:

* no-reference: ``img_name, <label>[, std, ...]``;
* full-reference: ``ref_name`` (``hq_name`` for PIPAL), ``dist_name``, ``<label>[, ...]``.

Every column whose name contains ``split`` (``official_split``,
``ratio802_seed123_split_01``, ...) is a split: its values ``train``, ``val`` and
``test`` (older files: ``0``, ``1``, ``2``) name the part; an empty value leaves the row
out of that split. Each becomes one split file (:mod:`iqadata.manifest` format) keyed by
image id, never by row number, so pyiqa's LIVE Challenge row-offset trap cannot occur.
The split columns also stay in the manifest as extra columns.

A split column that puts one reference (or group) in two parts is refused
(:mod:`iqadata.content`), as every split is where it is read.

Deviation: pyiqa labels the held-out 20 % of its ``ratio802`` splits ``val`` and picks
its best checkpoint on it; the labels are kept as written (so that part is ``val``
here too), and the report on which part a number comes from is left to the user.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from iqadata.content import shared_content, split_parts
from iqadata.importers._common import ExpectedLike, csv_records
from iqadata.importers.generic import ImageFolders, LabelSpec, import_csv
from iqadata.manifest import Manifest, ManifestError, Split, write_split

FR_FIRST = ("ref_name", "hq_name")
SPLIT_VALUES = {
    "train": "train", "training": "train", "0": "train",
    "val": "val", "valid": "val", "validation": "val", "1": "val",
    "test": "test", "testing": "test", "2": "test",
}
_SEED = re.compile(r"seed(\d+)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PyiqaImport:
    """A pyiqa meta file as a manifest plus one split per split column."""

    manifest: Manifest
    splits: dict[str, Split]


def _columns(header: list[str], path: Path) -> tuple[dict[str, str], bool]:
    """Column mapping by pyiqa's positions, and whether the file is full-reference."""
    if len(header) >= 3 and header[0] in FR_FIRST and header[1] == "dist_name":
        return {"ref": header[0], "image": header[1], "score": header[2]}, True
    if len(header) >= 2 and not split_columns(header[:2]):
        return {"image": header[0], "score": header[1]}, False
    raise ManifestError(
        f"{path}:1: not a pyiqa meta-info header {header}: expected 'img_name,<label>,...' or"
        " 'ref_name,dist_name,<label>,...'"
    )


def split_columns(header: list[str]) -> list[str]:
    """The split columns of a pyiqa header (names containing ``split``)."""
    return [h for h in header if "split" in h.lower()]


def column_split(manifest: Manifest, column: str, where: str) -> Split:
    """The split an extra column holds (``train``/``val``/``test`` per row; empty: left out).

    Also used for the official split an official importer keeps as ``official_split``.
    """
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for row in manifest.rows:
        value = row.extra.get(column, "").strip().lower()
        if not value:
            continue
        if value not in SPLIT_VALUES:
            raise ManifestError(
                f"{where}: column {column!r}: value {row.extra[column]!r} of image {row.image!r}"
                " is not train, val or test"
            )
        parts[SPLIT_VALUES[value]].append(row.image)
    n = sum(len(p) for p in parts.values()) or 1
    seed = _SEED.search(column)
    ratios = tuple(round(len(parts[p]) / n, 4) for p in ("train", "val", "test"))
    split = Split(
        tuple(parts["train"]), tuple(parts["val"]), tuple(parts["test"]),
        seed=int(seed.group(1)) if seed else 0, ratios=ratios,
    )
    leak = shared_content(manifest.rows, split_parts(split))
    if leak:
        raise ManifestError(
            f"{where}: split column {column!r}: {leak} (a content leak); nothing was imported:"
            " drop the column or correct its values"
        )
    return split


def import_pyiqa(
    path: str | os.PathLike[str],
    *,
    name: str,
    folders: ImageFolders = ImageFolders(),
    labels: LabelSpec = LabelSpec(),
    expected: ExpectedLike = None,
    not_content: Collection[str] = (),
) -> PyiqaImport:
    """Import a pyiqa meta-info CSV and its split columns.

    Args:
        path: the meta-info CSV (``meta_info_<Dataset>.csv``).
        name: dataset key; a known key (``koniq10k``, ``live``, ...) supplies the labels.
        folders: the dataset folder (``root``); ``image_dir`` and ``ref_dir`` are pyiqa's
            ``dataroot_target`` and ``dataroot_ref`` relative to it.
        labels, not_content: as for :func:`~iqadata.importers.generic.import_csv`.
        expected: counts to check, or None.

    Returns:
        The manifest (split columns kept as extras) and a split per split column, whose
        ``manifest_sha256`` is filled in by :func:`write_pyiqa_splits`.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"label file not found: {path}")
    header, _ = csv_records(path)
    columns, is_fr = _columns(header, path)
    manifest = import_csv(
        path, name=name, columns=columns, folders=folders, labels=labels, expected=expected,
        authentic=not is_fr, not_content=not_content,
    )
    splits = {c: column_split(manifest, c, str(path)) for c in split_columns(header)}
    return PyiqaImport(manifest, splits)


def write_pyiqa_splits(
    splits: dict[str, Split], out_dir: str | os.PathLike[str], manifest_sha256: str
) -> list[Path]:
    """Write each split as ``<column>.json`` in ``out_dir``, recording the manifest's hash."""
    paths = []
    for column, split in splits.items():
        target = Path(out_dir) / f"{_UNSAFE.sub('_', column)}.json"
        write_split(replace(split, manifest_sha256=manifest_sha256), target)
        paths.append(target)
    return paths
