"""Feature store: fingerprinted sharded stores, the shared cache root, and the output and
console conventions every command follows.

The ground floor of the pipeline: every other package imports it; it imports none of them
(datasets: ``iqadata``; the torch read path: ``heads.store_reader``).
The names below are imported on first use, so ``import cache.console`` (every command's
``--help``) does not pay for numpy, zarr or fsspec.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FingerprintMismatch": "cache.fingerprint",
    "check_fingerprint": "cache.fingerprint",
    "diff_fields": "cache.fingerprint",
    "fingerprint_of": "cache.fingerprint",
    "CacheRoot": "cache.root",
    "ArraySpec": "cache.store",
    "CorruptShardError": "cache.store",
    "FeatureStore": "cache.store",
    "IncompleteStoreError": "cache.store",
    "StoreBusyError": "cache.store",
    "StoreError": "cache.store",
    "StoreNotFoundError": "cache.store",
    "VerifyReport": "cache.store",
    "create_store": "cache.create",
    "open_store": "cache.store",
    "store_fields": "cache.create",
    "ExtractionRecord": "cache.record",
    "copy_store": "cache.transfer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cache' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
