"""Test hooks for code that must detect damage (not for anything else).

A store never writes data without recomputing its checksums; tests that check that damage
is caught (``verify``, verified reads) need a way to write *around* the checksums, as a
failing disk or a careless copy would. That is all this module offers.
"""

from __future__ import annotations

import numpy as np

from cache.store import FeatureStore


def write_bypassing_checksums(
    store: FeatureStore, array: str, start: int, data: np.ndarray
) -> None:
    """Overwrite rows of a feature array as damage would: no new checksum, no commit."""
    store._backend.write(store.arrays[array].key, start, data)
    store._backend.flush()


def fast_reader(store: FeatureStore, array: str) -> object | None:
    """The direct shard reader a local Zarr store uses for ``array`` (None elsewhere)."""
    fast = getattr(store._backend, "_fast", None)
    return fast(array) if fast is not None else None
