"""Writing and checking shards: the part of a store that changes or verifies data.

``ShardWriter`` works for one ``cache.store.FeatureStore``, which creates it as
``store.writer`` (shards are written with ``store.writer.write_shard``; ``store.verify``
delegates to it); it uses the store's layout (``arrays``,
``shard_rows``, ``keepbits``) and its backend. See ``cache.store`` for the write order and
why it makes a killed writer harmless. Checksums are 16-byte digests (xxh3-128; blake2b in
stores made before the ``checksum`` attribute) of each array's shard slice in C order;
``shard_digest`` computes them over row blocks, so checking a shard never needs more than
a block of rows in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash
from numcodecs import BitRound

from cache.backends import StoreError
from cache.schema import (
    DEFAULT_CHECKSUM,
    DIGEST_BYTES,
    LEGACY_CHECKSUM,
    VerifyReport,
    corrupt_advice,
)

if TYPE_CHECKING:
    from cache.store import FeatureStore

VERIFY_BLOCK_BYTES = 64 << 20  # rows read per digest update when checking a shard


class CorruptShardError(StoreError):
    """A committed shard does not match its checksum (or cannot be read)."""


def _blake2b() -> Any:
    return hashlib.blake2b(digest_size=DIGEST_BYTES)


# Checksum of a shard's array, by the name a store records (``checksum`` attribute). xxh3-128
# checks a 128 MiB SAM shard at ~25 GB/s where blake2b manages ~1.1 GB/s on this project's
# CPU (bench/bench_store.py --profile), which capped shard writes at about a third of raw
# file writes; stores made before the attribute existed record nothing and keep blake2b.
# Both detect corruption; neither is a signature (a store is a trust boundary either way).
# Each entry makes an incremental hasher (``update``/``digest``, 16-byte digests).
CHECKSUMS: dict[str, Any] = {LEGACY_CHECKSUM: _blake2b, DEFAULT_CHECKSUM: xxhash.xxh3_128}


def digest(data: np.ndarray, checksum: str = LEGACY_CHECKSUM) -> bytes:
    """16-byte digest of an array's raw bytes (C order) with one of ``CHECKSUMS``."""
    h = CHECKSUMS[checksum]()
    h.update(np.ascontiguousarray(data).data.cast("B"))  # no copy
    return bytes(h.digest())


def bit_round(arr: np.ndarray, keepbits: int | None) -> np.ndarray:
    """Lossy mantissa rounding to ``keepbits`` bits (numcodecs ``BitRound``); None: as is."""
    if keepbits is None:
        return arr
    return BitRound(keepbits=keepbits).encode(arr).view(arr.dtype).reshape(arr.shape)


def storage_values(arr: np.ndarray, dtype: str, keepbits: int | None = None) -> np.ndarray:
    """The values a store keeps for ``arr``: cast to ``dtype``, then bit-rounded.

    Scoring new images applies this too, so a head sees the numbers it was trained on.
    Overflow becomes inf (a store records such rows as failures).
    """
    with np.errstate(over="ignore"):
        cast = np.asarray(arr, dtype=dtype)
    return bit_round(cast, keepbits)


_EXPONENT = {np.dtype("float16"): (np.uint16, 0x7C00), np.dtype("float32"): (np.uint32, 0x7F800000)}


def _nonfinite_rows(arr: np.ndarray) -> np.ndarray:
    """Rows holding a NaN or inf: all exponent bits set, i.e. ``|bits| >= exponent mask``.

    Row by row, so the temporaries stay one row big (whole-shard temporaries cost more in
    page faults than the arithmetic: ~4x slower on a 128 MiB shard).
    """
    uint, mask = _EXPONENT[arr.dtype]
    bits = arr.reshape(len(arr), -1).view(uint)  # (rows, values)
    magnitude = np.iinfo(bits.dtype).max >> 1  # every bit but the sign
    out = np.zeros(len(arr), dtype=bool)
    for r in range(len(arr)):
        out[r] = len(bits[r]) > 0 and np.bitwise_and(bits[r], magnitude).max() >= mask
    return out


def _blank(arr: np.ndarray, rows: list[int]) -> np.ndarray:
    """``arr`` with ``rows`` set to NaN (a copy only when there is something to blank)."""
    if not rows:
        return arr
    arr = arr.copy()
    arr[rows] = np.nan
    return arr


class ShardWriter:
    """``write_shard`` and ``verify`` for one store.

    Args:
        store: the store written and checked (its backend, layout, ``keepbits`` and
            checksum algorithm).
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._b = store._backend
        self.url = store.url
        self.arrays = store.arrays
        self.keepbits = store.keepbits
        self.checksum = store.checksum
        self._verified: set[tuple[int, str]] = set()  # (shard, array) checked on read
        self._commit: np.ndarray | None = None

    def write_shard(
        self,
        k: int,
        features: Mapping[str, np.ndarray],
        valid_size: np.ndarray,
        orig_size: np.ndarray,
        failures: Mapping[int, str] | None = None,
    ) -> None:
        """Write shard ``k`` whole and commit it (see the module docstring for the order).

        Args:
            k: shard index.
            features: ``{name: (rows_in_shard, *shape)}`` for every array of the store.
            valid_size: ``(rows_in_shard, 2)`` valid (h, w) per row.
            orig_size: ``(rows_in_shard, 2)`` original image (h, w) per row.
            failures: local row -> reason; those rows are stored as NaN and not written.
                Rows with non-finite values are recorded as failures too.
        """
        if not self._b.writable:
            raise StoreError(f"{self.url} is open read-only; open it with mode 'a' to write")
        rows = self.store.shard_rows(k)
        data = self._prepare_features(k, features, len(rows))
        failed = self._collect_failures(k, data, dict(failures or {}), len(rows))
        data = {name: _blank(arr, sorted(failed)) for name, arr in data.items()}
        sizes = self._prepare_sizes(k, valid_size, orig_size, len(rows), failed)
        written = np.ones(len(rows), dtype=bool)
        written[sorted(failed)] = False
        reasons = np.array([failed.get(i, "") for i in range(len(rows))], dtype=object)
        with ThreadPoolExecutor(1) as pool:  # hashing releases the GIL: overlap it with I/O
            commit = pool.submit(self._commit_row, data)
            for name, arr in data.items():
                self._b.write(self.arrays[name].key, rows.start, arr)
            self._b.write("written", rows.start, written)
            self._b.write("sizes", rows.start, sizes)
            self._b.write("failure", rows.start, reasons)
            self._b.flush()  # the rows reach the file before the commit mark that vouches
            self._b.write("commit", k, commit.result()[None])
        self._b.flush()
        self._commit = None

    def _prepare_features(
        self, k: int, features: Mapping[str, np.ndarray], n: int
    ) -> dict[str, np.ndarray]:
        if set(features) != set(self.arrays):
            raise StoreError(
                f"{self.url}: shard {k} has arrays {sorted(features)}, "
                f"the store has {sorted(self.arrays)}"
            )
        out = {}
        for name, spec in self.arrays.items():
            with np.errstate(over="ignore"):  # overflow becomes inf: a recorded failure
                arr = np.asarray(features[name], dtype=spec.dtype)
            if arr.shape != (n, *spec.shape):
                raise StoreError(
                    f"{self.url}: shard {k} array {name!r} has shape {arr.shape}, "
                    f"expected {(n, *spec.shape)}"
                )
            out[name] = self._round(arr)
        return out

    def _round(self, arr: np.ndarray) -> np.ndarray:
        return bit_round(arr, self.keepbits)

    def _collect_failures(
        self, k: int, data: dict[str, np.ndarray], failures: dict[int, str], n: int
    ) -> dict[int, str]:
        bad = [r for r in failures if not 0 <= int(r) < n]
        if bad:
            raise StoreError(f"{self.url}: shard {k} failure rows {bad} outside 0..{n - 1}")
        out = {int(r): str(why) or "failed" for r, why in failures.items()}
        for name, arr in data.items():
            for r in np.flatnonzero(_nonfinite_rows(arr)):
                out.setdefault(int(r), f"non-finite values in {name!r} ({arr.dtype} overflow?)")
        return out

    def _prepare_sizes(
        self, k: int, valid: np.ndarray, orig: np.ndarray, n: int, failed: dict[int, str]
    ) -> np.ndarray:
        valid, orig = np.asarray(valid), np.asarray(orig)
        for label, a in (("valid_size", valid), ("orig_size", orig)):
            if a.shape != (n, 2):
                raise StoreError(f"{self.url}: shard {k} {label} shape {a.shape}, want {(n, 2)}")
        sizes = np.concatenate([orig, valid], axis=1).astype(np.int32)  # (rows, 4)
        sizes[sorted(failed)] = -1
        return sizes

    def _commit_row(self, data: dict[str, np.ndarray]) -> np.ndarray:
        digests = b"".join(digest(data[name], self.checksum) for name in self.arrays)
        return np.frombuffer(b"\x01" + digests, dtype=np.uint8).copy()

    def forget(self) -> None:
        """Drop the cached commit rows (after commit marks changed)."""
        self._commit = None

    def check_read(self, idx: np.ndarray, name: str) -> None:
        """Check the checksums of every committed shard rows ``idx`` touch, once each.

        Raises:
            CorruptShardError: a shard cannot be read or fails its checksum.
        """
        shards = {int(k) for k in np.unique(idx // self.store.shard_rows_count)}
        todo = sorted(k for k in shards if (k, name) not in self._verified)
        if not todo:
            return
        if self._commit is None:
            self._commit = self._b.read("commit", slice(None))
        position = list(self.arrays).index(name)
        for k in todo:
            row = self._commit[k]
            if row[0] == 1:
                self._check_one(k, name, commit_digest(row, position))
            self._verified.add((k, name))

    def _check_one(self, k: int, name: str, want: bytes) -> None:
        try:
            got = shard_digest(self.store, k, name)
        except Exception as err:  # noqa: BLE001 - any failure to read is damage
            raise CorruptShardError(
                f"{self.url}: shard {k} of {name!r} cannot be read ({type(err).__name__}: "
                f"{err}); {corrupt_advice(self.url)}"
            ) from err
        if got != want:
            raise CorruptShardError(
                f"{self.url}: shard {k} of {name!r} fails its checksum (the files changed "
                f"after they were written); {corrupt_advice(self.url)}"
            )

    def verify(self) -> VerifyReport:
        """Recompute every committed shard's checksums; report corrupt and missing parts."""
        commit = self._b.read("commit", slice(None))
        written = self.store.written
        report = VerifyReport(self.url, self.store.n_shards)
        report.missing_shards = [int(k) for k in np.flatnonzero(commit[:, 0] != 1)]
        report.missing_rows = int((~written).sum())
        report.failed_rows = sum(1 for r in self._b.read("failure", slice(None)) if r)
        for k in np.flatnonzero(commit[:, 0] == 1):
            reasons = self._verify_shard(int(k), commit[k])
            if reasons:
                report.corrupt_shards[int(k)] = reasons
        return report

    def _verify_shard(self, k: int, commit_row: np.ndarray) -> list[str]:
        reasons = []
        for i, name in enumerate(self.arrays):
            want = commit_digest(commit_row, i)
            try:
                got = shard_digest(self.store, k, name)
            except Exception as err:  # noqa: BLE001 - any decode error means corruption
                reasons.append(f"{name}: unreadable ({type(err).__name__}: {err})")
                continue
            if got != want:
                reasons.append(f"{name}: checksum mismatch")
        return reasons


def shard_digest(store: FeatureStore, k: int, name: str) -> bytes:
    """The digest of array ``name`` over shard ``k`` as stored, read in row blocks."""
    spec = store.arrays[name]
    rows = store.shard_rows(k)
    step = max(1, VERIFY_BLOCK_BYTES // spec.row_bytes)
    h = CHECKSUMS[store.checksum]()
    for start in range(rows.start, rows.stop, step):
        block = store._backend.read(spec.key, slice(start, min(start + step, rows.stop)))
        block = np.ascontiguousarray(block, dtype=spec.dtype)
        h.update(block.data.cast("B"))
    return bytes(h.digest())


def commit_digest(commit_row: np.ndarray, index: int) -> bytes:
    """The digest of the ``index``-th feature array in a shard's commit row."""
    return commit_row[1 + index * DIGEST_BYTES : 1 + (index + 1) * DIGEST_BYTES].tobytes()
