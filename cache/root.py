"""The shared cache root: stores addressed by dataset and fingerprint, for a whole team.

A root is a directory (local or NFS) or an fsspec URL (``s3://bucket/iqa``) laid out as::

    <root>/<dataset>/<backbone>-<fingerprint[:16]>.zarr

so a teammate's ``iqa-extract --cache-root`` finds an existing store for the same
(dataset, fingerprint) and extracts nothing, or resumes an incomplete one. HDF5 files
(``.h5``) placed under a dataset folder are listed too. ``gc`` removes incomplete stores
(older than a grace period, so an extraction in progress is left alone) and, when told which
files reference stores (DVC lock files, metrics, checkpoints lists), unreferenced ones.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from cache.backends import StoreError, store_exists
from cache.store import FeatureStore, open_store

STORE_SUFFIXES = (".zarr", ".h5", ".hdf5")
_HEX = re.compile(r"[0-9a-f]{16,64}")


@dataclass
class StoreInfo:
    """What ``iqa-cache ls`` shows about one store."""

    url: str
    dataset: str
    backbone: str
    backend: str
    fingerprint: str
    rows_written: int
    rows_total: int
    shards_committed: int
    shards_total: int
    failed: int
    stored_bytes: int
    files: int
    created_at: str = ""
    arrays: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.shards_committed == self.shards_total

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


def store_info(store: FeatureStore) -> StoreInfo:
    """Summarise an open store."""
    written = store.written
    return StoreInfo(
        url=store.url,
        dataset=str(store.attrs.get("dataset", "")),
        backbone=str(store.attrs.get("backbone", store.fingerprint_fields.get("backbone", ""))),
        backend=store.backend,
        fingerprint=store.fingerprint,
        rows_written=int(written.sum()),
        rows_total=store.n_rows,
        shards_committed=store.n_shards - len(store.missing_shards()),
        shards_total=store.n_shards,
        failed=len(store.failures),
        stored_bytes=store.stored_bytes(),
        files=store.file_count(),
        created_at=str(store.attrs.get("created_at", "")),
        arrays={n: [list(s.shape), s.dtype] for n, s in store.arrays.items()},
    )


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


class CacheRoot:
    """A folder or fsspec URL holding stores as ``<dataset>/<backbone>-<fp16>.zarr``.

    Args:
        root: a local path or fsspec URL.
        storage_options: fsspec options (endpoint, credentials) for a remote root.
    """

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        self.root = str(root).rstrip("/")
        self.options = dict(storage_options or {})
        self.fs, self._path = fsspec.core.url_to_fs(self.root, **self.options)

    def path_for(self, dataset: str, backbone: str, fingerprint: str, suffix: str = ".zarr") -> str:
        """Where the store of (dataset, backbone, fingerprint) lives under this root."""
        for label, value in (("dataset", dataset), ("backbone", backbone)):
            if not value or "/" in value or value.startswith("."):
                raise ValueError(f"{label} name {value!r} cannot be a folder name in {self.root}")
        return _join(self.root, dataset, f"{backbone}-{fingerprint[:16]}{suffix}")

    def _url(self, path: str) -> str:
        """The URL of a path the file system listed (keeps the root's scheme)."""
        rel = path[len(self._path.rstrip("/")) :].lstrip("/")
        return _join(self.root, rel) if rel else self.root

    def candidates(self, dataset: str | None = None) -> list[str]:
        """URLs under the root that look like stores (by suffix), sorted."""
        if not self.fs.exists(self._path):
            return []
        datasets = [dataset] if dataset else self._dirs(self._path)
        out = []
        for name in datasets:
            folder = _join(self._path, name)
            if self.fs.isdir(folder):
                entries = self.fs.ls(folder, detail=False)
                out += [self._url(e) for e in entries if e.rstrip("/").endswith(STORE_SUFFIXES)]
        return sorted(out)

    def _dirs(self, path: str) -> list[str]:
        entries = self.fs.ls(path, detail=True)
        return sorted(
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        )

    def open(self, url: str, mode: str = "r") -> FeatureStore:
        return open_store(url, mode, storage_options=self.options or None)

    def find(self, dataset: str, fingerprint: str) -> str | None:
        """URL of the store with this dataset and full fingerprint, or None."""
        for url in self.candidates(dataset):
            if fingerprint[:16] not in url.rsplit("/", 1)[-1]:
                continue
            try:
                with self.open(url) as store:
                    if store.fingerprint == fingerprint:
                        return url
            except StoreError:
                continue
        return None

    def list_stores(self, dataset: str | None = None) -> list[StoreInfo]:
        """Every readable store under the root (unreadable ones are skipped)."""
        out = []
        for url in self.candidates(dataset):
            try:
                with self.open(url) as store:
                    out.append(store_info(store))
            except StoreError:
                continue
        return out

    def du(self) -> dict[str, int]:
        """Bytes per dataset folder (everything in it, stores or not)."""
        if not self.fs.exists(self._path):
            return {}
        return {d: int(self.fs.du(_join(self._path, d))) for d in self._dirs(self._path)}

    def remove(self, url: str) -> None:
        """Delete one store (directory or file) under the root."""
        if not url.startswith(self.root + "/"):
            raise ValueError(f"{url} is not under the cache root {self.root}")
        fs, path = fsspec.core.url_to_fs(url, **self.options)
        fs.rm(path, recursive=True)

    def _age_hours(self, url: str) -> float:
        fs, path = fsspec.core.url_to_fs(url, **self.options)
        files = fs.find(path) if fs.isdir(path) else [path]
        stamps = [_mtime(fs, f) for f in files] or [time.time()]
        return (time.time() - max(stamps)) / 3600

    def gc_plan(
        self, referenced_text: str | None = None, min_age_hours: float = 24.0
    ) -> list[tuple[str, str]]:
        """Stores ``gc`` would remove, as (url, reason); nothing is deleted here.

        Args:
            referenced_text: text of files that reference stores (paths or fingerprints);
                when given, stores mentioned in none of it are unreferenced.
            min_age_hours: leave stores modified more recently alone (writers in flight).
        """
        mentioned = set(_HEX.findall(referenced_text or ""))
        plan = []
        for url in self.candidates():
            reason = self._gc_reason(url, referenced_text, mentioned)
            if reason and self._age_hours(url) >= min_age_hours:
                plan.append((url, reason))
        return plan

    def _gc_reason(self, url: str, text: str | None, mentioned: set[str]) -> str:
        if not store_exists(url, storage_options=self.options or None):
            return "not a readable store (creation interrupted?)"
        with self.open(url) as store:
            missing = len(store.missing_shards())
            fp = store.fingerprint
        if missing:
            return f"incomplete ({missing} shards uncommitted)"
        if text is not None and url not in text and not any(fp.startswith(m) for m in mentioned):
            return "unreferenced"
        return ""


def _mtime(fs: Any, path: str) -> float:
    try:
        stamp = fs.modified(path)
        return stamp.timestamp()
    except (NotImplementedError, OSError, AttributeError):
        return time.time()
