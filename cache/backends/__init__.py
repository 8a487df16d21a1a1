"""Storage backends under ``FeatureStore``: a small interface, capability flags, a registry.

A backend stores named N-d arrays (rows first) and one JSON attribute mapping; it knows
nothing of shards, fingerprints or commit marks, which live once in ``cache.store``.
``BACKENDS`` is a literal registry from a name to the backend class's module path:

* ``zarr`` (``cache.backends.zarr``): Zarr v3 on a local directory or any fsspec URL.
* ``hdf5`` (``cache.backends.hdf5``): one HDF5 file through h5py.
* ``memory`` (``cache.backends.memory``): numpy arrays in a per-process registry.

Callers never test a backend's name: they ask its ``capabilities`` (can several processes
write disjoint shards at once, how writers are kept apart, are single-row reads cheap, is
it remote). Adding a backend means its module and one registry line; the store contract
tests (``tests/test_store_contract.py``) run over every entry.

URL dispatch (``backend_name_for``): ``*.h5`` / ``*.hdf5`` -> hdf5; ``memory://name`` ->
memory; anything else (a path, ``file://``, ``s3://``) -> zarr. ``backend="zarr"`` with a
``memory://`` URL gives a Zarr store on fsspec's in-memory file system.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS: dict[str, str] = {
    "zarr": "cache.backends.zarr:ZarrBackend",
    "hdf5": "cache.backends.hdf5:HDF5Backend",
    "memory": "cache.backends.memory:MemoryBackend",
}
CODECS = ("none", "zstd", "blosc-zstd", "blosc-lz4")
STRING = "str"
LOCKING = ("shard-claims", "exclusive", "in-process")


class StoreError(RuntimeError):
    """A store cannot be opened, created or written as asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No feature store exists at the URL."""


class StoreBusyError(StoreError):
    """Another process is writing the store (or creating it) right now."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; callers ask these instead of names.

    Attributes:
        parallel_writers: several processes may write disjoint shards of one store at once.
        locking: how writers are kept apart: ``shard-claims`` (per-shard claim files that
            a crash leaves recognisably stale), ``exclusive`` (one writer per file, the
            file system's lock) or ``in-process`` (the store lives in one process).
        random_access: reading one row costs about one row's bytes.
        remote: the store lives behind a network URL (no local path).
        shared: other processes can open it (not true of in-process memory).
    """

    parallel_writers: bool
    locking: str
    random_access: bool
    remote: bool = False
    shared: bool = True


RowSelection = slice | np.ndarray


class Backend(ABC):
    """Named row-major arrays plus one JSON attribute mapping.

    Attributes:
        url: where the store lives.
        writable: False for a read-only open.
        capabilities: what this backend (at this URL) can do.
    """

    name: str = ""
    capabilities: Capabilities

    def __init__(self, url: str, mode: str, storage_options: dict[str, Any] | None = None):
        """Open ``url`` with mode ``"r"``, ``"a"`` or ``"w"`` (see ``open_backend``)."""
        self.url = url
        self.writable = mode != "r"

    @classmethod
    @abstractmethod
    def exists(cls, url: str, storage_options: dict[str, Any] | None = None) -> bool:
        """True when ``url`` holds something this backend can open (a store or not)."""

    @classmethod
    def occupied(cls, url: str, storage_options: dict[str, Any] | None = None) -> bool:
        """True when ``url`` holds data (creating a store there would overwrite it)."""
        return cls.exists(url, storage_options)

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
        dims: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """Create an array (``dtype`` ``"str"`` for variable-length text).

        Args:
            shard_rows: rows per shard file where the backend shards (Zarr); others ignore it.
            codec: one of ``CODECS``.
            dims: one name per axis, recorded where the format has a place for them (Zarr
                ``dimension_names``, HDF5 dimension labels) so xarray and netCDF tools
                see named dimensions.

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

    @classmethod
    def claims_url(cls, url: str) -> str | None:
        """Where the writer claims of a store at ``url`` live (``shard-claims``), else None."""
        return None

    def claim_root(self) -> str | None:
        """Where this store's writer claims live, else None."""
        return self.claims_url(self.url)

    def publish(self) -> None:
        """Make a newly created store visible at its URL (atomically where possible)."""
        return None

    def flush(self) -> None:
        """Push buffered writes to where the store lives."""
        return None

    def close(self) -> None:
        """Release handles (a closed backend must not be used again)."""
        return None


@contextmanager
def remote_access(url: str) -> Iterator[None]:
    """Turn an object store's credential, permission and connection errors into one line."""
    try:
        yield
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001 - botocore/aiohttp types are not imported here
        kind = type(err).__name__
        if "Credential" in kind:
            raise StoreError(
                f"{url}: no credentials for the object store; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass storage_options"
            ) from err
        if isinstance(err, PermissionError) or "AccessDenied" in str(err):
            raise StoreError(f"{url}: access denied by the object store ({err})") from err
        if "Connect" in kind or "Timeout" in kind:
            raise StoreError(f"{url}: cannot reach the object store ({kind}: {err})") from err
        raise


def sorted_read(read_sorted: Any, rows: np.ndarray) -> np.ndarray:
    """Read arbitrary ``rows`` through a reader that needs increasing unique indices."""
    uniq, inverse = np.unique(rows, return_inverse=True)
    return read_sorted(uniq)[inverse]


def local_path(url: str) -> Path | None:
    """The local file-system path of ``url``, or None for a remote or in-memory URL."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(os.path.expanduser(url))


def backend_name_for(url: str, backend: str | None = None) -> str:
    """Which backend serves ``url`` (see the module docstring), or check an explicit one."""
    if backend is not None:
        if backend not in BACKENDS:
            known = list(BACKENDS)
            raise StoreError(f"unknown backend {backend!r} for {url}; choose one of {known}")
        return backend
    if url.lower().endswith((".h5", ".hdf5")):
        return "hdf5"
    if url.startswith("memory://"):
        return "memory"
    return "zarr"


def backend_class(url: str, backend: str | None = None) -> type[Backend]:
    """The backend class serving ``url`` (imported on first use)."""
    module, _, attr = BACKENDS[backend_name_for(url, backend)].partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    return cls


def open_backend(
    url: str,
    mode: str,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Backend:
    """Open ``url``: ``"r"`` read, ``"a"`` read/write an existing store, ``"w"`` create.

    ``"w"`` creates a new, empty store and never clears what is there: callers check that
    the target is free first (``cache.create.create_store``).
    """
    if mode not in ("r", "a", "w"):
        raise StoreError(f"mode must be 'r', 'a' or 'w', got {mode!r} for {url}")
    cls = backend_class(url, backend)
    return cls(url, mode, storage_options=storage_options)


def store_exists(
    url: str, backend: str | None = None, storage_options: dict[str, Any] | None = None
) -> bool:
    """True when ``url`` holds a feature store (its attributes exist)."""
    cls = backend_class(url, backend)
    if not cls.exists(url, storage_options):
        return False
    try:
        b = cls(url, "r", storage_options=storage_options)
    except StoreBusyError:
        raise
    except (StoreError, FileNotFoundError, OSError):
        return False
    try:
        return "iqa_store" in b.read_attrs()
    except StoreBusyError:
        raise
    except (StoreError, OSError, ValueError, KeyError):
        return False
    finally:
        b.close()
