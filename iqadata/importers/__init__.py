"""Dataset importers: official label files -> :class:`iqadata.manifest.Manifest`.

``IMPORTERS`` maps a dataset key to ``import_x(root, *, label_file=..., image_dir=...,
expected=..., **options)``; each reads the dataset's official release unmodified, returns
a manifest (never writes) or raises :class:`~iqadata.manifest.ManifestError` naming the
label file and line or entry. :data:`~iqadata.importers.known.KNOWN` says which release
each expects and its official counts.

The importers share one frame (:mod:`._build`): ``@official_release(key, label_names)``
makes ``import_x`` from ``read(release, *, <layout options>)``. The importer resolves the
dataset folder and the label file (``label_file=``, else the first of ``label_names``
found) into a :class:`~._build.Release`, refuses options ``read`` does not take, and shows
``read``'s options in its signature (the CLI's ``--image-dir``, ``--ref-dir``, ``--sheet``
and ``--range`` go to the datasets whose signature names them). ``read`` turns the label
file into located rows and returns ``release.manifest(located)``, which checks them
against the official counts with the dataset's known labels. LIVE (its label file
depends on ``realigned=``) locates its :class:`~._build.Release` itself, and PIPAL (a
folder of label files) makes one for its folder. :func:`import_to` writes the manifest only after
every check has passed; :func:`write_with_splits` writes a manifest and its official
split files. :func:`import_csv` (a mapped CSV) and :func:`import_pyiqa` (a pyiqa
meta-info CSV with its splits) cover label lists of any other layout.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cache.outputs import check_output_dir, check_output_file, first_line_is, prepare_output_dir
from iqadata.importers._common import Expected
from iqadata.importers.authentic import (
    import_bid,
    import_flive,
    import_koniq10k,
    import_livec,
    import_spaq,
)
from iqadata.importers.csiq import import_csiq
from iqadata.importers.generic import import_csv
from iqadata.importers.known import KNOWN
from iqadata.importers.pyiqa import import_pyiqa, write_pyiqa_splits
from iqadata.importers.synthetic import import_kadid10k, import_live, import_pipal, import_tid2013
from iqadata.importers.task_sets import (
    import_agiqa3k,
    import_aigciqa2023,
    import_gfiqa20k,
    import_uwiqa,
)
from iqadata.manifest import (
    Manifest,
    ManifestError,
    Split,
    file_sha256,
    with_file_hashes,
    write_manifest,
)

Importer = Callable[..., Manifest]

IMPORTERS: dict[str, Importer] = {
    "live": import_live,
    "csiq": import_csiq,
    "tid2013": import_tid2013,
    "kadid10k": import_kadid10k,
    "pipal": import_pipal,
    "koniq10k": import_koniq10k,
    "spaq": import_spaq,
    "livec": import_livec,
    "bid": import_bid,
    "flive": import_flive,
    "gfiqa20k": import_gfiqa20k,
    "agiqa3k": import_agiqa3k,
    "aigciqa2023": import_aigciqa2023,
    "uwiqa": import_uwiqa,
}

MANIFEST_FIRST_LINE = "# iqa-manifest"


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; an unknown name fails with close matches."""
    if name in IMPORTERS:
        return IMPORTERS[name]
    close = difflib.get_close_matches(name, IMPORTERS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ManifestError(f"unknown dataset {name!r} (known: {', '.join(IMPORTERS)}){hint}")


def check_manifest_output(out: str | os.PathLike[str]) -> None:
    """Refuse an output path that holds anything but an iqa manifest (never overwritten)."""
    check_output_file(out, first_line_is(MANIFEST_FIRST_LINE), "manifest")


def import_to(
    name: str, root: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
) -> Manifest:
    """Import dataset ``name`` from ``root`` and write its manifest to ``out``.

    Nothing is written when any check fails, and ``out`` must be new or a manifest.
    """
    check_manifest_output(out)
    manifest = with_file_hashes(get_importer(name)(root, **options))
    write_manifest(manifest, out)
    return manifest


def write_with_splits(
    manifest: Manifest, out: Path, splits: dict[str, Split], folder: Path
) -> str:
    """Write ``manifest`` to ``out``, then each split as ``<name>.json`` in ``folder``.

    ``folder`` is checked before anything is written (new, empty or a split folder); the
    splits record the written manifest's sha256. Returns a note naming the split files
    and their part sizes ('' without splits).
    """
    if splits:
        check_output_dir(folder, "splits")
    write_manifest(manifest, out)
    if not splits:
        return ""
    prepare_output_dir(folder, "splits")
    paths = write_pyiqa_splits(splits, folder, file_sha256(out))
    sizes = ", ".join(
        f"{p.name} ({len(s.train)} train, {len(s.val)} val, {len(s.test)} test)"
        for p, s in zip(paths, splits.values(), strict=True)
    )
    return f"wrote {len(paths)} official split file(s) to {folder}: {sizes}"


def range_note(manifest: Manifest) -> str:
    """A note when scores lie outside the recorded range (their targets leave [0, 1])."""
    low, high = manifest.info.score_range
    scores = manifest.scores()
    outside = [s for s in scores if not low <= s <= high]
    if not outside:
        return ""
    return (
        f"note: {len(outside)} of {len(scores)} scores lie outside the recorded range"
        f" {low:g}..{high:g} (min {min(scores):g}, max {max(scores):g}), so their targets"
        " fall outside [0, 1]; check the labels, or record another range with --range"
    )


__all__ = [
    "IMPORTERS", "KNOWN", "Expected", "check_manifest_output", "get_importer", "import_csv",
    "import_pyiqa", "import_to", "range_note", "write_with_splits",
]
