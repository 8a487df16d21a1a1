"""Read path for training: lazy, fork-safe datasets over one store or a matched pair.

Rules these classes keep (from the zarr and h5py issue trackers, e.g. pytorch#11929):

* A dataset holds a URL, never an open store, when it is pickled or forked: the store is
  opened on first use inside each process (DataLoader worker) and dropped by
  ``__getstate__``. Zarr's event loop thread and h5py file handles do not survive a fork.
* Items come out as float32 tensors; rows that are not written are refused at
  construction unless ``written_only=True`` (serve only the written rows).
* ``preload=True`` reads the selected rows into RAM once (in the stored dtype, float16
  by default) after checking the size against the memory available, so forked workers
  share the pages copy-on-write.

An item is ``{"features": {name: (*shape) float32}, "valid_size": (2,) int64, "row": int}``;
``PairedFeatureDataset`` adds ``"ref_features"``, ``"ref_valid_size"`` and ``"ref_row"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cache.fingerprint import check_fingerprint
from cache.schema import IncompleteStoreError
from cache.store import FeatureStore, open_store

PRELOAD_FRACTION = 0.8


def available_memory() -> int:
    """Bytes of memory available to this process (``MemAvailable``, else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(nbytes: int, what: str, available: int | None = None) -> None:
    """Fail with a clear message when ``nbytes`` exceed 80 % of available memory."""
    available = available_memory() if available is None else available
    if nbytes > PRELOAD_FRACTION * available:
        raise MemoryError(
            f"preloading {what} needs {nbytes / 2**30:.2f} GiB but only "
            f"{available / 2**30:.2f} GiB are available (limit {PRELOAD_FRACTION:.0%}); "
            "use preload=False to read rows lazily"
        )


class _LazyStore:
    """One store per process, opened on first use and never pickled."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.url, self.options = url, options
        self._store: FeatureStore | None = None
        self._pid = -1

    def get(self) -> FeatureStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.url, "r", **self.options)
            self._pid = os.getpid()
        return self._store

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "options": self.options, "_store": None, "_pid": -1}


def _select_rows(store: FeatureStore, rows: Sequence[int] | None, written_only: bool) -> np.ndarray:
    rows_arr = np.arange(store.n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    written = store.written[rows_arr]
    if written_only:
        return rows_arr[written]
    if not written.all():
        raise IncompleteStoreError(
            f"{store.url}: {int((~written).sum())} of {len(rows_arr)} selected rows are not "
            "written; resume the extraction or pass written_only=True"
        )
    return rows_arr


class _Source:
    """Rows of one store, read lazily or from a RAM copy."""

    def __init__(self, url: str, names: Sequence[str] | None, options: dict[str, Any]) -> None:
        self.lazy = _LazyStore(url, options)
        self.names = names
        self.ram: dict[str, np.ndarray] | None = None
        self.ram_valid: np.ndarray | None = None
        self.ram_pos: dict[int, int] = {}

    def preload(self, store: FeatureStore, rows: np.ndarray) -> None:
        uniq = np.unique(rows)
        names = list(self.names or store.arrays)
        nbytes = sum(len(uniq) * store.arrays[n].row_bytes for n in names)
        check_fits(nbytes, f"{len(uniq)} rows of {store.url}")
        self.ram = store.read(uniq, names, dtype=None)
        self.ram_valid = store.valid_size(uniq).astype(np.int64)
        self.ram_pos = {int(r): i for i, r in enumerate(uniq)}

    def fetch(self, rows: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if self.ram is not None and self.ram_valid is not None:
            pos = [self.ram_pos[int(r)] for r in rows]
            feats = {n: a[pos].astype(np.float32) for n, a in self.ram.items()}
            return feats, self.ram_valid[pos]
        store = self.lazy.get()
        feats = store.read(list(rows), self.names, allow_unwritten=True)
        return feats, store.valid_size(list(rows)).astype(np.int64)


def _items(
    feats: dict[str, np.ndarray], valid: np.ndarray, rows: Sequence[int], prefix: str = ""
) -> list[dict[str, Any]]:
    return [
        {
            f"{prefix}features": {n: torch.from_numpy(a[i]) for n, a in feats.items()},
            f"{prefix}valid_size": torch.from_numpy(valid[i]),
            f"{prefix}row": int(r),
        }
        for i, r in enumerate(rows)
    ]


class FeatureDataset(Dataset):
    """Rows of one feature store as float32 tensors (see the module docstring).

    Args:
        url: the store.
        rows: rows to serve, in this order (all rows when None).
        names: arrays to read (all when None).
        written_only: drop unwritten rows instead of refusing them.
        preload: read the rows into RAM now (checked against available memory).
        fingerprint: when given, the store must have this fingerprint (hash or fields).
        **options: ``backend`` / ``storage_options`` passed to ``open_store``.
    """

    def __init__(
        self,
        url: str,
        rows: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        *,
        written_only: bool = False,
        preload: bool = False,
        fingerprint: str | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self._src = _Source(url, names, options)
        with open_store(url, "r", **options) as store:
            if fingerprint is not None:
                check_fingerprint(fingerprint, store)
            self.rows = _select_rows(store, rows, written_only)
            self.image_ids = [store.image_ids[r // store.n_views] for r in self.rows]
            self.specs = {n: s for n, s in store.arrays.items() if names is None or n in names}
            if preload:
                self._src.preload(store, self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Fetch a whole batch in one store read (used by DataLoader when present)."""
        rows = [int(self.rows[i]) for i in indices]
        feats, valid = self._src.fetch(rows)
        return _items(feats, valid, rows)


class PairedFeatureDataset(Dataset):
    """Rows of store A in lock step with the rows of their references in store B.

    For each served row of A (image ``i``, view ``v``) the item also carries the row of
    (``ref_of(i)``, ``v``) in B, for full-reference heads. A and B may be the same store.

    Args:
        url: store A (distorted images).
        ref_url: store B (references); the same URL reads both from one store.
        ref_of: image id -> reference id (a mapping, e.g. from the manifest, or a function).
        rows, names, written_only, preload, **options: as for ``FeatureDataset``; a row of A
            whose reference row is unwritten is refused, or dropped with ``written_only``.
    """

    def __init__(
        self,
        url: str,
        ref_url: str,
        ref_of: Mapping[str, str] | Callable[[str], str],
        rows: Sequence[int] | None = None,
        names: Sequence[str] | None = None,
        *,
        written_only: bool = False,
        preload: bool = False,
        **options: Any,
    ) -> None:
        lookup = ref_of.__getitem__ if isinstance(ref_of, Mapping) else ref_of
        self._a = FeatureDataset(url, rows, names, written_only=written_only, **options)
        same = ref_url == url
        self._b = self._a._src if same else _Source(ref_url, names, options)
        with open_store(url, "r", **options) as a, open_store(ref_url, "r", **options) as ref:
            ref_rows = self._match(a, ref, self._a.rows, lookup)
            keep = self._keep_written(ref, ref_rows, written_only)
            self._a.rows, self.ref_rows = self._a.rows[keep], ref_rows[keep]
            self.image_ids = [self._a.image_ids[i] for i in np.flatnonzero(keep)]
            if preload and same:
                self._a._src.preload(a, np.concatenate([self._a.rows, self.ref_rows]))
            elif preload:
                self._a._src.preload(a, self._a.rows)
                self._b.preload(ref, self.ref_rows)

    @staticmethod
    def _match(
        a: FeatureStore, ref: FeatureStore, rows: np.ndarray, lookup: Callable[[str], str]
    ) -> np.ndarray:
        out = []
        for r in rows:
            image, view = a.image_ids[r // a.n_views], a.views[r % a.n_views]
            try:
                ref_id = lookup(image)
            except KeyError:
                raise KeyError(f"row {r} of {a.url}: image {image!r} has no reference") from None
            out.append(ref.row_of(ref_id, view))
        return np.asarray(out, dtype=np.int64)

    @staticmethod
    def _keep_written(ref: FeatureStore, ref_rows: np.ndarray, written_only: bool) -> np.ndarray:
        ok = ref.written[ref_rows] if len(ref_rows) else np.ones(0, bool)
        if not written_only and not ok.all():
            raise IncompleteStoreError(
                f"{ref.url}: {int((~ok).sum())} reference rows are not written; "
                "resume the extraction or pass written_only=True"
            )
        return ok

    @property
    def rows(self) -> np.ndarray:
        return self._a.rows

    def __len__(self) -> int:
        return len(self._a)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        items = self._a.__getitems__(indices)
        ref_rows = [int(self.ref_rows[i]) for i in indices]
        feats, valid = self._b.fetch(ref_rows)
        for item, ref in zip(items, _items(feats, valid, ref_rows, "ref_"), strict=True):
            item.update(ref)
        return items
