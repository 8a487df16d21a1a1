"""A generic CSV importer with a column mapping, for team CSVs and other label lists.

Columns are read by name through an explicit mapping, so a reordered or extended CSV
still imports right. Columns not mapped are kept as extra columns. The generic path
guesses nothing that could silently corrupt results:

* the label kind (MOS / DMOS), its orientation (lower or higher is better) and its
  nominal range must be given, or come from a known dataset (``name="live"``); a DMOS
  where higher is better (or a MOS where lower is better) needs ``unusual_orientation``;
* a list without a reference (``ref``), prompt (``prompt``) or content-group (``group``)
  column makes every image its own group, which leaks content across splits for a
  full-reference set, so it needs ``authentic=True``, the user's word that all images
  are distinct content; even then a column that looks like a reference or prompt column
  (:mod:`iqadata.importers._columns`) left unmapped is refused unless ``not_content``
  names it;
* groups default to the reference's path relative to the root (ten ``sceneN/ref.png``
  are ten groups), else the prompt, else the image; a ``group`` mapping that puts one
  reference's (or prompt's) images in two groups is refused;
* every row must have exactly the header's fields, paths are normalised, found in their
  on-disk case and kept inside the root (see :mod:`iqadata.importers._build`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from cache.console import UsageProblem
from iqadata.content import PROMPT_GROUP
from iqadata.importers._build import build_manifest
from iqadata.importers._columns import content_kind, unmapped_content
from iqadata.importers._common import (
    ExpectedLike,
    Located,
    as_expected,
    csv_records,
    dataset_root,
    parse_float,
)
from iqadata.importers._paths import join_id
from iqadata.importers.known import KNOWN
from iqadata.manifest import DatasetInfo, Manifest, ManifestError, ManifestRow

MAPPABLE = ("image", "score", "ref", "prompt", "group", "distortion")
NATURAL = {"MOS": False, "DMOS": True}  # kind -> its usual lower_better


class LabelSpecError(ManifestError, UsageProblem):
    """The labels' kind, orientation or range is missing or contradictory (bad usage)."""


@dataclass(frozen=True)
class LabelSpec:
    """The labels' kind, orientation and nominal range as given; each None is taken from
    the known dataset of that name (:func:`label_spec`).

    Attributes:
        score_kind: ``MOS``, ``DMOS`` or ``pseudo-MOS``.
        lower_better: True when a lower score is better.
        score_range: nominal (low, high); never from the data.
        unusual_orientation: accept DMOS with higher-is-better (or MOS with lower).
    """

    score_kind: str | None = None
    lower_better: bool | None = None
    score_range: tuple[float, float] | None = None
    unusual_orientation: bool = False


@dataclass(frozen=True)
class ImageFolders:
    """Where a label list's image and reference names point.

    Attributes:
        root: folder the paths are relative to (default: the label file's folder).
        image_dir: folder under ``root`` the image names are relative to.
        ref_dir: folder under ``root`` the reference names are relative to.
    """

    root: str | os.PathLike[str] | None = None
    image_dir: str = ""
    ref_dir: str = ""


def _known_labels(name: str) -> tuple[str | None, bool | None, tuple[float, float] | None]:
    known = KNOWN.get(name)
    if known is None:
        return None, None, None
    return known.kind, known.lower_better, known.score_range


def label_spec(
    name: str,
    score_kind: str | None,
    lower_better: bool | None,
    score_range: tuple[float, float] | None,
    unusual_orientation: bool = False,
) -> tuple[str, bool, tuple[float, float]]:
    """The (kind, lower_better, range) to record, given or taken from known dataset ``name``.

    Raises:
        LabelSpecError: when one is missing, contradicts the known dataset, or is an
            unusual orientation without ``unusual_orientation``.
    """
    k_kind, k_lower, k_range = _known_labels(name)
    for given, known, what in (
        (score_kind, k_kind, "kind"),
        (lower_better, k_lower, "orientation"),
    ):
        if given is not None and known is not None and given != known:
            raise LabelSpecError(
                f"{what} given for {name!r} contradicts the known {name} labels ({k_kind},"
                f" {'lower' if k_lower else 'higher'} is better); use another --name for a"
                " relabelled copy"
            )
    kind = score_kind or k_kind
    lower = lower_better if lower_better is not None else k_lower
    low_high = score_range or k_range
    missing = [opt for opt, v in (("--kind", kind), ("--lower-better or --higher-better", lower),
                                  ("--range LOW,HIGH", low_high)) if v is None]
    if missing:
        raise LabelSpecError(
            f"say how to read the scores of {name!r}: {', '.join(missing)} (or --name one of the"
            f" known datasets: {', '.join(KNOWN)}); nothing is guessed, since a wrong"
            " orientation or a range taken from the data silently corrupts mixed training"
        )
    assert kind is not None and lower is not None and low_high is not None
    if kind in NATURAL and NATURAL[kind] != lower and not unusual_orientation:
        usual = "lower" if NATURAL[kind] else "higher"
        raise LabelSpecError(
            f"{kind} where {'lower' if lower else 'higher'} is better is unusual ({kind} usually"
            f" means {usual} is better); check the labels and pass --unusual-orientation if so"
        )
    return kind, lower, (float(low_high[0]), float(low_high[1]))


def _check_mapping(
    columns: Mapping[str, str],
    header: list[str],
    where: str,
    authentic: bool,
    not_content: Collection[str] = (),
) -> None:
    unknown = sorted(set(columns) - set(MAPPABLE))
    if unknown:
        raise LabelSpecError(f"column mapping has unknown keys {unknown} (use {list(MAPPABLE)})")
    for key in ("image", "score"):
        if key not in columns:
            raise LabelSpecError(f"column mapping needs {key!r} (e.g. {key}=<csv column>)")
    absent = sorted(c for c in columns.values() if c not in header)
    if absent:
        raise ManifestError(f"{where}: no column(s) {absent} (have {header})")
    for key in ("ref", "prompt"):
        if authentic and key in columns:
            raise LabelSpecError(
                f"--authentic says every image is distinct content, but {key}= is mapped"
            )
    if not authentic and not {"ref", "prompt", "group"} & set(columns):
        hint = [c for c in header if content_kind(c) == "reference" and c not in columns.values()]
        raise LabelSpecError(
            f"{where}: no ref= (or prompt=, group=) column mapped, so every image would be its"
            " own content group: a full-reference set would leak the same content into train"
            f" and test. Map ref=<column>{f' (perhaps {hint[0]!r})' if hint else ''} or"
            " group=<column>, or pass --authentic if every image is distinct content"
        )
    _check_unmapped(columns, header, where, authentic, not_content)


def _check_unmapped(
    columns: Mapping[str, str],
    header: list[str],
    where: str,
    authentic: bool,
    not_content: Collection[str],
) -> None:
    """Refuse an unmapped column that looks like a reference or prompt column."""
    unknown = sorted(set(not_content) - set(header))
    if unknown:
        raise LabelSpecError(f"--not-content: no column(s) {unknown} in {where} (have {header})")
    found = unmapped_content(header, columns, not_content)
    if found is None:
        return
    column, kind = found
    key = "ref" if kind == "reference" else "prompt"
    grouping = (
        "--authentic makes every image its own group"
        if authentic
        else f"group={columns['group']} groups the images without it"
    )
    raise LabelSpecError(
        f"{where}: column {column!r} looks like a {kind} column but is not mapped, and"
        f" {grouping}: the images of one {kind} would leak into train and test. Map"
        f" {key}={column}, or pass --not-content {column} if it names no content that"
        " images share"
    )


def _row(
    rec: dict[str, str], columns: Mapping[str, str], where: str, image_dir: str, ref_dir: str
) -> ManifestRow:
    name = rec[columns["image"]]
    if not name:
        raise ManifestError(f"{where}: empty image name in column {columns['image']!r}")
    ref_name = rec[columns["ref"]] if "ref" in columns else ""
    if "ref" in columns and not ref_name:
        raise ManifestError(f"{where}: empty reference name in column {columns['ref']!r}")
    image, ref = join_id(image_dir, name), join_id(ref_dir, ref_name) if ref_name else ""
    prompt = rec[columns["prompt"]] if "prompt" in columns else ""
    if "prompt" in columns and not prompt:
        raise ManifestError(f"{where}: empty prompt in column {columns['prompt']!r}")
    group = rec.get(columns.get("group", ""), "") or ref or prompt or image
    mapped = set(columns.values())
    extra = {k: v for k, v in rec.items() if k not in mapped}
    return ManifestRow(
        image=image, ref=ref, score=parse_float(rec[columns["score"]], where), group=group,
        distortion=rec.get(columns.get("distortion", ""), ""),
        extra={**extra, PROMPT_GROUP: prompt} if prompt else extra,
    )


def import_csv(
    path: str | os.PathLike[str],
    *,
    name: str,
    columns: Mapping[str, str],
    folders: ImageFolders = ImageFolders(),
    labels: LabelSpec = LabelSpec(),
    expected: ExpectedLike = None,
    authentic: bool = False,
    not_content: Collection[str] = (),
) -> Manifest:
    """Import any CSV with a header, mapping its columns onto manifest fields.

    Args:
        path: the CSV file.
        name: dataset key recorded in the manifest; a known key supplies the labels.
        columns: manifest field -> CSV column; ``image`` and ``score`` are required,
            ``ref``, ``prompt``, ``group`` and ``distortion`` optional. ``group`` defaults
            to the reference's path under the root (FR), else the prompt (kept as the
            ``prompt_group`` column), else the image itself (``authentic``).
        folders: the root the paths are relative to (default: the CSV's folder) and the
            image and reference folders under it (:class:`ImageFolders`).
        labels: kind, orientation and nominal range of the scores, each required unless
            ``name`` is known, and ``unusual_orientation`` (:class:`LabelSpec`).
        expected: (images, refs) or an image count to check, or None.
        authentic: the set has no references and every image is distinct content.
        not_content: columns that look like reference or prompt columns but name no
            content the images share (the user's word; see :mod:`._columns`).

    Raises:
        LabelSpecError: for missing or contradictory label options (a usage error).
        ManifestError: naming the CSV line of the first bad row.
    """
    path = Path(path)
    kind, lower, low_high = label_spec(
        name, labels.score_kind, labels.lower_better, labels.score_range,
        labels.unusual_orientation,
    )
    if not path.is_file():
        raise ManifestError(f"label file not found: {path}")
    base = dataset_root(folders.root if folders.root is not None else path.parent)
    header, records = csv_records(path)
    _check_mapping(columns, header, f"{path}:1", authentic, not_content)
    located = [
        Located(_row(rec, columns, where, folders.image_dir, folders.ref_dir), where)
        for where, rec in records
    ]
    info = DatasetInfo(name, kind, lower, low_high, str(base))
    return build_manifest(info, located, as_expected(expected), str(path))
