"""Copy a store between backends (Zarr <-> HDF5 <-> memory), shard by shard, then verify.

The copy keeps the fingerprint, its fields, the provenance attributes, the layout (shard
size, views, image ids), the written mask and the failure list: every committed shard of
the source is written to the destination through ``write_shard`` with the source's failed
rows passed as failures, so the destination's checksums are recomputed from the same bytes
and must equal the source's (with the same checksum algorithm; a copy of an older blake2b
store gets xxh3-128 checksums, and the source's reads are verified instead). Uncommitted
shards stay uncommitted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cache.backends import StoreError
from cache.create import DEFAULT_CODEC, create_store
from cache.layout import StoreLayout
from cache.store import FeatureStore, open_store


def _copy_shard(src: FeatureStore, dst: FeatureStore, k: int) -> None:
    rows = src.shard_rows(k)
    sel = slice(rows.start, rows.stop)
    feats = src.read(sel, allow_unwritten=True, dtype=None)
    reasons = src.read_raw("failure", sel)
    written = src.read_raw("written", sel).astype(bool)
    failures = {int(i): str(reasons[i]) or "not written" for i in np.flatnonzero(~written)}
    dst.writer.write_shard(k, feats, src.valid_size(sel), src.orig_size(sel), failures)


def copy_store(
    src_url: str,
    dst_url: str,
    *,
    backend: str | None = None,
    codec: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> FeatureStore:
    """Copy ``src_url`` to ``dst_url`` (backend from the URL) and verify the copy.

    Resumable: an existing destination with the same fingerprint gets only its missing
    shards. Returns the destination opened for reading.

    Raises:
        FingerprintMismatch: the destination exists with another fingerprint.
        StoreError: the copy does not verify or its checksums differ from the source's.
    """
    with open_store(src_url, "r", storage_options=storage_options, verify=True) as src:
        dst = create_store(
            dst_url,
            StoreLayout(list(src.arrays.values()), src.image_ids, src.views, src.shard_size),
            fingerprint_fields=src.fingerprint_fields,
            provenance=src.provenance,
            codec=codec or src.meta.get("codec", DEFAULT_CODEC),
            backend=backend,
            keepbits=src.keepbits,
            storage_options=storage_options,
        )
        todo = set(dst.missing_shards()) - set(src.missing_shards())
        for k in sorted(todo):
            _copy_shard(src, dst, k)
        _check_copy(src, dst)
        dst.close()
    return open_store(dst_url, "r", backend=backend, storage_options=storage_options)


def _check_copy(src: FeatureStore, dst: FeatureStore) -> None:
    report = dst.verify()
    if report.corrupt_shards:
        raise StoreError(f"copy {dst.url} does not verify: {report.summary()}")
    src_commit = src.read_raw("commit", slice(None))
    dst_commit = dst.read_raw("commit", slice(None))
    if src.checksum != dst.checksum:  # other digests: compare the commit marks
        src_commit, dst_commit = src_commit[:, 0], dst_commit[:, 0]
    same = np.array_equal(src_commit, dst_commit)
    if not same or not np.array_equal(src.written, dst.written):
        raise StoreError(f"copy {dst.url} differs from {src.url} (checksums or written mask)")
