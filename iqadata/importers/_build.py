"""Turn located rows into a checked manifest: one id per file, no leaks, official counts.

:func:`build_manifest` is the last step of every importer. In order it

1. refuses an empty import (a header-only label file);
2. refuses a row listed twice (naming the file and both lines), before any count, since
   a duplicated row is the likelier cause of a count one too high;
3. checks the official image and reference counts; for a known dataset the error says
   where the expected count comes from and which other published count a copy matches;
4. normalises every image and reference path (:func:`~._paths.normalise_id`: no absolute
   paths, nothing outside the root) and finds each file in its on-disk letter case and
   Unicode form; a name matching case twins is reported as ambiguous, not missing;
5. refuses an image listed under two spellings of one file and a reference image that
   is also listed as a distorted row (it would sit in train and test at once);
6. merges group ids that differ only in letter case or Unicode form (``I01`` and
   ``i01`` are one content);
7. refuses a reference or prompt group whose images are in two groups (a split by those
   groups would put it in two parts; :func:`iqadata.content.key_in_two_groups`).
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from iqadata.content import Key, key_in_two_groups
from iqadata.importers._common import Expected, ExpectedLike, Located, as_expected
from iqadata.importers._paths import DiskIndex, ambiguous, name_key, normalise_id
from iqadata.importers.known import KNOWN
from iqadata.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow, validate_rows


def _on_disk(index: DiskIndex, raw: str, kind: str, where: str) -> str:
    rel = normalise_id(raw, where, kind)
    actual = index.resolve(rel)
    if actual is None:
        twins = index.twins(rel)
        if twins:
            raise ManifestError(f"{where}: {ambiguous(index.root, rel, twins, kind)}")
        raise ManifestError(f"{where}: {kind} file missing (any case): {index.root / rel}")
    return actual


def _resolved(index: DiskIndex, item: Located, refs: dict[str, str]) -> Located:
    """The row with its image and reference ids as found on disk."""
    row, where = item.row, item.where
    image = _on_disk(index, row.image, "image", where)
    ref = ""
    if row.ref:
        if row.ref not in refs:
            refs[row.ref] = _on_disk(index, row.ref, "reference", where)
        ref = refs[row.ref]
    group = image if row.group == row.image else row.group  # an image that is its own group
    group = ref if row.ref and row.group == row.ref else group  # grouped by its reference
    resolved = ManifestRow(image, row.score, group, ref, row.distortion, row.extra)
    return Located(resolved, where)


def _check_counts(
    located: Sequence[Located], expected: Expected | None, where: str, name: str
) -> None:
    if expected is None:
        return
    n_images = len(located)
    n_refs = len({_spelling(item.row.ref) for item in located if item.row.ref})
    if n_images != expected.images:
        known = KNOWN.get(name)
        source = (
            known.count_note(n_images)
            if known is not None and known.expected == expected
            else "the count asked for"
        )
        raise ManifestError(
            f"{where}: expected {expected.images} images, found {n_images} ({source};"
            " --no-count-check imports a partial or extended copy)"
        )
    if n_refs != expected.refs:
        raise ManifestError(f"{where}: expected {expected.refs} reference images, found {n_refs}")


def _spelling(path: str) -> str:
    """One key for the spellings of a path (for counting before the files are found)."""
    return name_key(posixpath.normpath(path.replace("\\", "/")))


def _check_listed_once(located: Sequence[Located]) -> None:
    """Refuse a row whose image path is spelled exactly as an earlier row's."""
    seen: dict[str, str] = {}
    for item in located:
        key = unicodedata.normalize("NFC", posixpath.normpath(item.row.image.replace("\\", "/")))
        if key in seen:
            raise ManifestError(
                f"{item.where}: image {item.row.image!r} already listed at {seen[key]} (a"
                " duplicate row: each image must be listed once)"
            )
        seen[key] = item.where


def _check_unique(located: Sequence[Located]) -> None:
    seen: dict[str, str] = {}
    for item in located:
        if item.row.image in seen:
            raise ManifestError(
                f"{item.where}: image {item.row.image!r} already listed at {seen[item.row.image]}"
            )
        seen[item.row.image] = item.where
    refs = {item.row.ref: item.where for item in located if item.row.ref}
    for item in located:
        if item.row.image in refs:
            raise ManifestError(
                f"{item.where}: {item.row.image!r} is a reference image (of the row at"
                f" {refs[item.row.image]}) but is also listed as a distorted image; a reference"
                " must not be a row of its own (drop that row)"
            )


def _merge_groups(rows: Sequence[ManifestRow]) -> tuple[ManifestRow, ...]:
    first: dict[str, str] = {}
    merged = []
    for row in rows:
        group = first.setdefault(name_key(row.group), row.group)
        merged.append(row if group == row.group else replace(row, group=group))
    return tuple(merged)


def build_manifest(
    info: DatasetInfo, located: Sequence[Located], expected: Expected | None, where: str
) -> Manifest:
    """Check ids, files, counts and leaks, then assemble the manifest.

    Args:
        info: dataset metadata (``root`` must be the resolved dataset folder).
        located: rows with their label-file places; paths as the label file spells them.
        expected: official counts, or None to skip the count check.
        where: the label file, for errors that concern the whole file.

    Raises:
        ManifestError: naming the label file and line or entry of the first problem.
    """
    if not located:
        raise ManifestError(f"{where}: no image rows (only a header, or an empty file)")
    index = DiskIndex(Path(info.root))
    refs: dict[str, str] = {}  # reference as labelled -> on disk
    _check_listed_once(located)
    _check_counts(located, expected, where, info.name)
    resolved = [_resolved(index, item, refs) for item in located]
    _check_unique(resolved)
    rows = _merge_groups([item.row for item in resolved])
    validate_rows(rows, where=where)
    check_groups(rows, [item.where for item in resolved])
    return Manifest(info=info, rows=rows)


def check_groups(
    rows: Sequence[ManifestRow], wheres: Sequence[str], key: Key | None = None
) -> None:
    """Refuse a reference or prompt group (or ``key``'s value) whose rows are in two groups.

    Args:
        rows: the manifest rows, in label-file order.
        wheres: the label-file place of each row.
        key: ``(name, row -> value)`` to check instead of the reference and prompt group.
    """
    found = key_in_two_groups(rows, [key]) if key else key_in_two_groups(rows)
    if found is None:
        return
    what, value, first, second = found
    raise ManifestError(
        f"{wheres[second]}: {what} {value!r} is in group {rows[second].group!r} here but in"
        f" group {rows[first].group!r} at {wheres[first]}: its images must share one group, or"
        " a split would put it in two parts (map group= to a column that keeps them"
        " together, or leave group= unmapped to group by reference or prompt)"
    )


def official_manifest(
    name: str,
    base: Path,
    located: Sequence[Located],
    expected: ExpectedLike,
    where: Path,
    score_range: tuple[float, float] | None = None,
) -> Manifest:
    """:func:`build_manifest` with the known labels of dataset ``name`` rooted at ``base``."""
    info = KNOWN[name].info(name, str(base), score_range)
    return build_manifest(info, located, as_expected(expected), str(where))
