"""The one read path for training: row selection, fork-safe lazy rows, RAM preloading.

Everything that trains from a store reads through here: the torch datasets below and the
heads' training data (``heads.split_data``). The pieces:

* :func:`select_rows` (the one primitive): image ids x views -> store rows ``(N, V)``, and
  the rows of each image's reference in a reference store (FR), refusing unwritten rows
  unless ``written_only`` (then they are dropped and counted).
* :class:`StoreHandle`: a URL that opens its store on first use in each process and is
  never pickled open. Zarr's event-loop thread and h5py file handles do not survive a
  fork (pytorch#11929), so DataLoader workers open their own.
* :class:`RowReader`: rows of one store, read lazily or from a RAM copy (``preload``,
  checked against the memory available; float16 stays float16 in RAM and workers share
  the pages copy-on-write).
* :class:`StoreArray`: a ``(N, V, *shape)`` view of one array at a selection's rows that
  reads on indexing ``[rows, views]`` (what ``heads.part_tensors.TrainData`` holds when a
  part does not fit in RAM).
* :class:`FeatureDataset`, :class:`PairedFeatureDataset`: torch datasets on top.

Reads are verified: stores are opened with ``verify=True``, so each shard's checksum is
checked the first time a process reads it (a flipped bit or a deleted shard file stops
training with one line naming the shard instead of training silently on damage).

An item is ``{"features": {name: (*shape) float32}, "valid_size": (2,) int64, "row": int}``;
``PairedFeatureDataset`` adds ``"ref_features"``, ``"ref_valid_size"`` and ``"ref_row"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch
from torch.utils.data import Dataset

from cache.fingerprint import check_fingerprint
from cache.schema import IncompleteStoreError, missing_advice
from cache.store import FeatureStore, open_store

PRELOAD_FRACTION = 0.8


def available_memory() -> int:
    """Bytes of memory available to this process (psutil's ``available``)."""
    return int(psutil.virtual_memory().available)


def check_fits(nbytes: int, what: str, available: int | None = None) -> None:
    """Fail with a clear message when ``nbytes`` exceed 80 % of available memory."""
    available = available_memory() if available is None else available
    if nbytes > PRELOAD_FRACTION * available:
        raise MemoryError(
            f"preloading {what} needs {nbytes / 2**30:.2f} GiB but only "
            f"{available / 2**30:.2f} GiB are available (limit {PRELOAD_FRACTION:.0%}); "
            "use preload=False to read rows lazily"
        )


def fits(nbytes: int) -> bool:
    """True when ``nbytes`` can be preloaded (see :func:`check_fits`)."""
    return nbytes <= PRELOAD_FRACTION * available_memory()


class StoreHandle:
    """One open store per process, opened (verified) on first use and never pickled."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url, self.options = url, dict(options or {})
        self._store: FeatureStore | None = None
        self._pid = -1

    def get(self) -> FeatureStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.url, "r", verify=True, **self.options)
            self._pid = os.getpid()
        return self._store

    def close(self) -> None:
        if self._store is not None and self._pid == os.getpid():
            self._store.close()
        self._store = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "options": self.options, "_store": None, "_pid": -1}


# ---------------------------------------------------------------- selection


@dataclass
class RowSelection:
    """Store rows of a list of images (every view), and the rows of their references.

    Attributes:
        image_ids: the kept images, in the order asked.
        rows: ``(N, V)`` rows of each kept image, one column per view.
        ref_rows: ``(N, V)`` rows of each image's reference in the reference store, or None.
        views: the views, in column order.
        dropped: images left out because a row (or a reference row) is not written.
    """

    image_ids: list[str]
    rows: np.ndarray
    ref_rows: np.ndarray | None
    views: tuple[str, ...]
    dropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.image_ids)


def _rows_of(store: FeatureStore, ids: Sequence[str], views: Sequence[str]) -> np.ndarray:
    if not len(ids):
        return np.zeros((0, len(views)), np.int64)
    return np.stack([store.rows_of(ids, v) for v in views], axis=1)  # (N, V)


def reference_rows(
    store: FeatureStore, ref_store: FeatureStore, rows: np.ndarray,
    ref_of: Mapping[str, str] | Callable[[str], str],
) -> np.ndarray:
    """For each row of ``store`` (any shape), the row of its image's reference in the same
    view in ``ref_store``.

    Raises:
        KeyError: an image without a reference, or a reference not in ``ref_store``.
    """
    lookup = ref_of.__getitem__ if isinstance(ref_of, Mapping) else ref_of
    flat = [
        ref_store.row_of(_ref_id(lookup, store.image_ids[r // store.n_views]),
                         store.views[r % store.n_views])
        for r in np.asarray(rows).reshape(-1).tolist()
    ]
    return np.asarray(flat, dtype=np.int64).reshape(np.shape(rows))


def written_mask(
    store: FeatureStore, rows: np.ndarray, *, ref_store: FeatureStore | None = None,
    ref_rows: np.ndarray | None = None, written_only: bool = False, what: str = "selected",
    unit: str = "images",
) -> np.ndarray:
    """Per row of ``rows`` (N, V): are all its views (and their references) written?

    Raises:
        IncompleteStoreError: something is unwritten and ``written_only`` is False; the
            message says what to do.
    """
    keep = store.written[rows].all(axis=1) if len(rows) else np.ones(0, bool)
    if ref_store is not None and ref_rows is not None and len(ref_rows):
        keep &= ref_store.written[ref_rows].all(axis=1)
    if not keep.all() and not written_only:
        first = int(rows[np.flatnonzero(~keep)[0], 0])
        image = store.image_ids[first // store.n_views]
        where = store if not store.written[rows].all() or ref_store is None else ref_store
        advice = missing_advice(bool(where.missing_shards()), bool(where.failures))
        state = "are not written" if unit == "rows" else "have unwritten rows"
        raise IncompleteStoreError(
            f"{where.url}: {int((~keep).sum())} of {len(keep)} {what} {unit} {state} "
            f"(first {image!r}); {advice}"
        )
    return keep


def select_rows(
    store: FeatureStore,
    ids: Sequence[str] | None = None,
    *,
    views: Sequence[str] | None = None,
    ref_store: FeatureStore | None = None,
    ref_of: Mapping[str, str] | Callable[[str], str] | None = None,
    written_only: bool = False,
    what: str = "selected",
) -> RowSelection:
    """The rows of ``ids`` (all images when None) in every view, plus reference rows.

    Args:
        ids: image ids in the order wanted.
        views: views to serve (all of the store's when None).
        ref_store: store of the references (may be ``store`` itself); needs ``ref_of``.
        ref_of: image id -> reference id (a mapping, e.g. from the manifest, or a function).
        written_only: drop images with an unwritten row instead of refusing them.
        what: names the selection in messages ("train", "test"...).

    Raises:
        KeyError: an image (or reference) that is not in its store, or has no reference.
        IncompleteStoreError: unwritten rows without ``written_only``, with what to do.
    """
    ids = list(store.image_ids if ids is None else ids)
    views = tuple(store.views if views is None else views)
    rows = _rows_of(store, ids, views)
    ref_rows = None
    if ref_store is not None:
        if ref_of is None:
            raise ValueError("select_rows: a reference store needs ref_of")
        ref_rows = reference_rows(store, ref_store, rows, ref_of)
    keep = written_mask(store, rows, ref_store=ref_store, ref_rows=ref_rows,
                        written_only=written_only, what=what)
    return RowSelection(
        image_ids=[i for i, k in zip(ids, keep, strict=True) if k],
        rows=rows[keep],
        ref_rows=None if ref_rows is None else ref_rows[keep],
        views=views,
        dropped=[i for i, k in zip(ids, keep, strict=True) if not k],
    )


def _ref_id(lookup: Callable[[str], str], image: str) -> str:
    try:
        ref = lookup(image)
    except KeyError:
        ref = ""
    if not ref:
        raise KeyError(f"image {image!r} has no reference (a full-reference head needs one)")
    return ref


# ---------------------------------------------------------------- reading


class RowReader:
    """Rows of one store, read lazily (per process) or from a RAM copy."""

    def __init__(self, url: str, names: Sequence[str] | None, options: Mapping[str, Any]):
        self.handle = StoreHandle(url, options)
        self.names = list(names) if names is not None else None
        self.ram: dict[str, np.ndarray] | None = None
        self.ram_valid: np.ndarray | None = None
        self._pos: dict[int, int] = {}

    def preload(self, store: FeatureStore, rows: np.ndarray) -> None:
        """Read ``rows`` into RAM now, in the stored dtype (checked against free memory)."""
        uniq = np.unique(rows)
        names = list(self.names or store.arrays)
        nbytes = sum(len(uniq) * store.arrays[n].row_bytes for n in names)
        check_fits(nbytes, f"{len(uniq)} rows of {store.url}")
        self.ram = store.read(uniq, names, dtype=None)
        self.ram_valid = store.valid_size(uniq).astype(np.int64)
        self._pos = {int(r): i for i, r in enumerate(uniq)}

    def fetch(self, rows: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features (float32) and valid sizes of ``rows``, in order."""
        if self.ram is not None and self.ram_valid is not None:
            pos = [self._pos[int(r)] for r in rows]
            feats = {n: a[pos].astype(np.float32) for n, a in self.ram.items()}
            return feats, self.ram_valid[pos]
        store = self.handle.get()
        feats = store.read(list(rows), self.names, allow_unwritten=True)
        return feats, store.valid_size(list(rows)).astype(np.int64)


class StoreArray:
    """A ``(N, V, *shape)`` float32 view of one store array at fixed rows, read on indexing.

    Indexing with ``[rows, views]`` (two equal-length integer tensors) reads those rows
    from the store; it holds a URL, not an open store, so it is fork-safe.
    """

    def __init__(self, url: str, name: str, rowmat: np.ndarray, shape: tuple[int, ...],
                 options: Mapping[str, Any] | None = None) -> None:
        self.reader = RowReader(url, [name], options or {})
        self.name, self.rowmat = name, rowmat
        self.shape = torch.Size((*rowmat.shape, *shape))

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        rows = self.rowmat[np.asarray(key[0]), np.asarray(key[1])]
        return torch.from_numpy(self.reader.fetch(rows.tolist())[0][self.name])


def load_arrays(
    store: FeatureStore, rowmat: np.ndarray, preload: bool | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every array of ``store`` at ``rowmat`` (N, V): tensors in the stored dtype (float16
    by default: half the RAM; batches are cast to float32), or ``StoreArray`` s.

    ``preload`` None preloads when the rows fit in memory.
    """
    if rowmat.size == 0:
        return {n: torch.zeros(*rowmat.shape, *s.shape) for n, s in store.arrays.items()}
    nbytes = rowmat.size * sum(s.row_bytes for s in store.arrays.values())
    if not (fits(nbytes) if preload is None else preload):
        return {
            n: StoreArray(store.url, n, rowmat, s.shape, options)
            for n, s in store.arrays.items()
        }
    flat = store.read(rowmat.reshape(-1).tolist(), dtype=None)
    return {n: torch.from_numpy(a).view(*rowmat.shape, *a.shape[1:]) for n, a in flat.items()}


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


# ---------------------------------------------------------------- torch datasets


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
        self._src = RowReader(url, names, options)
        with open_store(url, "r", verify=True, **options) as store:
            if fingerprint is not None:
                check_fingerprint(fingerprint, store)
            rows_arr = np.arange(store.n_rows) if rows is None else np.asarray(rows, np.int64)
            keep = written_mask(store, rows_arr[:, None], written_only=written_only, unit="rows")
            self.rows = rows_arr[keep]
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
        self._a = FeatureDataset(url, rows, names, written_only=written_only, **options)
        same = ref_url == url
        self._ref = self._a._src if same else RowReader(ref_url, names, options)
        with open_store(url, "r", **options) as a, open_store(ref_url, "r", **options) as ref:
            ref_rows = reference_rows(a, ref, self._a.rows, ref_of)
            ok = written_mask(a, self._a.rows[:, None], ref_store=ref, ref_rows=ref_rows[:, None],
                              written_only=written_only, what="reference",
                              unit="rows")
            self._a.rows, self.ref_rows = self._a.rows[ok], ref_rows[ok]
            self.image_ids = [self._a.image_ids[i] for i in np.flatnonzero(ok)]
            if preload and same:
                self._a._src.preload(a, np.concatenate([self._a.rows, self.ref_rows]))
            elif preload:
                self._a._src.preload(a, self._a.rows)
                self._ref.preload(ref, self.ref_rows)

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
        feats, valid = self._ref.fetch(ref_rows)
        for item, ref in zip(items, _items(feats, valid, ref_rows, "ref_"), strict=True):
            item.update(ref)
        return items
