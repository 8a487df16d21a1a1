"""Image ids as the file system sees them: normalised, inside the root, in their on-disk case.

Label files spell paths loosely (``LIVE/../LIVE/jp2k/img2.bmp``, ``I01.BMP`` for
``i01.bmp``, Windows backslashes). Every importer turns each spelling into one id:

* :func:`normalise_id` makes a path ``/``-separated and normalised, and refuses absolute
  paths and paths that leave the dataset root;
* :class:`DiskIndex` finds the file with that name in any letter case (as the TID2013
  importer always did) and in either Unicode normal form (a copy made on macOS stores
  ``é`` decomposed, NFD; label files spell it composed, NFC), and returns the spelling on
  disk, so two spellings of one file become one id (and then fail as a duplicate) on
  every file system. A name that matches two entries differing only in case or form
  (case twins), none of them exactly, is ambiguous: :meth:`DiskIndex.twins` names them.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from iqadata.manifest import ManifestError

_DRIVE = re.compile(r"^[A-Za-z]:")


def name_key(name: str) -> str:
    """One key for the spellings of a name: any letter case, Unicode NFC or NFD."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def normalise_id(text: str, where: str, what: str = "image") -> str:
    """``text`` as a normalised path relative to the dataset root.

    Raises:
        ManifestError: for an empty, absolute or root-escaping path, naming ``where``.
    """
    raw = str(text).strip().replace("\\", "/")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise ManifestError(
            f"{where}: {what} path {text!r} is absolute; label files must give paths relative"
            " to the dataset root (--root)"
        )
    normal = posixpath.normpath(raw) if raw else ""
    if normal in ("", "."):
        raise ManifestError(f"{where}: empty {what} path")
    if normal == ".." or normal.startswith("../"):
        raise ManifestError(f"{where}: {what} path {text!r} leaves the dataset root")
    return normal


def join_id(folder: str, name: str) -> str:
    """``folder/name`` ('' for no folder), not yet normalised."""
    folder = folder.strip().strip("/")
    return f"{folder}/{name}" if folder else str(name)


class DiskIndex:
    """File lookup under a root in any case and Unicode form, one listing per folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[str, dict[str, bool] | None] = {}
        self._folded: dict[str, dict[str, list[str]]] = {}
        self._folders: dict[str, str | None] = {"": ""}

    def _listing(self, folder: str) -> dict[str, bool] | None:
        """name -> is_dir of the entries of ``folder`` (on-disk spelling), None if no folder."""
        if folder not in self._listings:
            try:
                with os.scandir(self.root / folder if folder else self.root) as entries:
                    # folders and files (links followed); broken links and the like are absent
                    self._listings[folder] = {
                        e.name: e.is_dir() for e in entries if e.is_dir() or e.is_file()
                    }
            except (FileNotFoundError, NotADirectoryError):
                self._listings[folder] = None
        return self._listings[folder]

    def _hits(self, folder: str, name: str, want_dir: bool) -> list[str]:
        """The entries of on-disk ``folder`` that ``name`` names: the exact one, or every
        entry equal to it in any case and Unicode form."""
        listing = self._listing(folder)
        if listing is None:
            return []
        if listing.get(name) is want_dir:
            return [name]
        if folder not in self._folded:
            folded: dict[str, list[str]] = {}
            for entry in listing:
                folded.setdefault(name_key(entry), []).append(entry)
            self._folded[folder] = folded
        return [n for n in self._folded[folder].get(name_key(name), []) if listing[n] is want_dir]

    def _match(self, folder: str, name: str, want_dir: bool) -> str | None:
        hits = self._hits(folder, name, want_dir)
        return hits[0] if len(hits) == 1 else None

    def folder(self, rel: str) -> str | None:
        """On-disk spelling of the folder ``rel`` ('' for the root; cached), or None."""
        rel = rel.strip("/")
        if rel not in self._folders:
            parent, _, name = rel.rpartition("/")
            actual = self.folder(parent)
            hit = None if actual is None else self._match(actual, name, want_dir=True)
            self._folders[rel] = None if hit is None else (f"{actual}/{hit}" if actual else hit)
        return self._folders[rel]

    def resolve(self, rel: str) -> str | None:
        """The on-disk spelling of the file ``rel`` (any case and form), or None if absent.

        A name that matches two entries differing only in case or form, with neither
        exact, is treated as absent (:meth:`twins` tells the two cases apart).
        """
        parent, _, name = rel.rpartition("/")
        folder = self.folder(parent)
        hit = None if folder is None else self._match(folder, name, want_dir=False)
        if hit is None:
            return None
        return f"{folder}/{hit}" if folder else hit

    def twins(self, rel: str) -> list[str]:
        """The entries an ambiguous ``rel`` matches at the first ambiguous level, else []."""
        parts = rel.strip("/").split("/")
        folder = ""
        for k, part in enumerate(parts):
            hits = self._hits(folder, part, want_dir=k < len(parts) - 1)
            if len(hits) != 1:
                return sorted(f"{folder}/{h}" if folder else h for h in hits) if hits[1:] else []
            folder = f"{folder}/{hits[0]}" if folder else hits[0]
        return []

    def is_dir(self, rel: str) -> bool:
        return self.folder(rel) is not None

    def _entries(self, folder: str, dirs: bool) -> list[str]:
        actual = self.folder(folder)
        listing = (self._listing(actual) if actual is not None else None) or {}
        return sorted(name for name, is_dir in listing.items() if is_dir is dirs)

    def files(self, folder: str) -> list[str]:
        """Names of the files directly in ``folder`` (sorted; [] if it is no folder)."""
        return self._entries(folder, dirs=False)

    def dirs(self, folder: str) -> list[str]:
        """Names of the folders directly in ``folder`` (sorted; [] if it is no folder)."""
        return self._entries(folder, dirs=True)


def find_file(root: Path, name: str, what: str = "label file") -> Path | None:
    """``root / name`` in its on-disk case and form (``name`` may be absolute), or None.

    Raises:
        ManifestError: when ``name`` matches case twins (ambiguous).
    """
    exact = root / name
    if exact.is_file():
        return exact
    rel = posixpath.normpath(str(name).replace("\\", "/"))
    if Path(name).is_absolute() or _DRIVE.match(rel) or rel == ".." or rel.startswith("../"):
        return None
    index = DiskIndex(root)
    hit = index.resolve(rel)
    if hit is None:
        twins = index.twins(rel)
        if twins:
            raise ambiguous(root, rel, twins, what)
        return None
    return root / hit


def ambiguous(root: Path, rel: str, twins: Sequence[str], what: str) -> ManifestError:
    """The error for a name that matches several entries, none exactly."""
    return ManifestError(
        f"{what} {rel!r} is ambiguous under {root}: it matches {' and '.join(twins)}, which"
        " differ only in letter case or Unicode form; rename one, or spell the name exactly"
        " as on disk"
    )


def find_image_dir(
    index: DiskIndex, candidates: Sequence[str], probe: str, where: str, option: str = "--image-dir"
) -> str:
    """The first candidate folder that holds ``probe`` (the first listed image).

    Raises:
        ManifestError: naming the folders tried and the option that sets the folder.
    """
    for folder in candidates:
        if index.resolve(normalise_id(join_id(folder, probe), where)) is not None:
            return folder
    tried = ", ".join(repr(c or ".") for c in candidates)
    raise ManifestError(
        f"{where}: cannot find the image folder: no {probe!r} in {tried} under {index.root};"
        f" pass {option}"
    )
