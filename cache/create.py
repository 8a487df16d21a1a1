"""Making a store: ``create_store`` builds a new one, or reopens one of the same content.

Nothing is ever cleared. The target must be free (missing, or an empty folder), the
leftovers of an interrupted creation of this project's, or a store of the same
fingerprint and layout (which is reopened for resuming). Two processes creating one store
at once agree through a creation claim (``cache.claims``): one builds the layout, the
other waits for it and reopens it. The attributes are written last, so a store without
them does not exist; HDF5 files are built under a temporary name and linked into place.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cache.backends import (
    CODECS,
    Backend,
    StoreBusyError,
    backend_class,
    open_backend,
    store_exists,
)
from cache.claims import ClaimFolder
from cache.fingerprint import FingerprintMismatch
from cache.fingerprint import fingerprint_of as _fingerprint_of
from cache.layout import StoreLayout, check_same_layout, create_layout
from cache.outputs import OutputPathError
from cache.schema import FORMAT_VERSION, ArraySpec
from cache.store import FeatureStore, open_store

CREATE_CLAIM = "create"
CREATE_WAIT_S = 300.0

DEFAULT_CODEC = "none"
_MANTISSA_BITS = {"float16": 10, "float32": 23}


def _package_version() -> str:
    try:
        return importlib.metadata.version("iqa-feature-cache")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


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
    layout: StoreLayout,
    *,
    fingerprint_fields: Mapping[str, Any],
    provenance: Mapping[str, Any] | None = None,
    codec: str = "default",
    backend: str | None = None,
    keepbits: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FeatureStore:
    """Create a store, or reopen an existing one with the same layout for resuming.

    Nothing is ever cleared: the target must be free (missing, or an empty folder), an
    interrupted creation of this project's, or a store of the same fingerprint and layout.
    Two processes creating one store at once agree through a creation claim: one builds
    the layout, the other waits for it and reopens.

    Args:
        layout: the arrays, image ids, views and shard size.
        codec: ``"default"`` or one of ``cache.backends.CODECS`` (lossless).
        keepbits: mantissa bits kept by lossy bit-rounding (None: lossless).
        storage_options: fsspec options for remote URLs (endpoint, credentials).

    Raises:
        FingerprintMismatch: an existing store differs in fingerprint, image ids or shard size.
        OutputPathError: the target holds something that is not a feature store.
        StoreBusyError: another process is creating or writing the store.
    """
    codec = DEFAULT_CODEC if codec == "default" else codec
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose 'default' or one of {CODECS}")
    _check_keepbits(keepbits, layout.arrays)
    fields = store_fields(fingerprint_fields, keepbits)
    target = _Target(url, backend, storage_options)
    attrs = {  # written after the layout's own attributes, in this order
        "iqa_store": FORMAT_VERSION,
        "fingerprint": _fingerprint_of(fields),
        "fingerprint_fields": fields,
        "keepbits": keepbits,
        "provenance": _provenance(provenance, layout, keepbits),
    }
    deadline = time.monotonic() + CREATE_WAIT_S
    while True:
        if target.exists():
            return _reopen_same(target, fields, layout)
        built = _try_build(target, layout, codec, attrs)
        if built is not None:
            return built
        if target.exists():
            continue  # built by another writer meanwhile
        if time.monotonic() > deadline:
            raise StoreBusyError(f"{url} is being created by another process; try again later")
        time.sleep(0.5)


@dataclass(frozen=True)
class _Target:
    """Where a store is created: its URL, backend name and fsspec options."""

    url: str
    backend: str | None
    storage_options: dict[str, Any] | None

    def exists(self) -> bool:
        return store_exists(self.url, self.backend, self.storage_options)


def _reopen_same(target: _Target, fields: dict[str, Any], layout: StoreLayout) -> FeatureStore:
    options = target.storage_options
    store = open_store(target.url, "a", backend=target.backend, storage_options=options)
    try:
        check_same_layout(store, fields, layout)
    except FingerprintMismatch:
        store.close()
        raise
    return store


def _try_build(
    target: _Target, layout: StoreLayout, codec: str, attrs: dict[str, Any]
) -> FeatureStore | None:
    """Build a new store at ``target``; None when another live process is building it."""
    url, options = target.url, target.storage_options
    cls = backend_class(url, target.backend)
    claims = _creation_claims(url, cls, options)
    if claims is not None and not claims.try_claim(CREATE_CLAIM):
        return None
    try:
        if target.exists():
            return None  # finished by another writer after our first look: reopen it
        if cls.occupied(url, options):
            if claims is None or not _interrupted_creation(url, cls, options):
                raise OutputPathError(
                    f"{url} already holds data that is not a feature store; nothing was "
                    "written. Choose a new path or an empty folder (it is never cleared)"
                )
            _clear_interrupted(url, options)
        b = open_backend(url, "w", target.backend, options)
        meta = create_layout(b, layout, codec)
        meta.update(attrs)
        b.write_attrs(meta)  # last: a store without attributes does not exist
        b.flush()
        b.publish()
        return FeatureStore(b)
    finally:
        if claims is not None:
            claims.release(CREATE_CLAIM)
            claims.remove_if_empty()


def _creation_claims(
    url: str, cls: type[Backend], storage_options: dict[str, Any] | None
) -> ClaimFolder | None:
    root = cls.claims_url(url)
    return ClaimFolder(root, storage_options) if root is not None else None


_LAYOUT_KEYS = ("zarr.json", "features", "image_id", "view", "written", "sizes", "failure",
                "commit")


def _interrupted_creation(
    url: str, cls: type[Backend], storage_options: dict[str, Any] | None
) -> bool:
    """True when ``url`` holds only what an interrupted ``create_store`` leaves behind."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(root, detail=False)}
    names.discard(".iqa-claims")
    return bool(names) and names <= set(_LAYOUT_KEYS) and cls.exists(url, storage_options)


def _clear_interrupted(url: str, storage_options: dict[str, Any] | None) -> None:
    """Remove the layout an interrupted creation (of this project's) left: never data."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    for name in _LAYOUT_KEYS:
        path = f"{root.rstrip('/')}/{name}"
        if fs.exists(path):
            fs.rm(path, recursive=True)


def _provenance(
    given: Mapping[str, Any] | None, layout: StoreLayout, kb: int | None
) -> dict[str, Any]:
    """What the store records beside its fingerprint. No clock time: two extractions of one
    feature set give byte-identical stores (DVC then sees nothing changed)."""
    out = dict(given or {})
    out.setdefault("dtype", {a.name: a.dtype for a in layout.arrays})
    out.setdefault("views", list(layout.views))
    out.setdefault("lossy", {"bitround_keepbits": kb} if kb is not None else None)
    out.setdefault("package_version", _package_version())
    return out
