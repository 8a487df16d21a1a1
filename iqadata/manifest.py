"""Dataset manifests and split files: the dataset description that both stages read.

A manifest is one CSV per dataset. Metadata sits in ``# key: value`` comment lines at the
top, so the file is self-describing and a single DVC dependency::

    # iqa-manifest: 1
    # name: kadid10k
    # score_kind: MOS
    # lower_better: false
    # score_range: 1,5
    # root: /data/kadid10k
    image,ref,score,group,distortion
    images/I01_01_01.png,images/I01.png,4.57,I01,gaussian_blur

``image`` (the path relative to ``root``) is the row's identity everywhere: stores key
features by it and split files list it. ``ref`` is empty for authentic (NR) datasets.
``group`` is the content id used to make content-disjoint splits; an AI-generated set's
``prompt_group`` column names the prompt each image was rendered from, and a ``# groups:``
line says how an importer made groups by another rule (:mod:`iqadata.content`). A relative
``root`` is resolved against the manifest's own folder.

A split file is JSON: ``{"train": [...], "val": [...], "test": [...], "seed": 0,
"ratios": [...], "manifest_sha256": "..."}`` listing image ids, never row numbers. A split
is only used with the manifest whose sha256 it records (:meth:`Split.check_against`).

Both readers turn every defect of a file (bad bytes, garbled CSV or JSON, wrong fields)
into a :class:`ManifestError` whose message starts with ``<file>:<line>:``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from iqadata.manifest_base import (
    ManifestError,
    atomic_write_text,
    decode_text,
    file_sha256,
    files_sha256,
)
from iqadata.split_file import (
    PARTS,
    Split,
    UncheckedSplitWarning,
    read_split,
    split_files,
    write_split,
)

FORMAT_VERSION = "1"
SCORE_KINDS = ("MOS", "DMOS", "pseudo-MOS")
REQUIRED_COLUMNS = ("image", "ref", "score", "group", "distortion")


@dataclass(frozen=True)
class DatasetInfo:
    """Dataset-level metadata carried in a manifest's header.

    Attributes:
        name: dataset key, lower case (``kadid10k``).
        score_kind: ``MOS``, ``DMOS`` or ``pseudo-MOS``.
        lower_better: True when a lower score means better quality (DMOS sets).
        score_range: nominal (low, high) of the raw score.
        root: folder the ``image`` and ``ref`` paths are relative to.
        groups: how the importer made the groups, when it is not the plain rule (the
            reference, or the image); written as a ``# groups:`` header line.
    """

    name: str
    score_kind: str = "MOS"
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    root: str = "."
    groups: str = ""

    def __post_init__(self) -> None:
        if self.score_kind not in SCORE_KINDS:
            raise ManifestError(f"score_kind must be one of {SCORE_KINDS}, got {self.score_kind!r}")
        low, high = self.score_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ManifestError(
                f"score_range must be finite (low, high) with low < high, got {self.score_range}"
            )


@dataclass(frozen=True)
class ManifestRow:
    """One distorted (or authentic) image and its label."""

    image: str
    score: float
    group: str
    ref: str = ""
    distortion: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Manifest:
    """A dataset: metadata plus one row per labelled image."""

    info: DatasetInfo
    rows: tuple[ManifestRow, ...]
    path: Path | None = None

    @property
    def is_fr(self) -> bool:
        """True when the dataset has reference images (full-reference)."""
        return any(r.ref for r in self.rows)

    @property
    def root(self) -> Path:
        """The dataset root, resolved against the manifest's folder when relative."""
        root = Path(self.info.root)
        if not root.is_absolute() and self.path is not None:
            root = self.path.parent / root
        return root

    @property
    def image_ids(self) -> list[str]:
        return [r.image for r in self.rows]

    @property
    def ref_ids(self) -> list[str]:
        """Unique reference ids in first-seen order."""
        return list(dict.fromkeys(r.ref for r in self.rows if r.ref))

    def resolve(self, image_id: str) -> Path:
        """Absolute path of an image or reference id."""
        return self.root / image_id

    def by_id(self) -> dict[str, ManifestRow]:
        return {r.image: r for r in self.rows}

    def scores(self, ids: Sequence[str] | None = None) -> list[float]:
        """Raw scores of ``ids`` (all rows when None)."""
        if ids is None:
            return [r.score for r in self.rows]
        table = self.by_id()
        return [table[i].score for i in ids]

    def sha256(self) -> str:
        """sha256 of the manifest file (or of its CSV text when it was never written)."""
        if self.path is not None and Path(self.path).is_file():
            return file_sha256(self.path)
        return hashlib.sha256(manifest_text(self).encode("utf-8")).hexdigest()


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` cannot be an id (absolute, escaping the root, unnormalised), or None."""
    if not image_id:
        return "an empty path"
    if image_id.startswith("/") or "\\" in image_id or image_id[1:2] == ":":
        return f"{image_id!r} is absolute or not a '/'-separated path; ids are relative to root"
    normal = posixpath.normpath(image_id)
    if normal == ".." or normal.startswith("../"):
        return f"{image_id!r} escapes the dataset root"
    if normal != image_id:
        return f"{image_id!r} is not normalised (it names {normal!r})"
    return None


def _header_lines(info: DatasetInfo) -> list[str]:
    low, high = info.score_range
    return [
        f"# iqa-manifest: {FORMAT_VERSION}",
        f"# name: {info.name}",
        f"# score_kind: {info.score_kind}",
        f"# lower_better: {str(info.lower_better).lower()}",
        f"# score_range: {low:g},{high:g}",
        f"# root: {info.root}",
    ] + ([f"# groups: {' '.join(info.groups.split())}"] if info.groups else [])


def manifest_text(manifest: Manifest) -> str:
    """Serialise a manifest to its CSV text (header comments included)."""
    extra_cols = sorted({k for r in manifest.rows for k in r.extra})
    buf = io.StringIO()
    buf.write("\n".join(_header_lines(manifest.info)) + "\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*REQUIRED_COLUMNS, *extra_cols])
    for r in manifest.rows:
        extra = [r.extra.get(k, "") for k in extra_cols]
        writer.writerow([r.image, r.ref, repr(float(r.score)), r.group, r.distortion, *extra])
    return buf.getvalue()


def manifest_digest(manifest: Manifest) -> str:
    """sha256 of the manifest file (or of its CSV text when it was never written)."""
    return manifest.sha256()


def with_file_hashes(manifest: Manifest) -> Manifest:
    """The manifest with each row's image and reference file sha256 (``sha256``,
    ``ref_sha256`` columns).

    A manifest that names its files' contents changes when an image does, so a pipeline
    that depends on the manifest (DVC) reruns what reads the images, and a store's rows
    can be matched to the bytes they were computed from.

    Raises:
        ManifestError: a file that cannot be read, naming it.
    """
    ids = sorted({i for r in manifest.rows for i in (r.image, r.ref) if i})
    try:
        digests = dict(zip(ids, files_sha256([manifest.resolve(i) for i in ids]), strict=True))
    except OSError as err:
        raise ManifestError(f"cannot read {err.filename} to hash it: {err.strerror}") from err
    rows = tuple(
        replace(r, extra={**r.extra, "sha256": digests[r.image],
                          **({"ref_sha256": digests[r.ref]} if r.ref else {})})
        for r in manifest.rows
    )
    return replace(manifest, rows=rows)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> None:
    """Validate and write a manifest atomically (a failed check writes nothing)."""
    validate_rows(manifest.rows, where=str(path))
    atomic_write_text(path, manifest_text(manifest))


def write_hashed_manifest(
    info: DatasetInfo, rows: Sequence[ManifestRow], folder: str | os.PathLike[str]
) -> Manifest:
    """Write ``folder/manifest.csv`` of ``rows`` (relative to ``folder``) with their files'
    sha256 (:func:`with_file_hashes`) and return it as read back."""
    path = Path(folder) / "manifest.csv"
    write_manifest(with_file_hashes(Manifest(info=info, rows=tuple(rows), path=path)), path)
    return read_manifest(path)


def _row_problem(r: ManifestRow, seen: set[str]) -> str | None:
    problem = id_problem(r.image)
    if problem:
        return f"image path is {problem}" if problem == "an empty path" else problem
    if r.image in seen:
        return f"image {r.image!r} appears twice"
    if r.ref and id_problem(r.ref):
        return f"reference {id_problem(r.ref)}"
    if not math.isfinite(r.score):
        return f"image {r.image!r} has a non-finite score {r.score}"
    if not r.group:
        return f"image {r.image!r} has an empty group"
    return None


def validate_rows(rows: Iterable[ManifestRow], where: str = "manifest") -> None:
    """Check ids are unique, relative and normalised, scores finite and groups set."""
    seen: set[str] = set()
    for i, r in enumerate(rows):
        problem = _row_problem(r, seen)
        if problem:
            raise ManifestError(f"{where}: row {i + 1}: {problem}")
        seen.add(r.image)


# ---------------------------------------------------------------- reading a manifest


def _comment_lines(fh: io.StringIO) -> list[str]:
    """The leading ``#`` lines; ``fh`` is left at the first other line."""
    lines: list[str] = []
    while True:
        pos = fh.tell()
        line = fh.readline()
        if not line.startswith("#"):
            fh.seek(pos)
            return lines
        lines.append(line.rstrip("\r\n"))


def _score_range(text: str, where: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ManifestError(f"{where}: bad score_range {text!r} (want LOW,HIGH with LOW < HIGH)")
    return low, high


def _parse_header(lines: list[str], path: Path) -> DatasetInfo:
    meta: dict[str, tuple[str, str]] = {}  # key -> (value, "file:line")
    for lineno, text in enumerate(lines, start=1):
        key, sep, value = text.lstrip("#").partition(":")
        if sep:
            meta.setdefault(key.strip(), (value.strip(), f"{path}:{lineno}"))
    if meta.get("iqa-manifest", ("", ""))[0] != FORMAT_VERSION or "name" not in meta:
        raise ManifestError(
            f"{path}:1: not an iqa manifest (first line must be '# iqa-manifest: {FORMAT_VERSION}'"
            " and a '# name:' line must follow); convert label files with 'iqa-data import'"
        )
    low_high = _score_range(*meta.get("score_range", ("0,1", f"{path}:1")))
    kind, where = meta.get("score_kind", ("MOS", f"{path}:1"))
    if kind not in SCORE_KINDS:
        raise ManifestError(f"{where}: score_kind must be one of {SCORE_KINDS}")
    lower, where = meta.get("lower_better", ("false", f"{path}:1"))
    if lower.lower() not in ("true", "false"):
        raise ManifestError(f"{where}: lower_better must be true or false")
    root = meta.get("root", (".", ""))[0]
    groups = meta.get("groups", ("", ""))[0]
    return DatasetInfo(meta["name"][0], kind, lower.lower() == "true", low_high, root, groups)


def _records(fh: io.StringIO, first_line: int, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records as (physical line number, fields); csv errors become lines."""
    reader = csv.reader(fh)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise ManifestError(f"{path}:{first_line + reader.line_num}: bad CSV: {err}") from None
        if fields:
            yield first_line + reader.line_num, fields


def _columns(records: Iterator[tuple[int, list[str]]], path: Path) -> tuple[int, list[str]]:
    try:
        lineno, columns = next(records)
    except StopIteration:
        raise ManifestError(f"{path}:1: no column header line after the comments") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"{path}:{lineno}: missing columns {missing} (have {columns})")
    if len(set(columns)) != len(columns):
        raise ManifestError(f"{path}:{lineno}: a column name appears twice in {columns}")
    return lineno, columns


def _manifest_row(fields: list[str], columns: list[str], where: str) -> ManifestRow:
    if len(fields) != len(columns):
        raise ManifestError(f"{where}: {len(fields)} fields, the header has {len(columns)}")
    rec = dict(zip(columns, fields, strict=True))
    try:
        score = float(rec["score"])
    except ValueError:
        raise ManifestError(f"{where}: bad score {rec['score']!r}") from None
    extra = {k: v for k, v in rec.items() if k not in REQUIRED_COLUMNS}
    return ManifestRow(
        image=rec["image"], ref=rec["ref"], score=score, group=rec["group"],
        distortion=rec["distortion"], extra=extra,
    )


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest CSV.

    Raises:
        ManifestError: ``<file>:<line>: <problem>`` for the first problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    fh = io.StringIO(decode_text(path), newline="")
    comments = _comment_lines(fh)
    info = _parse_header(comments, path)
    records = _records(fh, len(comments), path)
    _, columns = _columns(records, path)
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for lineno, fields in records:
        row = _manifest_row(fields, columns, f"{path}:{lineno}")
        problem = _row_problem(row, seen)
        if problem:
            raise ManifestError(f"{path}:{lineno}: {problem}")
        seen.add(row.image)
        rows.append(row)
    return Manifest(info=info, rows=tuple(rows), path=path)


__all__ = [
    "FORMAT_VERSION", "PARTS", "REQUIRED_COLUMNS", "SCORE_KINDS", "DatasetInfo", "Manifest",
    "ManifestError", "ManifestRow", "Split", "UncheckedSplitWarning", "atomic_write_text",
    "file_sha256", "id_problem", "manifest_digest", "manifest_text", "read_manifest",
    "with_file_hashes",
    "read_split", "split_files", "validate_rows", "write_manifest", "write_split",
]
