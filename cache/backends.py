"""The small storage interface under ``FeatureStore``, the in-memory backend, and URL dispatch.

A backend stores named N-d arrays (rows first) and one JSON attribute mapping; it knows
nothing of shards, fingerprints or commit marks, which live once in ``cache.store``. Three
backends implement it:

* ``ZarrBackend`` (``cache.zarr_backend``): Zarr v3 on a local directory or any fsspec URL.
* ``HDF5Backend`` (``cache.hdf5_backend``): one HDF5 file through h5py.
* ``MemoryBackend`` (here): numpy arrays in a per-process registry keyed by URL.

URL dispatch (``backend_name_for``): ``*.h5`` / ``*.hdf5`` -> hdf5; ``memory://name`` ->
the numpy memory backend (the fast one for tests; it lives in this process and is inherited
by forked children only); anything else (a path, ``file://``, ``s3://``) -> zarr. Passing
``backend="zarr"`` with a ``memory://`` URL gives a Zarr store on fsspec's in-memory file
system instead, which exercises the real Zarr code path without touching disk.
"""

from __future__ import annotations

import copy
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("zarr", "hdf5", "memory")
CODECS = ("none", "zstd", "blosc-zstd", "blosc-lz4")
STRING = "str"


class StoreError(RuntimeError):
    """A store cannot be opened, created or written as asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No feature store exists at the URL."""


RowSelection = slice | np.ndarray


class Backend(ABC):
    """Named row-major arrays plus one JSON attribute mapping.

    Attributes:
        url: where the store lives.
        writable: False for a read-only open.
    """

    name: str = ""

    def __init__(self, url: str, writable: bool) -> None:
        self.url = url
        self.writable = writable

    @abstractmethod
    def create_array(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: str,
        *,
        chunks: tuple[int, ...],
        shard_rows: int | None = None,
        fill_value: Any = None,
        codec: str = "none",
    ) -> dict[str, Any]:
        """Create an array (``dtype`` ``"str"`` for variable-length text).

        Args:
            shard_rows: rows per shard file where the backend shards (Zarr); others ignore it.
            codec: one of ``CODECS``.

        Returns:
            the backend's own description of the codec it used (JSON-able).
        """

    @abstractmethod
    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Write ``data`` into rows ``start:start+len(data)`` of array ``name``."""

    @abstractmethod
    def read(self, name: str, rows: RowSelection) -> np.ndarray:
        """Read the rows selected by a slice or an integer index array (any order)."""

    @abstractmethod
    def read_attrs(self) -> dict[str, Any]:
        """The store's attribute mapping."""

    @abstractmethod
    def write_attrs(self, attrs: dict[str, Any]) -> None:
        """Replace the store's attribute mapping."""

    def stored_bytes(self) -> int:
        """Bytes the store takes where it lives (best effort; 0 when unknown)."""
        return 0

    def file_count(self) -> int:
        """Number of files or objects the store is made of."""
        return 1

    def clean_partial(self, older_than_s: float = 900.0) -> list[str]:
        """Remove stale temporary files left by a killed writer; return what was removed."""
        return []

    def flush(self) -> None:
        """Push buffered writes to where the store lives."""
        return None

    def close(self) -> None:
        """Release handles (a closed backend must not be used again)."""
        return None


def sorted_read(read_sorted: Any, rows: np.ndarray) -> np.ndarray:
    """Read arbitrary ``rows`` through a reader that needs increasing unique indices."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    return read_sorted(uniq)[inverse]


# ---------------------------------------------------------------- memory backend

_MEMORY: dict[str, dict[str, Any]] = {}


class MemoryBackend(Backend):
    """numpy arrays in a registry keyed by URL, shared by every open of that URL."""

    name = "memory"

    def __init__(self, url: str, mode: str) -> None:
        super().__init__(url, writable=mode != "r")
        if mode == "w" or url not in _MEMORY:
            if mode == "r":
                raise StoreError(f"no in-memory store at {url}")
            _MEMORY[url] = {"arrays": {}, "attrs": {}}
        self._data = _MEMORY[url]

    @staticmethod
    def exists(url: str) -> bool:
        return bool(_MEMORY.get(url, {}).get("attrs"))

    @staticmethod
    def remove(url: str) -> None:
        _MEMORY.pop(url, None)

    def create_array(self, name, shape, dtype, *, chunks, shard_rows=None, fill_value=None,
                     codec="none"):  # fmt: skip
        np_dtype = object if dtype == STRING else np.dtype(dtype)
        fill = "" if dtype == STRING else (0 if fill_value is None else fill_value)
        self._data["arrays"][name] = np.full(shape, fill, dtype=np_dtype)
        return {"codec": "none (in memory)"}

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        arr = self._data["arrays"][name]
        arr[start : start + len(data)] = data

    def read(self, name: str, rows: RowSelection) -> np.ndarray:
        return self._data["arrays"][name][rows].copy()

    def read_attrs(self) -> dict[str, Any]:
        return copy.deepcopy(self._data["attrs"])

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        self._data["attrs"] = json.loads(json.dumps(attrs))

    def stored_bytes(self) -> int:
        return int(sum(a.nbytes for a in self._data["arrays"].values()))

    def file_count(self) -> int:
        return 0


# ---------------------------------------------------------------- dispatch


def backend_name_for(url: str, backend: str | None = None) -> str:
    """Which backend serves ``url`` (see the module docstring), or check an explicit one."""
    if backend is not None:
        if backend not in BACKENDS:
            raise StoreError(f"unknown backend {backend!r} for {url}; choose one of {BACKENDS}")
        return backend
    if url.lower().endswith((".h5", ".hdf5")):
        return "hdf5"
    if url.startswith("memory://"):
        return "memory"
    return "zarr"


def local_path(url: str) -> Path | None:
    """The local file-system path of ``url``, or None for a remote or in-memory URL."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(os.path.expanduser(url))


def open_backend(
    url: str,
    mode: str,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Backend:
    """Open ``url`` with mode ``"r"`` (read), ``"a"`` (read/write) or ``"w"`` (create anew)."""
    if mode not in ("r", "a", "w"):
        raise StoreError(f"mode must be 'r', 'a' or 'w', got {mode!r} for {url}")
    name = backend_name_for(url, backend)
    if name == "memory":
        return MemoryBackend(url, mode)
    if name == "hdf5":
        from cache.hdf5_backend import HDF5Backend

        return HDF5Backend(url, mode)
    from cache.zarr_backend import ZarrBackend

    return ZarrBackend(url, mode, storage_options=storage_options)


def store_exists(
    url: str, backend: str | None = None, storage_options: dict[str, Any] | None = None
) -> bool:
    """True when ``url`` holds a feature store (its attributes exist)."""
    name = backend_name_for(url, backend)
    if name == "memory":
        return MemoryBackend.exists(url)
    try:
        b = open_backend(url, "r", backend, storage_options)
    except (StoreError, FileNotFoundError, OSError):
        return False
    try:
        return "iqa_store" in b.read_attrs()
    finally:
        b.close()
