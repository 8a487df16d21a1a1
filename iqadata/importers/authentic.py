"""Importers for the authentic-distortion (no-reference) photo sets.

KonIQ-10k, SPAQ, LIVE Challenge, BID and FLIVE (LIVE-FB / PaQ-2-PiQ). Label-file layouts
follow the official downloads (as also read by hyperIQA, PromptIQA and DP-IQA loaders; no
code taken). Each image is its own ``group``; ``ref`` is empty.

Deviations, on purpose:

* KonIQ-10k ships two label files. ``koniq10k_scores_and_distributions.csv`` (database
  site) has ``MOS`` on the 1-5 rating scale and ``MOS_zscore`` on 0-100;
  ``koniq10k_distributions_sets.csv`` (code repository) has ``MOS`` on 0-100 and the
  official ``set``. The 0-100 score is used from either (``MOS_zscore``, or ``MOS`` when
  its values exceed 5), so both files give the same manifest; a file with only a 1-5
  ``MOS`` is imported on 1..5. The raw 1-5 MOS is kept as ``mos_1to5``, the official
  ``set`` as ``official_split`` (train / val / test), never used to drop rows.
* LIVE Challenge drops its 7 training images by name (``t*``), not by position, so a
  reordered copy cannot shift labels (pyiqa's row-offset trap).
* FLIVE is read from ``labels_image.csv`` (39,810 whole images); the patch labels are
  not imported (a patch and its image in different parts would leak content). Its
  official split, when its files sit beside ``labels_image.csv``, is kept as
  ``official_split``: test = the images of ``labels640.csv`` (column ``name_image``),
  val = the rows of ``labels=640_padded.csv`` whose ``is_valid`` is true, train = every
  other image, as pyiqa's ``scripts/process_flive.py`` assigns them (no code taken).
  ``labels640.csv`` was compared with the PaQ-2-PiQ repository's copy (1,827 images,
  all in ``labels_image.csv``); the layout of ``labels=640_padded.csv`` (``name_image``,
  ``is_valid``) is the one pyiqa's script and the PaQ-2-PiQ code read, not checked here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from iqadata.importers._build import Release, official_release
from iqadata.importers._common import (
    Located,
    cell,
    cell_text,
    csv_records,
    find_label,
    header_index,
    header_key,
    is_number,
    load_mat,
    mat_strings,
    parse_float,
    parse_int,
    require_columns,
    xlsx_rows,
)
from iqadata.importers._paths import find_file, join_id, name_key
from iqadata.manifest import Manifest, ManifestError, ManifestRow

KONIQ_FILES = ("koniq10k_distributions_sets.csv", "koniq10k_scores_and_distributions.csv")
KONIQ_SETS = {"training": "train", "validation": "val", "test": "test"}
SPAQ_FILES = (
    "Annotations/MOS and Image attribute scores.xlsx",
    "Annotations/MOS_and_Image_attribute_scores.xlsx",
)
SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
FLIVE_FILES = ("labels_image.csv", "database/labels_image.csv")
FLIVE_TEST = ("labels640.csv", "labels_640.csv", "labels>640.csv")
FLIVE_VAL = ("labels=640_padded.csv", "labels<=640_padded.csv")
TRUE_FALSE = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def authentic_row(image: str, score: float, **extra: str) -> ManifestRow:
    """A no-reference row: the image is its own content group."""
    return ManifestRow(image=image, score=score, group=image, extra=extra)


@official_release("koniq10k", KONIQ_FILES)
def import_koniq10k(release: Release, *, image_dir: str = "1024x768") -> Manifest:
    """KonIQ-10k from either official label file; 10,073 images (see the module notes)."""
    header, records = csv_records(release.label_path)
    require_columns(header, ("image_name", "MOS"), release.label_path)
    score_col = "MOS_zscore" if "MOS_zscore" in header else "MOS"
    located = []
    for where, rec in records:
        extra = {"sd": rec.get("SD", "")}
        if score_col != "MOS":
            extra["mos_1to5"] = rec["MOS"]
        if rec.get("set"):
            extra["official_split"] = KONIQ_SETS.get(rec["set"], rec["set"])
        row = authentic_row(
            join_id(image_dir, rec["image_name"]), parse_float(rec[score_col], where), **extra
        )
        located.append(Located(row, where))
    top = max((item.row.score for item in located), default=0.0)
    low_high = (1.0, 5.0) if score_col == "MOS" and top <= 5.0 else (0.0, 100.0)
    return release.manifest(located, low_high)


@official_release("spaq", SPAQ_FILES)
def import_spaq(
    release: Release, *, image_dir: str = "TestImage", sheet: str | None = None
) -> Manifest:
    """SPAQ: xlsx ``Image name, MOS, Brightness, ...``; 11,125 images, MOS 0-100.

    The five attribute scores are kept as lower-case extra columns. The sheet read is
    ``sheet`` (any case), or the one whose first row has ``Image name`` and ``MOS``.
    """
    label_path = release.label_path
    rows = xlsx_rows(label_path, sheet, _spaq_sheet)
    _, header = next(rows, (1, ()))
    name_col = header_index(header, "Image name", f"{label_path}: row 1")
    mos_col = header_index(header, "MOS", f"{label_path}: row 1")
    keys = [header_key(h) for h in header]
    attr_cols = {a.lower(): keys.index(a.lower()) for a in SPAQ_ATTRIBUTES if a.lower() in keys}
    located = []
    for number, values in rows:
        where = f"{label_path}: row {number}"
        name = cell_text(cell(values, name_col))
        if not name:
            raise ManifestError(f"{where}: empty image name")
        extra = {k: cell_text(cell(values, c)) for k, c in attr_cols.items()}
        score = parse_float(cell(values, mos_col), where)
        located.append(Located(authentic_row(join_id(image_dir, name), score, **extra), where))
    return release.manifest(located)


def _spaq_sheet(head: list[tuple[Any, ...]]) -> bool:
    keys = [header_key(h) for h in head[0]]
    return "image name" in keys and "mos" in keys


def _numbered_sheet(head: list[tuple[Any, ...]]) -> bool:
    """A header row, then a row that starts with a number (an image number)."""
    return len(head) == 2 and is_number(cell(head[1], 0))


@official_release("livec", ["Data/AllMOS_release.mat"])
def import_livec(release: Release, *, image_dir: str = "Images") -> Manifest:
    """LIVE Challenge: ``Data/AllMOS_release.mat`` + ``AllImages_release.mat``; 1,162.

    ``label_file`` names the MOS file; the image names are read from
    ``AllImages_release.mat`` in the same folder. The 7 training images (names starting
    with ``t``) are dropped.
    """
    mos_path = release.label_path
    names_path = find_label(mos_path.parent, None, ["AllImages_release.mat"], "LIVE Challenge")
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
        row = authentic_row(join_id(image_dir, name), parse_float(score, where))
        located.append(Located(row, where))
    return release.manifest(located)


@official_release("bid", ["DatabaseGrades.xlsx"])
def import_bid(release: Release, *, image_dir: str = "", sheet: str | None = None) -> Manifest:
    """BID: xlsx rows ``(image number, MOS)`` after a header -> ``DatabaseImage%04d.JPG``.

    MOS is on 0-5 (higher = better). ``image_dir`` is ``ImageDatabase`` for copies that
    keep the images in that subfolder. ``sheet`` as for :func:`numbered_rows`.
    """
    located = numbered_rows(
        release.label_path, lambda n: join_id(image_dir, f"DatabaseImage{n:04d}.JPG"), sheet
    )
    return release.manifest(located)


def numbered_rows(
    path: Path, image_of: Callable[[int], str], sheet: str | None = None
) -> list[Located]:
    """Rows of a spreadsheet of ``(image number, MOS)`` after a header line.

    The sheet read is ``sheet`` (any case), or the one sheet whose second row starts
    with a number (empty sheets and notes are passed over; never the active one unasked).
    """
    rows = xlsx_rows(path, sheet, _numbered_sheet)
    next(rows, None)  # header row
    located = []
    for number, values in rows:
        where = f"{path}: row {number}"
        if cell(values, 1) is None:
            raise ManifestError(f"{where}: expected (image number, MOS), got {values}")
        image = image_of(parse_int(values[0], where, "image number"))
        located.append(Located(authentic_row(image, parse_float(values[1], where)), where))
    return located


@official_release("flive", FLIVE_FILES, "FLIVE")
def import_flive(release: Release, *, image_dir: str | None = None) -> Manifest:
    """FLIVE (LIVE-FB): ``labels_image.csv`` with ``name,mos``; 39,810 images, MOS 0-100.

    Names are paths such as ``voc_emotic_ava/AVA__2884.jpg``, relative to the folder of
    the label file (``image_dir`` overrides that folder). The official split, when its
    two files sit beside the label file, becomes the extra column ``official_split``.
    """
    label_path = release.label_path
    folder = image_dir if image_dir is not None else _relative_folder(label_path, release.base)
    header, records = csv_records(label_path)
    require_columns(header, ("name", "mos"), label_path)
    rows = list(records)
    parts = _flive_parts(label_path, {_name(rec["name"]) for _, rec in rows})
    located = []
    for where, rec in rows:
        extra = {"official_split": parts.get(_name(rec["name"]), "train")} if parts else {}
        row = authentic_row(
            join_id(folder, rec["name"]), parse_float(rec["mos"], where), **extra
        )
        located.append(Located(row, where))
    return release.manifest(located)


def _name(text: str) -> str:
    return name_key(posixpath.normpath(text.strip().replace("\\", "/")))


def _flive_parts(label_path: Path, names: set[str]) -> dict[str, str] | None:
    """Image name key -> part from FLIVE's split files beside the label file, or None.

    Raises:
        ManifestError: for only one of the two files, a name not in the label file, or
            an image listed in two parts.
    """
    folder = label_path.parent
    test = next((f for n in FLIVE_TEST if (f := find_file(folder, n)) is not None), None)
    val = next((f for n in FLIVE_VAL if (f := find_file(folder, n)) is not None), None)
    if test is None and val is None:
        return None
    if test is None or val is None:
        missing = FLIVE_TEST[0] if test is None else FLIVE_VAL[0]
        raise ManifestError(
            f"{test or val}: FLIVE's official split needs {missing} beside it too (in"
            f" {folder}); add it, or move this file away to import without the split"
        )
    parts: dict[str, str] = {}
    seen: dict[str, str] = {}
    for where, name, part in _flive_split_rows(test, val):
        key = _name(name)
        if key not in names:
            raise ManifestError(f"{where}: {name!r} is not an image of {label_path}")
        if key in parts:
            raise ManifestError(
                f"{where}: {name!r} is in the {part} part and in the {parts[key]} part"
                f" ({seen[key]}); the official split must list each image once"
            )
        parts[key], seen[key] = part, where
    return parts


def _flive_split_rows(test: Path, val: Path) -> Iterator[tuple[str, str, str]]:
    """(where, image name, part) of every row of the test file and of the val file.

    The val file lists the train and val images (``is_valid`` false or true).
    """
    header, records = csv_records(test)
    require_columns(header, ("name_image",), test)
    for where, rec in records:
        yield where, rec["name_image"], "test"
    header, records = csv_records(val)
    require_columns(header, ("name_image", "is_valid"), val)
    for where, rec in records:
        flag = TRUE_FALSE.get(rec["is_valid"].strip().lower())
        if flag is None:
            raise ManifestError(f"{where}: is_valid {rec['is_valid']!r} is not True or False")
        yield where, rec["name_image"], "val" if flag else "train"


def _relative_folder(path: Path, base: Path) -> str:
    """The label file's folder relative to the root ('' for the root or a folder outside)."""
    try:
        rel = path.parent.resolve().relative_to(base).as_posix()
    except ValueError:
        return ""
    return "" if rel == "." else rel
