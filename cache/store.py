"""The feature store: rows, shards, fingerprints, commit marks and verification, once.

``FeatureStore`` holds all the logic; the backends below it (``cache.backends``) only
store arrays and attributes; new stores are made by ``cache.create.create_store``. See
``cache.schema`` for the on-store layout and ``docs/INTERFACES.md`` ("cache.store") for the
contract.

Writing protocol (``store.writer.write_shard``, ``cache.shard_writer``): every feature
array gets one shard-aligned write, then the per-row ``written`` mask, sizes and failure
reasons, and last the ``commit`` row that holds the per-array checksums (xxh3-128; blake2b
in older stores) and the commit mark, after a flush of the rows it vouches for. Zarr writes
each key atomically (temporary ``*.partial`` file + rename) and HDF5 writes in SWMR mode
(``cache.backends.hdf5``), so a writer killed at any instant leaves every committed shard
intact and uncommitted shards are simply rewritten on resume. Zarr has no cross-process
locks: parallel writers claim whole shards (``cache.claims``).

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

from collections.abc import Sequence
from typing import Any

import numpy as np

from cache.backends import (
    Backend,
    Capabilities,
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    backend_class,
    open_backend,
    store_exists,
)
from cache.claims import ClaimFolder
from cache.fingerprint import FingerprintMismatch
from cache.layout import RowIndex, as_dtype, normalise_rows
from cache.record import backbone_of, record_dict
from cache.schema import (
    FORMAT_VERSION,
    LEGACY_CHECKSUM,
    ArraySpec,
    IncompleteStoreError,
    VerifyReport,
    specs_from_json,
)
from cache.shard_writer import CorruptShardError, ShardWriter

__all__ = [
    "ArraySpec",
    "CorruptShardError",
    "FeatureStore",
    "FingerprintMismatch",
    "IncompleteStoreError",
    "StoreBusyError",
    "StoreError",
    "StoreNotFoundError",
    "VerifyReport",
    "open_store",
]


class FeatureStore:
    """A fingerprinted, sharded feature store (open it with ``create_store``/``open_store``).

    Attributes:
        url: where the store lives.
        backend: ``"zarr"``, ``"hdf5"`` or ``"memory"``.
        capabilities: what the backend can do (parallel writers, locking, ...).
        fingerprint: sha256 of ``fingerprint_fields``.
        fingerprint_fields: the caller's fields plus the store's own ``_store`` section.
        provenance: what the store records of its making (dataset, extraction record,
            versions, ...), stored under the key "provenance".
        backbone: the backbone's name (a property: the one reader of it).
        arrays: ``{name: ArraySpec}``.
        image_ids, views, n_images, n_rows, shard_size, n_shards: the row layout.
        verify_reads: check each shard's checksums the first time it is read.
    """

    def __init__(self, backend: Backend, verify_reads: bool = False) -> None:
        self._backend = backend
        meta = backend.read_attrs()
        if meta.get("iqa_store") != FORMAT_VERSION:
            raise StoreError(f"{backend.url} is not a feature store (format {FORMAT_VERSION})")
        self.url = backend.url
        self.backend = backend.name
        self.capabilities: Capabilities = backend.capabilities
        self.meta = meta
        self.fingerprint: str = meta["fingerprint"]
        self.fingerprint_fields: dict[str, Any] = meta["fingerprint_fields"]
        self.provenance: dict[str, Any] = meta["provenance"]
        self.arrays = specs_from_json(meta["arrays"])
        self.views = tuple(meta["views"])
        self.shard_size = int(meta["shard_size"])
        self.keepbits = meta.get("keepbits")
        self.checksum = str(meta.get("checksum", LEGACY_CHECKSUM))  # see cache.shard_writer
        self.image_ids = [str(s) for s in backend.read("image_id", slice(None))[:: len(self.views)]]
        self._index = RowIndex(self.image_ids, self.views, self.url)
        self._written: np.ndarray | None = None
        self.verify_reads = verify_reads
        self.writer = ShardWriter(self)  # writer.write_shard(k, ...): shard k, whole

    @property
    def backbone(self) -> str:
        """The backbone that computed the features ("" when the store names none).

        Every reader takes the name from here (``cache.record.backbone_of``).
        """
        return backbone_of(self.fingerprint_fields, self.provenance, record_dict(self.provenance))

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
        return self._backend.writable

    def claims(self) -> ClaimFolder | None:
        """The per-shard writer claims of a store whose backend coordinates writers so."""
        root = self._backend.claim_root()
        if root is None or self.capabilities.locking != "shard-claims":
            return None
        return ClaimFolder(root, getattr(self._backend, "_options", None) or None)

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
        return self._backend.read("commit", slice(None))[:, 0] == 1

    def missing_shards(self) -> list[int]:
        """Shards not yet committed, in order."""
        return [int(k) for k in np.flatnonzero(~self.committed())]

    @property
    def written(self) -> np.ndarray:
        """Per-row written mask (read fresh)."""
        self._written = self._backend.read("written", slice(None)).astype(bool)
        return self._written.copy()

    @property
    def failures(self) -> dict[str, str]:
        """Image id -> reason for every row recorded as failed."""
        reasons = self._backend.read("failure", slice(None))
        rows = [r for r, why in enumerate(reasons) if why]
        return {self.image_ids[r // self.n_views]: str(reasons[r]) for r in rows}

    def failed_rows(self) -> np.ndarray:
        """Rows recorded as failures (their shard committed, the row not written)."""
        reasons = self._backend.read("failure", slice(None))
        return np.array([r for r, why in enumerate(reasons) if why], dtype=np.int64)

    # ------------------------------------------------------------ writing
    def verify(self) -> VerifyReport:
        """Recompute every committed shard's checksums; report corrupt and missing parts."""
        return self.writer.verify()

    def tidy(self) -> bool:
        """Remove temporary files from a complete store that nobody else is writing.

        Returns:
            True when the store is complete and holds no temporary files now.
        """
        if self.missing_shards():
            return False
        claims = self.claims()
        if claims is not None:
            if claims.live_names():
                return False
            claims.clean_stale()
        self._backend.clean_partial(older_than_s=0.0)
        return True

    def uncommit(self, shards: Sequence[int]) -> None:
        """Clear the commit marks of ``shards`` so a resumed extraction rewrites them."""
        width = 1 + len(self.arrays) * 16
        for k in shards:
            self._check_shard(k)
            self._backend.write("commit", int(k), np.zeros((1, width), np.uint8))
        self._backend.flush()
        self.writer.forget()

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
            if self.verify_reads:
                self.writer.check_read(idx, name)
            data = self._read_array(name, sel)
            out[name] = data if dtype is None else as_dtype(data, dtype)
        return out

    def _read_array(self, name: str, sel: Any) -> np.ndarray:
        try:
            return self._backend.read(self.arrays[name].key, sel)
        except (OSError, ValueError, RuntimeError) as err:
            raise CorruptShardError(
                f"{self.url}: array {name!r} cannot be read ({err}); run 'iqa-cache verify "
                f"{self.url}' and re-extract the damaged shards"
            ) from err

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
        return self._backend.read("sizes", sel)

    def valid_size(self, rows: Any) -> np.ndarray:
        """Valid (h, w) per row, ``(n, 2)``; -1 for unwritten rows."""
        return self._sizes(rows)[:, 2:4]

    def orig_size(self, rows: Any) -> np.ndarray:
        """Original image (h, w) per row, ``(n, 2)``; -1 for unwritten rows."""
        return self._sizes(rows)[:, 0:2]

    # ------------------------------------------------------------ misc
    def read_raw(self, name: str, rows: Any) -> np.ndarray:
        """Rows of a bookkeeping array (``written``, ``sizes``, ``failure``, ``commit``)."""
        if name not in ("written", "sizes", "failure", "commit", "image_id", "view"):
            raise KeyError(f"{name!r} is not a bookkeeping array of {self.url}")
        return self._backend.read(name, rows)

    def stored_bytes(self) -> int:
        return self._backend.stored_bytes()

    def file_count(self) -> int:
        return self._backend.file_count()

    def close(self) -> None:
        self._backend.close()

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


def open_store(
    url: str,
    mode: str = "r",
    *,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    verify: bool = False,
) -> FeatureStore:
    """Open an existing store: ``mode="r"`` to read, ``"a"`` to resume writing.

    Args:
        verify: check each shard's checksums the first time it is read (training reads).

    Opening for appending removes stale ``*.partial`` files left by a killed writer and
    stale writer claims.

    Raises:
        StoreNotFoundError: naming the URL, when no store is there.
        StoreBusyError: another process holds the store's exclusive write lock.
    """
    if mode not in ("r", "a"):
        raise ValueError(f"open_store mode must be 'r' or 'a', got {mode!r}")
    if not store_exists(url, backend, storage_options):
        raise StoreNotFoundError(_not_found(url, backend, storage_options))
    b = open_backend(url, mode, backend, storage_options)
    store = FeatureStore(b, verify_reads=verify)
    if mode == "a":
        b.clean_partial()
        claims = store.claims()
        if claims is not None:
            claims.clean_stale()
    return store


def _not_found(url: str, backend: str | None, storage_options: dict[str, Any] | None) -> str:
    cls = backend_class(url, backend)
    if cls.exists(url, storage_options):
        try:
            cls(url, "r", storage_options=storage_options).close()
        except StoreError as err:
            return str(err)
    if cls.occupied(url, storage_options):
        return (f"{url} is not a feature store (no store attributes: an interrupted "
                "creation, or another kind of data)")
    return f"no feature store at {url} (check the path, or run iqa-extract first)"
