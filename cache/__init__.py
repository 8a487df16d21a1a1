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
from cache.store import (
    ArraySpec,
    FeatureStore,
    IncompleteStoreError,
    StoreError,
    VerifyReport,
    create_store,
    open_store,
)

__all__ = [
    "ArraySpec",
    "FeatureStore",
    "FingerprintMismatch",
    "IncompleteStoreError",
    "StoreError",
    "VerifyReport",
    "check_fingerprint",
    "create_store",
    "diff_fields",
    "fingerprint_of",
    "open_store",
]
