"""The feature store: rows, shards, fingerprints, commit marks and verification, once.

``FeatureStore`` holds all the logic; the backends below it (``cache.backends``) only
store arrays and attributes. See ``cache.schema`` for the on-store layout and
``docs/INTERFACES.md`` ("cache.store") for the contract.

Writing protocol (``write_shard``): every feature array gets one shard-aligned write, then
the per-row ``written`` mask, sizes and failure reasons, and last the ``commit`` row that
holds the per-array blake2b checksums and the commit mark. Zarr writes each key atomically
(temporary ``*.partial`` file + rename), so a writer killed at any instant leaves every
committed shard intact and uncommitted shards are simply rewritten on resume. Zarr has no
cross-process locks: parallel writers must own disjoint ranges of whole shards.

Default codec: ``none``. Measured with ``bench/bench_store.py`` (128 SAM-shaped rows of
smooth float16 maps, warm page cache, 2 shared cores): lossless codecs save little on
float16 features (zstd 7 %, Blosc-zstd + shuffle 11 %, Blosc-lz4 1 %; HDF5 gzip + shuffle
19 %) while they cut random single-row reads to 0.1-0.5x of plain ``.npy`` files; without
compression Zarr reads run at ~1.0-1.35x the raw-file rate (HDF5 likewise through direct
chunk reads). Disk is cheaper than the repeated epochs of reading, so the default stores
raw bytes; ``codec="blosc-zstd"`` is the choice for archives and slow networks. Lossy
mantissa bit-rounding (numcodecs ``BitRound``, 1.43x with ``keepbits=7``) is applied only
when asked (``keepbits``); it is recorded in the attributes and in the fingerprint.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cache.backends import (
    CODECS,
    Backend,
    StoreError,
    StoreNotFoundError,
    open_backend,
    store_exists,
)
from cache.fingerprint import FingerprintMismatch
from cache.fingerprint import fingerprint_of as _fingerprint_of
from cache.schema import (
    FORMAT_VERSION,
    ArraySpec,
    IncompleteStoreError,
    VerifyReport,
    specs_from_json,
)
from cache.shard_writer import ShardWriter
from cache.store_io import RowIndex, check_same_layout, create_layout, normalise_rows

DEFAULT_CODEC = "none"
_MANTISSA_BITS = {"float16": 10, "float32": 23}

__all__ = [
    "ArraySpec",
    "FeatureStore",
    "FingerprintMismatch",
    "IncompleteStoreError",
    "StoreError",
    "StoreNotFoundError",
    "VerifyReport",
    "create_store",
    "open_store",
    "store_fields",
]


def _package_version() -> str:
    try:
        return importlib.metadata.version("iqa-feature-cache")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class FeatureStore(ShardWriter):
    """A fingerprinted, sharded feature store (open it with ``create_store``/``open_store``).

    Attributes:
        url: where the store lives.
        backend: ``"zarr"``, ``"hdf5"`` or ``"memory"``.
        fingerprint: sha256 of ``fingerprint_fields``.
        fingerprint_fields: the caller's fields plus the store's own ``_store`` section.
        attrs: provenance (backbone, weights, preprocessing, versions, created at, ...).
        arrays: ``{name: ArraySpec}``.
        image_ids, views, n_images, n_rows, shard_size, n_shards: the row layout.
    """

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        meta = backend.read_attrs()
        if meta.get("iqa_store") != FORMAT_VERSION:
            raise StoreError(f"{backend.url} is not a feature store (format {FORMAT_VERSION})")
        self.url = backend.url
        self.backend = backend.name
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.fingerprint_fields: dict[str, Any] = meta["fingerprint_fields"]
        self.attrs: dict[str, Any] = meta["provenance"]
        self.arrays = specs_from_json(meta["arrays"])
        self.views = tuple(meta["views"])
        self.shard_size = int(meta["shard_size"])
        self.keepbits = meta.get("keepbits")
        self.image_ids = [str(s) for s in backend.read("image_id", slice(None))[:: len(self.views)]]
        self._index = RowIndex(self.image_ids, self.views, self.url)
        self._written: np.ndarray | None = None

    # ------------------------------------------------------------ layout
    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def n_views(self) -> int:
        return len(self.views)

    @property
    def n_rows(self) -> int:
        return self.n_images * self.n_views

    @property
    def shard_rows_count(self) -> int:
        """Rows per full shard (``shard_size * n_views``)."""
        return self.shard_size * self.n_views

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    @property
    def writable(self) -> bool:
        return self._b.writable

    def row_of(self, image_id: str, view: str = "identity") -> int:
        """Row of (``image_id``, ``view``); KeyError naming the id or view when absent."""
        return self._index.row_of(image_id, view)

    def rows_of(self, ids: Sequence[str], view: str = "identity") -> np.ndarray:
        return np.array([self._index.row_of(i, view) for i in ids], dtype=np.int64)

    def shard_rows(self, k: int) -> range:
        """The rows of shard ``k``."""
        self._check_shard(k)
        start = k * self.shard_rows_count
        return range(start, min(start + self.shard_rows_count, self.n_rows))

    def shard_of_row(self, row: int) -> int:
        return int(row) // self.shard_rows_count

    def _check_shard(self, k: int) -> None:
        if not 0 <= k < self.n_shards:
            raise IndexError(f"{self.url}: shard {k} out of range 0..{self.n_shards - 1}")

    # ------------------------------------------------------------ state
    def committed(self) -> np.ndarray:
        """Per-shard commit marks as a bool array (read fresh)."""
        return self._b.read("commit", slice(None))[:, 0] == 1

    def missing_shards(self) -> list[int]:
        """Shards not yet committed, in order."""
        return [int(k) for k in np.flatnonzero(~self.committed())]

    @property
    def written(self) -> np.ndarray:
        """Per-row written mask (read fresh)."""
        self._written = self._b.read("written", slice(None)).astype(bool)
        return self._written.copy()

    @property
    def failures(self) -> dict[str, str]:
        """Image id -> reason for every row recorded as failed."""
        reasons = self._b.read("failure", slice(None))
        rows = [r for r, why in enumerate(reasons) if why]
        return {self.image_ids[r // self.n_views]: str(reasons[r]) for r in rows}

    def require_complete(self) -> None:
        """Raise ``IncompleteStoreError`` unless every row is written."""
        missing = self.missing_shards()
        unwritten = int((~self.written).sum())
        if missing or unwritten:
            failed = len(self.failures)
            raise IncompleteStoreError(
                f"{self.url}: {unwritten} of {self.n_rows} rows are not written "
                f"({len(missing)} of {self.n_shards} shards uncommitted, {failed} images "
                "failed); resume the extraction or read only the written rows"
            )

    # ------------------------------------------------------------ reading
    def read(
        self,
        rows: Any,
        names: Sequence[str] | None = None,
        *,
        allow_unwritten: bool = False,
        dtype: str | None = "float32",
    ) -> dict[str, np.ndarray]:
        """Read rows as float32 ``{name: (len(rows), *shape)}``.

        Args:
            rows: an int, slice, range or sequence of row indices (any order, repeats ok).
            names: arrays to read (all when None).
            allow_unwritten: serve unwritten rows (as NaN) instead of failing.
            dtype: output dtype; None keeps the stored dtype (float16 for compact RAM).

        Raises:
            IncompleteStoreError: when a row is not written, unless ``allow_unwritten``
                (unwritten rows then read as NaN).
        """
        sel, idx = normalise_rows(rows, self.n_rows, self.url)
        if not allow_unwritten:
            self._check_written(idx)
        out = {}
        for name in names if names is not None else self.arrays:
            if name not in self.arrays:
                raise KeyError(f"{self.url} has no array {name!r} (has {sorted(self.arrays)})")
            data = self._b.read(self.arrays[name].key, sel)
            out[name] = data if dtype is None else data.astype(dtype, copy=False)
        return out

    def _check_written(self, idx: np.ndarray) -> None:
        if self._written is None or not self._written[idx].all():
            _ = self.written
        assert self._written is not None
        bad = idx[~self._written[idx]]
        if len(bad):
            first = int(bad[0])
            raise IncompleteStoreError(
                f"{self.url}: {len(bad)} of {len(idx)} requested rows are not written "
                f"(first: row {first}, image {self.image_ids[first // self.n_views]!r}); "
                "pass allow_unwritten=True or read only written rows"
            )

    def _sizes(self, rows: Any) -> np.ndarray:
        sel, _ = normalise_rows(rows, self.n_rows, self.url)
        return self._b.read("sizes", sel)

    def valid_size(self, rows: Any) -> np.ndarray:
        """Valid (h, w) per row, ``(n, 2)``; -1 for unwritten rows."""
        return self._sizes(rows)[:, 2:4]

    def orig_size(self, rows: Any) -> np.ndarray:
        """Original image (h, w) per row, ``(n, 2)``; -1 for unwritten rows."""
        return self._sizes(rows)[:, 0:2]

    # ------------------------------------------------------------ misc
    def stored_bytes(self) -> int:
        return self._b.stored_bytes()

    def file_count(self) -> int:
        return self._b.file_count()

    def close(self) -> None:
        self._b.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.url!r}, backend={self.backend}, arrays={list(self.arrays)}, "
            f"rows={self.n_rows}, shards={self.n_shards}, fingerprint={self.fingerprint[:16]})"
        )


# ---------------------------------------------------------------- create / open


def store_fields(fields: Mapping[str, Any], keepbits: int | None = None) -> dict[str, Any]:
    """The fingerprint fields a store records: the caller's, plus ``lossy`` when bit-rounded.

    Lossless stores record the caller's fields unchanged, so ``fingerprint_of(fields)`` is
    the store's fingerprint; ``fingerprint_of(store_fields(fields, keepbits))`` in general.
    """
    out = dict(fields)
    if keepbits is not None:
        out["lossy"] = {"bitround_keepbits": keepbits}
    return out


def _check_keepbits(keepbits: int | None, arrays: Sequence[ArraySpec]) -> None:
    if keepbits is None:
        return
    for a in arrays:
        top = _MANTISSA_BITS[a.dtype] - 1
        if not 1 <= keepbits <= top:
            raise ValueError(f"keepbits={keepbits} invalid for {a.name!r} ({a.dtype}: 1..{top})")


def create_store(
    url: str,
    *,
    arrays: Sequence[ArraySpec],
    image_ids: Sequence[str],
    views: Sequence[str] = ("identity",),
    fingerprint_fields: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
    shard_size: int = 64,
    codec: str = "default",
    backend: str | None = None,
    keepbits: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FeatureStore:
    """Create a store, or reopen an existing one with the same fingerprint for resuming.

    Args:
        codec: ``"default"`` or one of ``cache.backends.CODECS`` (lossless).
        keepbits: mantissa bits kept by lossy bit-rounding (None: lossless).
        storage_options: fsspec options for remote URLs (endpoint, credentials).

    Raises:
        FingerprintMismatch: an existing store differs in fingerprint, image ids or shard size.
    """
    codec = DEFAULT_CODEC if codec == "default" else codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose 'default' or one of {CODECS}")
    _check_keepbits(keepbits, arrays)
    fields = store_fields(fingerprint_fields, keepbits)
    if store_exists(url, backend, storage_options):
        store = open_store(url, "a", backend=backend, storage_options=storage_options)
        check_same_layout(store, fields, (arrays, image_ids, views), shard_size)
        return store
    b = open_backend(url, "w", backend, storage_options)
    meta = create_layout(b, arrays, list(image_ids), tuple(views), shard_size, codec)
    meta.update(
        iqa_store=FORMAT_VERSION,
        fingerprint=_fingerprint_of(fields),
        fingerprint_fields=fields,
        keepbits=keepbits,
        provenance=_provenance(provenance, arrays, views, keepbits),
    )
    b.write_attrs(meta)  # last: a store without attributes does not exist
    b.flush()
    return FeatureStore(b)


def _provenance(
    given: Mapping[str, Any] | None, arrays: Sequence[ArraySpec], views: Sequence[str], kb: Any
) -> dict[str, Any]:
    out = dict(given or {})
    out.setdefault("dtype", {a.name: a.dtype for a in arrays})
    out.setdefault("views", list(views))
    out.setdefault("lossy", {"bitround_keepbits": kb} if kb is not None else None)
    out.setdefault("package_version", _package_version())
    out.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    return out


def open_store(
    url: str,
    mode: str = "r",
    *,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FeatureStore:
    """Open an existing store: ``mode="r"`` to read, ``"a"`` to resume writing.

    Opening for appending removes stale ``*.partial`` files left by a killed writer.
    """
    if mode not in ("r", "a"):
        raise ValueError(f"open_store mode must be 'r' or 'a', got {mode!r}")
    if not store_exists(url, backend, storage_options):
        raise StoreNotFoundError(f"no feature store at {url}")
    b = open_backend(url, mode, backend, storage_options)
    if mode == "a":
        b.clean_partial()
    return FeatureStore(b)
