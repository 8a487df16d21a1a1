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

The importers of the known datasets share one frame: :class:`Release` (the dataset key,
its resolved folder, its label file and the counts to check), whose
:meth:`Release.manifest` runs :func:`build_manifest` with the dataset's known labels, and
:func:`official_release`, which makes the public ``import_x(root, *, label_file=...,
<layout options>, expected=...)`` from a function that reads a located release.
"""

from __future__ import annotations

import functools
import inspect
import os
import posixpath
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iqadata.content import Key, key_in_two_groups
from iqadata.importers._common import (
    Expected,
    ExpectedLike,
    Located,
    as_expected,
    dataset_root,
    find_label,
)
from iqadata.importers._paths import DiskIndex, ambiguous, name_key, normalise_id
from iqadata.importers.known import KNOWN
from iqadata.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow, validate_rows

_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
_KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY


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


@dataclass(frozen=True)
class Release:
    """The official release of a known dataset that an importer reads.

    Attributes:
        key: the dataset's key in :data:`~iqadata.importers.known.KNOWN`.
        base: the dataset folder, resolved.
        label_path: the label file (or folder of label files) found under ``base``.
        expected: the counts to check (:func:`~._common.as_expected`), or None.
    """

    key: str
    base: Path
    label_path: Path
    expected: ExpectedLike

    @classmethod
    def locate(
        cls,
        key: str,
        root: str | os.PathLike[str],
        label_file: str | None,
        label_names: Sequence[str],
        expected: ExpectedLike,
        title: str | None = None,
    ) -> Release:
        """The release under ``root``: its label file is ``label_file``, or the first of
        ``label_names`` found (:func:`~._common.find_label`; errors name ``title``, by
        default the dataset's known title).

        Raises:
            ManifestError: for a root that is no folder or a label file not found.
        """
        base = dataset_root(root)
        label_path = find_label(base, label_file, label_names, title or KNOWN[key].title)
        return cls(key, base, label_path, expected)

    def manifest(
        self, located: Sequence[Located], score_range: tuple[float, float] | None = None
    ) -> Manifest:
        """:func:`build_manifest` with the dataset's known labels, rooted at ``base``
        (``score_range`` overrides the known range); whole-file errors name the label file."""
        info = KNOWN[self.key].info(self.key, str(self.base), score_range)
        return build_manifest(info, located, as_expected(self.expected), str(self.label_path))


Reader = Callable[..., Manifest]
"""``read(release, *, <layout options>)``: the manifest of a located :class:`Release`."""


def official_release(
    key: str, label_names: Sequence[str], title: str | None = None
) -> Callable[[Reader], Callable[..., Manifest]]:
    """Make the public importer of dataset ``key`` from the function it decorates.

    The decorated ``read(release, *, <layout options>)`` reads a :class:`Release`; the
    importer built from it is ``import_x(root, *, label_file=None, <read's layout options>,
    expected=KNOWN[key].expected)``. It refuses an option ``read`` does not take (a
    TypeError naming the options it does take, before any file is looked at), locates
    the release (:meth:`Release.locate` with ``label_names`` and ``title``) and returns
    ``read(release, **options)``. It has ``read``'s name and docstring, and that signature
    and its annotations, so ``inspect.signature`` (which the CLI asks for the layout
    options a dataset takes) shows what it accepts.

    Raises:
        TypeError: at decoration, when ``read`` takes anything but a release and keyword
            options, or an option named like the importer's own (``root``,
            ``label_file``, ``expected``).
    """

    def build(read: Reader) -> Callable[..., Manifest]:
        params = list(inspect.signature(read).parameters.values())
        options = params[1:]
        reserved = ("root", "label_file", "expected")
        if not params or params[0].kind not in (_POSITIONAL, _POSITIONAL_ONLY) or any(
            p.kind is not _KEYWORD_ONLY or p.name in reserved for p in options
        ):
            raise TypeError(
                f"{read.__name__}: an official-release reader takes (release, *, options),"
                f" none of them named {', '.join(reserved)}"
            )
        accepted = [p.name for p in options]

        def importer(
            root: str | os.PathLike[str],
            *,
            label_file: str | None = None,
            expected: ExpectedLike = KNOWN[key].expected,
            **layout: Any,
        ) -> Manifest:
            unknown = [name for name in layout if name not in accepted]
            if unknown:
                takes = ", ".join(accepted) or "none"
                raise TypeError(
                    f"{read.__name__}() got an unexpected keyword argument {unknown[0]!r}"
                    f" (its layout options: {takes})"
                )
            release = Release.locate(key, root, label_file, label_names, expected, title)
            return read(release, **layout)

        own = inspect.signature(importer, eval_str=True)  # before it wraps ``read``
        root, label_file, expected = (own.parameters[name] for name in reserved)
        signature = own.replace(parameters=[root, label_file, *options, expected])
        functools.update_wrapper(
            importer, read, assigned=("__module__", "__name__", "__qualname__", "__doc__")
        )
        importer.__signature__ = signature  # type: ignore[attr-defined]
        importer.__annotations__ = {
            **{p.name: p.annotation for p in signature.parameters.values()},
            "return": signature.return_annotation,
        }
        return importer

    return build

