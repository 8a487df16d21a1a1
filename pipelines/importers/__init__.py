"""Dataset importers: official label files -> :class:`cache.manifest.Manifest`.

``IMPORTERS`` maps a dataset key to ``import_x(root, *, expected=..., **options)``;
each returns a manifest (never writes) or raises
:class:`~cache.manifest.ManifestError` naming the label file and line or entry.
:func:`import_to` writes the manifest only after every check has passed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import Any

from cache.manifest import Manifest, ManifestError, write_manifest
from pipelines.importers._common import Expected
from pipelines.importers.authentic import import_bid, import_koniq10k, import_livec, import_spaq
from pipelines.importers.generic import import_csv
from pipelines.importers.synthetic import import_csiq, import_kadid10k, import_live, import_tid2013

Importer = Callable[..., Manifest]

IMPORTERS: dict[str, Importer] = {
    "live": import_live,
    "csiq": import_csiq,
    "tid2013": import_tid2013,
    "kadid10k": import_kadid10k,
    "koniq10k": import_koniq10k,
    "spaq": import_spaq,
    "livec": import_livec,
    "bid": import_bid,
}


def get_importer(name: str) -> Importer:
    """The importer registered as ``name``; an unknown name fails with close matches."""
    if name in IMPORTERS:
        return IMPORTERS[name]
    close = difflib.get_close_matches(name, IMPORTERS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ManifestError(f"unknown dataset {name!r} (known: {', '.join(IMPORTERS)}){hint}")


def import_to(
    name: str, root: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any
) -> Manifest:
    """Import dataset ``name`` from ``root`` and write its manifest to ``out``.

    Nothing is written when any check fails.
    """
    manifest = get_importer(name)(root, **options)
    write_manifest(manifest, out)
    return manifest


__all__ = ["IMPORTERS", "Expected", "get_importer", "import_csv", "import_to"]
