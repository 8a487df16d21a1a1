"""Dataset manifests and split files: the ground floor that both stages read.

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
``group`` is the content id used to make content-disjoint splits. A relative ``root`` is
resolved against the manifest's own folder.

A split file is JSON: ``{"train": [...], "val": [...], "test": [...], "seed": 0,
"ratios": [...], "manifest_sha256": "..."}`` listing image ids, never row numbers.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

FORMAT_VERSION = "1"
SCORE_KINDS = ("MOS", "DMOS", "pseudo-MOS")
REQUIRED_COLUMNS = ("image", "ref", "score", "group", "distortion")
PARTS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest or split file is malformed or inconsistent."""


@dataclass(frozen=True)
class DatasetInfo:
    """Dataset-level metadata carried in a manifest's header.

    Attributes:
        name: dataset key, lower case (``kadid10k``).
        score_kind: ``MOS``, ``DMOS`` or ``pseudo-MOS``.
        lower_better: True when a lower score means better quality (DMOS sets).
        score_range: nominal (low, high) of the raw score.
        root: folder the ``image`` and ``ref`` paths are relative to.
    """

    name: str
    score_kind: str = "MOS"
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    root: str = "."

    def __post_init__(self) -> None:
        if self.score_kind not in SCORE_KINDS:
            raise ManifestError(f"score_kind must be one of {SCORE_KINDS}, got {self.score_kind!r}")
        low, high = self.score_range
        if not low < high:
            raise ManifestError(
                f"score_range must be (low, high) with low < high, got {self.score_range}"
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

    def with_root(self, root: str) -> Manifest:
        return replace(self, info=replace(self.info, root=root))


def _header_lines(info: DatasetInfo) -> list[str]:
    low, high = info.score_range
    return [
        f"# iqa-manifest: {FORMAT_VERSION}",
        f"# name: {info.name}",
        f"# score_kind: {info.score_kind}",
        f"# lower_better: {str(info.lower_better).lower()}",
        f"# score_range: {low:g},{high:g}",
        f"# root: {info.root}",
    ]


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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> None:
    """Validate and write a manifest atomically (a failed check writes nothing)."""
    validate_rows(manifest.rows, where=str(path))
    atomic_write_text(path, manifest_text(manifest))


def validate_rows(rows: Iterable[ManifestRow], where: str = "manifest") -> None:
    """Check ids are unique and non-empty and scores are finite."""
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if not r.image:
            raise ManifestError(f"{where}: row {i + 1} has an empty image path")
        if r.image in seen:
            raise ManifestError(f"{where}: image {r.image!r} appears twice (row {i + 1})")
        if not math.isfinite(r.score):
            raise ManifestError(f"{where}: image {r.image!r} has a non-finite score {r.score}")
        if not r.group:
            raise ManifestError(f"{where}: image {r.image!r} has an empty group")
        seen.add(r.image)


def _parse_header(lines: list[str], path: Path) -> DatasetInfo:
    meta: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.lstrip("#").partition(":")
        if sep:
            meta[key.strip()] = value.strip()
    if meta.get("iqa-manifest") != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: not an iqa manifest (first line must be '# iqa-manifest: {FORMAT_VERSION}');"
            " convert label files with 'iqa-data import'"
        )
    try:
        low, high = (float(v) for v in meta.get("score_range", "0,1").split(","))
        return DatasetInfo(
            name=meta["name"],
            score_kind=meta.get("score_kind", "MOS"),
            lower_better=meta.get("lower_better", "false").lower() == "true",
            score_range=(low, high),
            root=meta.get("root", "."),
        )
    except (KeyError, ValueError) as err:
        raise ManifestError(f"{path}: bad manifest header: {err}") from err


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest CSV.

    Raises:
        ManifestError: naming the file and line of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    n_header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    info = _parse_header(lines[:n_header], path)
    reader = csv.DictReader(lines[n_header:])
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing} (have {reader.fieldnames})")
    rows = []
    for lineno, rec in enumerate(reader, start=n_header + 2):
        try:
            score = float(rec["score"])
        except (TypeError, ValueError) as err:
            raise ManifestError(f"{path}:{lineno}: bad score {rec['score']!r}") from err
        extra = {k: v for k, v in rec.items() if k not in REQUIRED_COLUMNS and k is not None}
        rows.append(
            ManifestRow(
                image=rec["image"] or "",
                ref=rec["ref"] or "",
                score=score,
                group=rec["group"] or "",
                distortion=rec["distortion"] or "",
                extra=extra,
            )
        )
    validate_rows(rows, where=str(path))
    return Manifest(info=info, rows=tuple(rows), path=path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Split:
    """A train/val/test partition of a manifest's image ids."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int = 0
    ratios: tuple[float, ...] = (0.6, 0.2, 0.2)
    manifest_sha256: str = ""

    def part(self, name: str) -> tuple[str, ...]:
        if name not in PARTS:
            raise ManifestError(f"split part must be one of {PARTS}, got {name!r}")
        return getattr(self, name)

    def check_against(self, manifest: Manifest, where: str = "split") -> None:
        """Fail when the split names images the manifest lacks or lists one twice."""
        known = set(manifest.image_ids)
        seen: set[str] = set()
        for part in PARTS:
            for image in self.part(part):
                if image not in known:
                    raise ManifestError(f"{where}: {part} image {image!r} is not in the manifest")
                if image in seen:
                    raise ManifestError(f"{where}: image {image!r} is in two parts")
                seen.add(image)


def write_split(split: Split, path: str | os.PathLike[str]) -> None:
    data = {
        "seed": split.seed,
        "ratios": list(split.ratios),
        "manifest_sha256": split.manifest_sha256,
        **{part: list(split.part(part)) for part in PARTS},
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def read_split(path: str | os.PathLike[str]) -> Split:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"split file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Split(
            train=tuple(data["train"]),
            val=tuple(data.get("val", [])),
            test=tuple(data["test"]),
            seed=int(data.get("seed", 0)),
            ratios=tuple(float(r) for r in data.get("ratios", ())),
            manifest_sha256=str(data.get("manifest_sha256", "")),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ManifestError(f"{path}: not a split file: {err}") from err
