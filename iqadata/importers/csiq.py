"""CSIQ, from its official release or from the flat copy some training code uses.

The release ships ``csiq.DMOS.xlsx`` (sheet ``all_by_image``, its name matched in any
case, another with ``sheet=``: a few title rows, then a
header row with ``image, dst_idx, dst_type, dst_lev, dmos_std, dmos``, possibly after
empty columns), the references ``src_imgs/<image>.png`` and the distorted images in one
folder per type, ``dst_imgs/<folder>/<image>.<TOKEN>.<level>.png``. The spreadsheet's
type names are not the folder names nor the file-name tokens; :data:`CSIQ_TYPES` maps
them (``noise`` -> ``awgn/`` and ``AWGN``, ``jpeg 2000`` -> ``jpeg2000/`` and
``jpeg2000``, ...). 866 distorted images of 30 references.

The flat copy (``csiq_label.txt`` lines ``<image>.<TOKEN>.<level>.png <dmos>`` and one
folder ``dst_imgs_all/``, as made for hyperIQA and PromptIQA) is read too; which layout
is detected from the label file's suffix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqadata.importers._build import Release, official_release
from iqadata.importers._common import (
    Located,
    cell,
    cell_text,
    header_key,
    parse_float,
    parse_int,
    text_lines,
    xlsx_rows,
)
from iqadata.importers._paths import join_id
from iqadata.manifest import Manifest, ManifestError, ManifestRow

# spreadsheet dst_type -> (folder under dst_imgs/, file-name token, manifest distortion)
CSIQ_TYPES = {
    "noise": ("awgn", "AWGN", "white_noise"),
    "jpeg": ("jpeg", "JPEG", "jpeg"),
    "jpeg 2000": ("jpeg2000", "jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise", "pink_noise"),
    "blur": ("blur", "BLUR", "gaussian_blur"),
    "contrast": ("contrast", "contrast", "contrast_change"),
}
CSIQ_TOKENS = {token.lower(): name for token, name in ((t[1], t[2]) for t in CSIQ_TYPES.values())}
CSIQ_SHEET = "all_by_image"
CSIQ_COLUMNS = ("image", "dst_type", "dst_lev", "dmos")


@official_release("csiq", ["csiq.DMOS.xlsx", "csiq_label.txt"])
def import_csiq(
    release: Release,
    *,
    image_dir: str | None = None,
    ref_dir: str = "src_imgs",
    sheet: str | None = None,
) -> Manifest:
    """CSIQ: 866 distorted images of 30 references, DMOS on 0..1 (lower is better).

    Args:
        root: the release folder.
        label_file: ``csiq.DMOS.xlsx`` (default, official) or ``csiq_label.txt``.
        image_dir: the distorted-image folder: ``dst_imgs`` (its type subfolders) for the
            spreadsheet, ``dst_imgs_all`` for the text file.
        ref_dir: the reference folder.
        sheet: the spreadsheet's sheet (default ``all_by_image``, in any letter case).
        expected: (images, refs) to check, or None.
    """
    label_path = release.label_path
    if label_path.suffix.lower() == ".txt":
        if sheet is not None:
            raise ManifestError(f"{label_path}: a text label file has no sheets (drop --sheet)")
        located = _text_rows(label_path, image_dir or "dst_imgs_all", ref_dir)
    else:
        located = _xlsx_rows(label_path, image_dir or "dst_imgs", ref_dir, sheet or CSIQ_SHEET)
    return release.manifest(located)


def _csiq_row(image: str, ref: str, stem: str, dmos: float, kind: str, level: int) -> ManifestRow:
    return ManifestRow(
        image=image, ref=ref, score=dmos, group=stem, distortion=kind, extra={"level": str(level)}
    )


def _header(
    rows: list[tuple[int, tuple[Any, ...]]], path: Path, sheet: str
) -> tuple[int, dict[str, int]]:
    """Index (in ``rows``) of the header row and the column of each needed name."""
    for k, (_, values) in enumerate(rows):
        keys = [header_key(v) for v in values]
        if all(c in keys for c in CSIQ_COLUMNS):
            return k, {c: keys.index(c) for c in CSIQ_COLUMNS}
    raise ManifestError(f"{path}: sheet {sheet!r}: no header row with columns {CSIQ_COLUMNS}")


def _xlsx_rows(path: Path, image_dir: str, ref_dir: str, sheet: str) -> list[Located]:
    rows = list(xlsx_rows(path, sheet))
    start, col = _header(rows, path, sheet)
    located = []
    for number, values in rows[start + 1 :]:
        where = f"{path}: row {number}"
        stem = cell_text(cell(values, col["image"]))
        if not stem:
            raise ManifestError(f"{where}: empty image name")
        kind = header_key(cell(values, col["dst_type"]))
        if kind not in CSIQ_TYPES:
            raise ManifestError(f"{where}: unknown dst_type {kind!r} (known: {list(CSIQ_TYPES)})")
        folder, token, name = CSIQ_TYPES[kind]
        level = parse_int(cell(values, col["dst_lev"]), where, "dst_lev")
        image = join_id(image_dir, f"{folder}/{stem}.{token}.{level}.png")
        dmos = parse_float(cell(values, col["dmos"]), where, "dmos")
        row = _csiq_row(image, join_id(ref_dir, f"{stem}.png"), stem, dmos, name, level)
        located.append(Located(row, where))
    return located


def _text_rows(path: Path, image_dir: str, ref_dir: str) -> list[Located]:
    located = []
    for lineno, fields in text_lines(path):
        where = f"{path}:{lineno}"
        parts = fields[0].split(".") if len(fields) == 2 else []
        if len(parts) != 4 or not parts[2].isdigit():
            raise ManifestError(
                f"{where}: expected '<ref>.<type>.<level>.png <dmos>', got {fields}"
            )
        kind = CSIQ_TOKENS.get(parts[1].lower(), parts[1].lower())
        ref = join_id(ref_dir, f"{parts[0]}.png")
        row = _csiq_row(
            join_id(image_dir, fields[0]), ref, parts[0], parse_float(fields[1], where), kind,
            int(parts[2]),
        )
        located.append(Located(row, where))
    return located
