"""Direct whole-shard writes of local Zarr v3 shard files (the extraction hot path).

zarr-python 3.1 writes a shard of 64 SAM rows (128 MiB) at ~0.1-0.35 GB/s on this machine,
where a plain write of the same bytes to a new file runs at ~3.7 GB/s: every inner chunk
goes through the async codec pipeline (a copy into a chunk buffer, a copy into the shard
buffer, event-loop hops per chunk) before one file write. This module writes it at ~4.5
GB/s (``bench/bench_store.py --profile``). For the layout this package writes without a
compressor (one row per inner chunk, ``bytes`` little endian, index at the end with
``bytes`` + ``crc32c``; see ``cache.backends.zarr_shards``) a shard file is just the rows' bytes
in row order, then one little-endian ``(offset, nbytes)`` uint64 pair per row and the
crc32c of that index. This module writes exactly that with one ``writev`` from the
array's own memory, no copies.

The bytes are those zarr writes itself (tests compare the files byte for byte): rows that
are entirely the fill value (NaN: failed rows) are left out and marked empty, a shard with
no row left is not written (an old file is removed), and each file is written to
``<key>.<uuid>.partial`` and renamed, as zarr's ``LocalStore`` does, so a killed writer
never leaves a torn shard. Anything else (compressors, other layouts, remote stores) goes
through zarr.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from cache.backends.zarr_shards import ShardLayout

_EMPTY = np.uint64(2**64 - 1)


def _all_nan_rows(data: np.ndarray) -> np.ndarray:
    """Rows that are NaN everywhere (checked only for rows whose first value is NaN)."""
    flat = data.reshape(len(data), -1)  # (rows, values)
    out = np.zeros(len(data), dtype=bool)
    for r in np.flatnonzero(np.isnan(flat[:, 0])):
        out[r] = bool(np.isnan(flat[r]).all())
    return out


class ShardFileWriter(ShardLayout):
    """Writes whole shards of one sharded, uncompressed, local Zarr array."""

    @classmethod
    def for_array(cls, folder: Path, meta: dict[str, Any]) -> ShardFileWriter | None:
        """A writer for the array whose ``zarr.json`` is ``meta``, or None if unsupported."""
        inner = cls.inner_codecs(meta) or []
        raw = len(inner) == 1 and inner[0].get("name") == "bytes"
        little = raw and inner[0].get("configuration", {}).get("endian", "little") == "little"
        return cls(folder, meta) if little and meta.get("fill_value") == "NaN" else None

    def accepts(self, start: int, data: np.ndarray) -> bool:
        """True for one whole shard (the last one may be short) of the right shape."""
        stop = min(start + self.shard_rows, self.n_rows)
        return (
            start % self.shard_rows == 0
            and len(data) == stop - start
            and tuple(data.shape[1:]) == self.row_shape
        )

    def write(self, start: int, data: np.ndarray) -> None:
        """Write rows ``start:start+len(data)``, one whole shard, atomically."""
        if not self.accepts(start, data):
            raise ValueError(f"{self.folder}: rows {start}+{len(data)} are not one whole shard")
        data = np.ascontiguousarray(data, dtype=self.dtype)
        empty = _all_nan_rows(data)
        index = np.full((self.shard_rows, 2), _EMPTY, dtype="<u8")  # (rows, offset/nbytes)
        row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        kept = np.flatnonzero(~empty)
        index[kept, 0] = np.arange(len(kept), dtype="<u8") * row_bytes
        index[kept, 1] = row_bytes
        path = self.shard_path(start // self.shard_rows)
        if not len(kept):
            path.unlink(missing_ok=True)  # zarr keeps no file for an all-empty shard
            return
        body = index.tobytes()
        tail = body + google_crc32c.value(body).to_bytes(4, "little")
        _atomic_writev(path, [*_runs(data, kept), tail])


def _runs(data: np.ndarray, kept: np.ndarray) -> list[memoryview]:
    """Memory views of the kept rows, one per run of consecutive rows (no copies)."""
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1
    views = []
    for run in np.split(kept, breaks):
        views.append(data[int(run[0]) : int(run[-1]) + 1].data.cast("B"))
    return views


def _atomic_writev(path: Path, parts: list[Any]) -> None:
    """Write ``parts`` to ``<path>.<uuid>.partial``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        total, done = sum(len(p) for p in parts), 0
        while done < total:
            done += _write_from(fd, parts, done)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _write_from(fd: int, parts: list[Any], offset: int) -> int:
    """One ``writev`` of everything from byte ``offset`` on (writev may write less)."""
    rest = []
    for p in parts:
        if offset >= len(p):
            offset -= len(p)
            continue
        rest.append(p[offset:] if offset else p)
        offset = 0
    return os.writev(fd, rest[: os.sysconf("SC_IOV_MAX")])
