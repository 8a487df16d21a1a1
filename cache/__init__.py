"""Feature store: manifests, fingerprinted sharded stores, readers and the shared cache root.

The ground floor of the pipeline: ``extract`` and ``heads`` import it; it imports neither.
"""

from __future__ import annotations

from cache.fingerprint import (
    FingerprintMismatch,
    check_fingerprint,
    diff_fields,
    fingerprint_of,
)
from cache.root import CacheRoot
from cache.store import (
    ArraySpec,
    FeatureStore,
    IncompleteStoreError,
    StoreError,
    StoreNotFoundError,
    VerifyReport,
    create_store,
    open_store,
    store_fields,
)
from cache.transfer import copy_store

__all__ = [
    "ArraySpec",
    "CacheRoot",
    "FeatureStore",
    "FingerprintMismatch",
    "IncompleteStoreError",
    "StoreError",
    "StoreNotFoundError",
    "VerifyReport",
    "check_fingerprint",
    "copy_store",
    "create_store",
    "diff_fields",
    "fingerprint_of",
    "open_store",
    "store_fields",
]
