"""Image ids as the file system sees them: normalised, inside the root, in their on-disk case.

Label files spell paths loosely (``LIVE/../LIVE/jp2k/img2.bmp``, ``I01.BMP`` for
``i01.bmp``, Windows backslashes). Every importer turns each spelling into one id:

* :func:`normalise_id` makes a path ``/``-separated and normalised, and refuses absolute
  paths and paths that leave the dataset root;
* :class:`DiskIndex` finds the file with that name in any letter case (as the TID2013
  importer always did) and returns the spelling on disk, so two spellings of one file
  become one id (and then fail as a duplicate) on every file system.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path

from cache.manifest import ManifestError

_DRIVE = re.compile(r"^[A-Za-z]:")


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
    """Case-insensitive file lookup under a root, one directory listing per folder."""

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

    def _match(self, folder: str, name: str, want_dir: bool) -> str | None:
        """The entry of on-disk ``folder`` called ``name`` in any case (unambiguous), or None."""
        listing = self._listing(folder)
        if listing is None:
            return None
        if listing.get(name) is want_dir:
            return name
        if folder not in self._folded:
            folded: dict[str, list[str]] = {}
            for entry in listing:
                folded.setdefault(entry.casefold(), []).append(entry)
            self._folded[folder] = folded
        hits = [n for n in self._folded[folder].get(name.casefold(), []) if listing[n] is want_dir]
        return hits[0] if len(hits) == 1 else None

    def _folder(self, rel: str) -> str | None:
        """On-disk spelling of the folder ``rel`` (cached), or None."""
        if rel not in self._folders:
            parent, _, name = rel.rpartition("/")
            actual = self._folder(parent)
            hit = None if actual is None else self._match(actual, name, want_dir=True)
            self._folders[rel] = None if hit is None else (f"{actual}/{hit}" if actual else hit)
        return self._folders[rel]

    def resolve(self, rel: str) -> str | None:
        """The on-disk spelling of the file ``rel`` (any letter case), or None if absent.

        A name that matches two entries differing only in case, with neither exact, is
        treated as absent.
        """
        parent, _, name = rel.rpartition("/")
        folder = self._folder(parent)
        hit = None if folder is None else self._match(folder, name, want_dir=False)
        if hit is None:
            return None
        return f"{folder}/{hit}" if folder else hit

    def is_dir(self, rel: str) -> bool:
        return self._folder(rel.strip("/")) is not None

    def files(self, folder: str) -> list[str]:
        """Names of the files directly in ``folder`` (relative; [] if it is no folder)."""
        actual = self._folder(folder.strip("/"))
        listing = (self._listing(actual) if actual is not None else None) or {}
        return [name for name, is_dir in listing.items() if not is_dir]


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
