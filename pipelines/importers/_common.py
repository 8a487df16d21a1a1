"""Shared helpers for the dataset importers: located rows, label-file readers, checks.

Every importer turns a dataset's official label files into ``(ManifestRow, where)``
pairs, where ``where`` names the label file and line (or entry) the row came from, and
hands them to :func:`build_manifest`, which checks counts and files and fails with a
:class:`~cache.manifest.ManifestError` naming that place. Importers never write files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cache.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow, validate_rows


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


def require_file(root: Path, relative: str | Sequence[str]) -> Path:
    """The first of ``relative`` (one name or alternatives) that exists under ``root``."""
    names = [relative] if isinstance(relative, str) else list(relative)
    for name in names:
        if (root / name).is_file():
            return root / name
    raise ManifestError(f"label file not found: {root / names[0]}")


def parse_float(text: Any, where: str, what: str = "score") -> float:
    """``float(text)``, or a ManifestError naming ``where``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: bad {what} {text!r}") from None
    if not np.isfinite(value):
        raise ManifestError(f"{where}: non-finite {what} {text!r}")
    return value


def text_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank lines of a whitespace-separated label file as (line number, fields)."""
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, line.split()


def load_mat(path: Path, key: str) -> np.ndarray:
    """One variable of a MATLAB .mat file (scipy.io.loadmat)."""
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except (OSError, ValueError, NotImplementedError) as err:
        raise ManifestError(f"{path}: cannot read MATLAB file: {err}") from err
    if key not in data:
        have = sorted(k for k in data if not k.startswith("__"))
        raise ManifestError(f"{path}: no variable {key!r} (have {have})")
    return np.asarray(data[key])


def mat_strings(array: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (as loadmat returns it) as a flat list."""
    if array.dtype.kind == "U":
        return [str(s).strip() for s in array.reshape(-1)]
    return [str(np.asarray(cell).reshape(-1)[0]).strip() for cell in array.reshape(-1)]


def xlsx_rows(path: Path) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, cell values) of the active sheet of an .xlsx file (openpyxl)."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types
        raise ManifestError(f"{path}: cannot read spreadsheet: {err}") from err
    try:
        for number, values in enumerate(book.active.iter_rows(values_only=True), start=1):
            if any(v is not None and str(v).strip() for v in values):
                yield number, tuple(values)
    finally:
        book.close()


def header_index(header: Sequence[Any], wanted: str, where: str) -> int:
    """Column position of ``wanted`` in a header row (case and space insensitive)."""
    keys = [" ".join(str(h or "").split()).lower() for h in header]
    key = " ".join(wanted.split()).lower()
    if key not in keys:
        raise ManifestError(f"{where}: no column {wanted!r} in header {list(header)}")
    return keys.index(key)


def folder_index(folder: Path) -> dict[str, str]:
    """Lower-cased file name -> actual name, for label files whose case differs."""
    if not folder.is_dir():
        raise ManifestError(f"image folder not found: {folder}")
    return {p.name.lower(): p.name for p in folder.iterdir()}


def _check_counts(located: Sequence[Located], expected: Expected | None, where: str) -> None:
    if expected is None:
        return
    n_images = len(located)
    n_refs = len({item.row.ref for item in located if item.row.ref})
    if n_images != expected.images:
        raise ManifestError(f"{where}: expected {expected.images} images, found {n_images}")
    if n_refs != expected.refs:
        raise ManifestError(f"{where}: expected {expected.refs} reference images, found {n_refs}")


def _check_files(root: Path, located: Sequence[Located]) -> None:
    seen: set[str] = set()
    for item in located:
        for kind, rel in (("image", item.row.image), ("reference", item.row.ref)):
            if not rel or rel in seen:
                continue
            if not (root / rel).is_file():
                raise ManifestError(f"{item.where}: {kind} file missing: {root / rel}")
            seen.add(rel)


def build_manifest(
    info: DatasetInfo, located: Sequence[Located], expected: Expected | None, where: str
) -> Manifest:
    """Check counts, files and ids, then assemble the manifest.

    Args:
        info: dataset metadata (``root`` must be the resolved dataset folder).
        located: rows with their label-file places.
        expected: official counts, or None to skip the count check.
        where: the label file, for count errors.

    Raises:
        ManifestError: naming the label file and line or entry of the first problem.
    """
    _check_counts(located, expected, where)
    _check_files(Path(info.root), located)
    seen: dict[str, str] = {}
    for item in located:
        if item.row.image in seen:
            raise ManifestError(
                f"{item.where}: image {item.row.image!r} already listed at {seen[item.row.image]}"
            )
        seen[item.row.image] = item.where
    rows = tuple(item.row for item in located)
    validate_rows(rows, where=where)
    return Manifest(info=info, rows=rows)
