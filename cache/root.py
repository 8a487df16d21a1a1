"""The shared cache root: stores addressed by what decides their content, for a whole team.

A root is a directory (local or NFS) or an fsspec URL (``s3://bucket/iqa``) laid out as::

    <root>/<dataset>/<backbone>-<fingerprint[:16]>-<rows[:12]>.zarr

where ``rows`` is :func:`content_key`, the sha256 of the store's image ids (in order) and
views. Same fingerprint + same image ids = same features, so a teammate's
``iqa-extract --cache-root`` finds an existing store for the same content and computes
nothing (or resumes an incomplete one); a subset, a superset or another version of a
dataset gets a store of its own and is never confused with it. Rows it shares with a
store already there (same dataset folder, same fingerprint) are copied, not recomputed
(``related``). A dataset name stands for one set of image files: a re-encoded release
with the same file names needs a new name in its manifest.

HDF5 files (``.h5``) placed under a dataset folder are listed too. ``gc`` removes
incomplete stores (older than a grace period, so an extraction in progress is left alone)
and, when told which files reference stores (DVC lock files, metrics, checkpoint lists),
unreferenced ones.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
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
        dataset=str(store.provenance.get("dataset", "")),
        backbone=store.backbone,
        backend=store.backend,
        fingerprint=store.fingerprint,
        rows_written=int(written.sum()),
        rows_total=store.n_rows,
        shards_committed=store.n_shards - len(store.missing_shards()),
        shards_total=store.n_shards,
        failed=len(store.failures),
        stored_bytes=store.stored_bytes(),
        files=store.file_count(),
        arrays={n: [list(s.shape), s.dtype] for n, s in store.arrays.items()},
    )


def content_key(image_ids: Sequence[str], views: Sequence[str]) -> str:
    """sha256 of a store's row layout: its image ids in order and its views."""
    text = "\n".join(["views:" + ",".join(views), *image_ids])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StoreLookupError(StoreError):
    """No store (or more than one) under a cache root matches what is asked."""


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

    def path_for(
        self, dataset: str, backbone: str, fingerprint: str, image_ids: Sequence[str],
        views: Sequence[str] = ("identity",), suffix: str = ".zarr",
    ) -> str:
        """Where the store of these rows (dataset, backbone, fingerprint, ids) lives."""
        for label, value in (("dataset", dataset), ("backbone", backbone)):
            if not value or "/" in value or value.startswith("."):
                raise ValueError(f"{label} name {value!r} cannot be a folder name in {self.root}")
        key = content_key(image_ids, views)[:12]
        return _join(self.root, dataset, f"{backbone}-{fingerprint[:16]}-{key}{suffix}")

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

    def find(
        self, dataset: str, fingerprint: str, image_ids: Sequence[str],
        views: Sequence[str] = ("identity",),
    ) -> str | None:
        """URL of the store with exactly this fingerprint and these rows, or None."""
        for url in self.related(dataset, fingerprint):
            with self.open(url) as store:
                if store.image_ids == list(image_ids) and list(store.views) == list(views):
                    return url
        return None

    def related(self, dataset: str, fingerprint: str) -> list[str]:
        """Readable stores of ``dataset`` with this fingerprint (whatever their rows)."""
        out = []
        for url in self.candidates(dataset):
            if fingerprint[:16] not in url.rsplit("/", 1)[-1]:
                continue
            try:
                with self.open(url) as store:
                    if store.fingerprint == fingerprint:
                        out.append(url)
            except StoreError:
                continue
        return out

    def find_for(self, manifest: Any, backbone: str, fingerprint: str | None = None) -> str:
        """The store that holds every image of ``manifest`` for ``backbone`` (training).

        Args:
            manifest: an ``iqadata.manifest.Manifest``.
            backbone: the backbone's registry name.
            fingerprint: a prefix that chooses between several matching stores.

        Raises:
            StoreLookupError: none, or several without a ``fingerprint`` to choose.
        """
        name = manifest.info.name
        needed = set(manifest.image_ids) | set(manifest.ref_ids)
        found = []
        for url in self.candidates(name):
            if not url.rsplit("/", 1)[-1].startswith(f"{backbone}-"):
                continue
            try:
                with self.open(url) as store:
                    fits = store.backbone == backbone and (
                        needed <= set(store.image_ids))
                    if fits and store.fingerprint.startswith(fingerprint or ""):
                        found.append((url, store.fingerprint))
            except StoreError:
                continue
        if len(found) == 1:
            return found[0][0]
        if not found:
            raise StoreLookupError(
                f"no {backbone} store under {self.root}/{name} holds every image of "
                f"{manifest.path}; run iqa-extract with --cache-root {self.root} first"
            )
        listed = ", ".join(f"{u} ({fp[:16]})" for u, fp in found)
        raise StoreLookupError(f"several {backbone} stores hold these images: {listed}; "
                               "pass --fingerprint PREFIX to choose")

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


class RowDonors:
    """Rows that other stores of one fingerprint already hold, found by (image id, view).

    Same fingerprint + same image id = same features, so a new store (a subset or
    superset of a cached dataset) copies these rows instead of recomputing them.

    Args:
        urls: donor stores (``CacheRoot.related``), all with the target's fingerprint.
        storage_options: fsspec options for remote donors.
    """

    def __init__(self, urls: Sequence[str], storage_options: dict[str, Any] | None = None):
        self.stores = [open_store(u, "r", storage_options=storage_options, verify=True)
                       for u in urls]
        self._index: dict[tuple[str, str], tuple[FeatureStore, int]] = {}
        for store in self.stores:
            written = store.written
            for row, (image, view) in enumerate(
                (i, v) for i in store.image_ids for v in store.views
            ):
                if written[row]:
                    self._index.setdefault((image, view), (store, row))

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, keys: Sequence[tuple[str, str]]) -> dict[int, tuple[dict[str, Any], Any, Any]]:
        """``{position: (features, valid_hw, orig_hw)}`` for each (image, view) a donor has."""
        out = {}
        for pos, key in enumerate(keys):
            found = self._index.get(key)
            if found is None:
                continue
            store, row = found
            feats = {n: a[0] for n, a in store.read([row], dtype=None).items()}
            out[pos] = (feats, store.valid_size([row])[0], store.orig_size([row])[0])
        return out

    def close(self) -> None:
        for store in self.stores:
            store.close()
