"""Shared helpers for the dataset importers: located rows and label-file readers.

Every importer turns a dataset's official label files into ``(ManifestRow, where)``
pairs, where ``where`` names the label file and physical line (or entry) the row came
from, and hands them to :func:`iqadata.importers._build.build_manifest` (a known
dataset's importer through :meth:`~iqadata.importers._build.Release.manifest`, which adds
the dataset's known labels), which checks ids, files and counts and fails with a
:class:`~iqadata.manifest.ManifestError` naming that place. Importers never write files.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from iqadata.importers._paths import find_file, name_key
from iqadata.manifest import ManifestError, ManifestRow
from iqadata.manifest_base import decode_text


class Expected(NamedTuple):
    """Official counts an import must reproduce (``refs`` 0 for authentic sets)."""

    images: int
    refs: int = 0


ExpectedLike = Expected | tuple[int, int] | int | None


class Located(NamedTuple):
    """A manifest row and the label-file place it came from (``file:line``)."""

    row: ManifestRow
    where: str


def as_expected(value: ExpectedLike) -> Expected | None:
    """Normalise an ``expected`` argument: None, an image count or (images, refs)."""
    if value is None or isinstance(value, Expected):
        return value
    if isinstance(value, int):
        return Expected(value)
    return Expected(*value)


def dataset_root(root: str | os.PathLike[str]) -> Path:
    """The dataset folder, resolved; fails when it is not a directory."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise ManifestError(f"dataset root is not a directory: {path}")
    return path


def find_label(root: Path, given: str | None, defaults: Sequence[str], dataset: str) -> Path:
    """The label file: ``given`` (relative to ``root`` or absolute) or the first default found.

    Names are matched in any letter case and Unicode form (``DMOS.csv``, ``annotations/``).

    Raises:
        ManifestError: naming every file looked for and the option that names another, or
            a name that matches case twins.
    """
    names = [given] if given else list(defaults)
    for name in names:
        found = find_file(root, name, f"{dataset}: label file")
        if found is not None:
            return found
    looked = " or ".join(repr(n) for n in names)
    raise ManifestError(
        f"{dataset}: label file not found under {root}: looked for {looked}; point --root at"
        " the folder of the official release, or name the file with --label-file"
    )


def parse_float(text: Any, where: str, what: str = "score") -> float:
    """``float(text)``, or a ManifestError naming ``where``."""
    if text is None or (isinstance(text, str) and not text.strip()):
        raise ManifestError(f"{where}: empty {what}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: bad {what} {text!r}") from None
    if not np.isfinite(value):
        raise ManifestError(f"{where}: non-finite {what} {text!r}")
    return value


def parse_int(text: Any, where: str, what: str) -> int:
    """An integer cell (``3``, ``3.0``, ``'3'``), or a ManifestError naming ``where``."""
    value = parse_float(text, where, what)
    if value != int(value):
        raise ManifestError(f"{where}: {what} {text!r} is not an integer")
    return int(value)


def text_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines of a whitespace-separated label file as (line number, fields)."""
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, line.split()


def csv_records(path: Path) -> tuple[list[str], Iterator[tuple[str, dict[str, str]]]]:
    """A CSV label file's header and its records as (``file:line``, column -> value).

    Line numbers are physical (blank lines and quoted line breaks counted). A record with
    more or fewer fields than the header is an error, never padded or cut; rows whose
    fields are all empty (spreadsheet padding) are skipped.

    Raises:
        ManifestError: for a missing or duplicated header, a short or long row, bad CSV.
    """
    reader = csv.reader(io.StringIO(decode_text(path), newline=""))
    header = _next_record(reader, path)
    if header is None:
        raise ManifestError(f"{path}:1: empty label file (no header line)")
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or not all(names):
        raise ManifestError(f"{path}:{reader.line_num}: empty or repeated column names {names}")
    return names, _records(reader, names, path)


def _next_record(reader: Any, path: Path) -> list[str] | None:
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return None
        except csv.Error as err:
            raise ManifestError(f"{path}:{reader.line_num}: bad CSV: {err}") from None
        if any(f.strip() for f in fields):
            return list(fields)


def _records(reader: Any, names: list[str], path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    while (fields := _next_record(reader, path)) is not None:
        where = f"{path}:{reader.line_num}"
        if len(fields) != len(names):
            raise ManifestError(
                f"{where}: {len(fields)} fields, but the header has {len(names)}"
                f" ({', '.join(names)})"
            )
        yield where, dict(zip(names, (f.strip() for f in fields), strict=True))


def require_columns(header: Sequence[str], wanted: Sequence[str], path: Path) -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ManifestError(f"{path}:1: missing columns {missing} (have {list(header)})")


def load_mat(path: Path, key: str | Sequence[str]) -> np.ndarray:
    """One variable of a MATLAB .mat file (the first of ``key`` present; scipy.io.loadmat)."""
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except (OSError, ValueError, NotImplementedError, TypeError) as err:
        raise ManifestError(f"{path}: cannot read MATLAB file: {err}") from err
    for name in [key] if isinstance(key, str) else key:
        if name in data:
            return np.asarray(data[name])
    have = sorted(k for k in data if not k.startswith("__"))
    raise ManifestError(f"{path}: no variable {key!r} (have {have})")


def mat_strings(array: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (as loadmat returns it) as a flat list."""
    if array.dtype.kind == "U":
        return [str(s).strip() for s in array.reshape(-1)]
    return [str(np.asarray(cell).reshape(-1)[0]).strip() for cell in array.reshape(-1)]


SheetTest = Callable[[list[tuple[Any, ...]]], bool]


def xlsx_rows(
    path: Path, sheet: str | None = None, fits: SheetTest | None = None
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, cell values) of the non-empty rows of one sheet of an .xlsx file.

    Args:
        path: the workbook.
        sheet: the sheet's name, matched in any letter case; None: the one sheet whose
            first two non-empty rows ``fits`` accepts (any non-empty sheet without
            ``fits``), or else the only sheet with rows. The workbook's active sheet is
            never taken for being active.

    Raises:
        ManifestError: for an unreadable workbook, a sheet not found, or several sheets
            that fit (naming the sheets and ``--sheet``).
    """
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types
        raise ManifestError(f"{path}: cannot read spreadsheet: {err}") from err
    try:
        page = book[_pick_sheet(book, path, sheet, fits)]
        for number, values in enumerate(page.iter_rows(values_only=True), start=1):
            if _filled(values):
                yield number, tuple(values)
    finally:
        book.close()


def _filled(values: Sequence[Any]) -> bool:
    return any(v is not None and str(v).strip() for v in values)


def _head(page: Any, n: int = 2) -> list[tuple[Any, ...]]:
    """The first ``n`` non-empty rows of a sheet."""
    rows: list[tuple[Any, ...]] = []
    for values in page.iter_rows(values_only=True):
        if _filled(values):
            rows.append(tuple(values))
            if len(rows) == n:
                break
    return rows


def _pick_sheet(book: Any, path: Path, sheet: str | None, fits: SheetTest | None) -> str:
    names = list(book.sheetnames)
    if sheet is not None:
        hits = [n for n in names if n == sheet] or [
            n for n in names if name_key(n.strip()) == name_key(sheet.strip())
        ]
        if len(hits) == 1:
            return hits[0]
        raise ManifestError(f"{path}: no sheet {sheet!r} (sheets: {names}); name one with --sheet")
    heads = {n: _head(book[n]) for n in names}
    filled = [n for n in names if heads[n]]
    good = [n for n in filled if fits is None or fits(heads[n])]
    if len(good) == 1:
        return good[0]
    if not good and len(filled) == 1:
        return filled[0]  # the only sheet with rows: its own checks name what is wrong
    if not good:
        raise ManifestError(
            f"{path}: no sheet holds the expected label rows (sheets: {names}); name the"
            " sheet to read with --sheet"
        )
    raise ManifestError(
        f"{path}: sheets {good} all look like label sheets; name the one to read with --sheet"
    )


def is_number(value: Any) -> bool:
    """A spreadsheet cell holding a number (or a numeric string)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def header_key(value: Any) -> str:
    """A header cell compared case and space insensitively."""
    return " ".join(str(value if value is not None else "").split()).lower()


def header_index(header: Sequence[Any], wanted: str, where: str) -> int:
    """Column position of ``wanted`` in a header row (case and space insensitive)."""
    keys = [header_key(h) for h in header]
    if header_key(wanted) not in keys:
        raise ManifestError(f"{where}: no column {wanted!r} in header {list(header)}")
    return keys.index(header_key(wanted))


def cell(values: tuple[Any, ...], column: int) -> Any:
    """``values[column]``, None past the end of a short spreadsheet row."""
    return values[column] if column < len(values) else None


def cell_text(value: Any) -> str:
    """A spreadsheet cell as text: ``1600.0`` -> ``'1600'``, None -> ``''``."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
