"""Store schema: array specs, on-store names, errors and the verify report.

Layout of every store, whatever the backend (``R`` rows = images x views, image-major;
``S`` shards of ``shard_size`` images; ``F`` feature arrays)::

    features/<name>  (R, *shape) float16|float32  fill NaN; chunk = 1 row; Zarr shard = 1 shard
    image_id, view   (R,) str                     written once at creation
    written          (R,) bool                    chunk = 1 shard
    sizes            (R, 4) int32                 orig h, orig w, valid h, valid w; -1 unwritten
    failure          (R,) str                     reason, "" for written rows; chunk = 1 shard
    commit           (S, 1 + 16 F) uint8          byte 0 = 1 when committed, then one 16-byte
                                                  digest per feature array (the ``checksum``
                                                  attribute: xxh3-128; blake2b when absent);
                                                  1 chunk/shard

Per shard that is ``F + 4`` files in Zarr (plus the one-off ``image_id``/``view``/metadata).
The commit row carries both the checksums and the commit mark, so the two land together in
one atomic key write, after everything else of the shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

FORMAT_VERSION = 1
FEATURE_GROUP = "features"
DIGEST_BYTES = 16
DEFAULT_CHECKSUM = "xxh3-128"  # new stores (``cache.shard_writer.CHECKSUMS``)
LEGACY_CHECKSUM = "blake2b"  # stores without a ``checksum`` attribute
FEATURE_DTYPES = ("float16", "float32")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class IncompleteStoreError(RuntimeError):
    """Rows were asked for (or completeness required) that the store has not written."""


@dataclass(frozen=True)
class ArraySpec:
    """One named feature output with its per-row shape.

    Attributes:
        name: array name (``embed``, ``up0``, ``feature``); a Python identifier.
        shape: per-row shape, e.g. ``(256, 64, 64)``.
        dtype: ``float16`` (default) or ``float32``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"array name {self.name!r} must be a Python identifier")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"array {self.name!r}: shape {self.shape} must be non-empty, > 0")
        if self.dtype not in FEATURE_DTYPES:
            raise ValueError(f"array {self.name!r}: dtype must be one of {FEATURE_DTYPES}")

    @property
    def row_bytes(self) -> int:
        """Uncompressed bytes per row."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names: ``row`` then ``<name>_channel/_y/_x`` for maps (``<name>_dimK``
        otherwise), distinct per array so arrays of different shapes share only ``row``."""
        if len(self.shape) == 3:
            return ("row", *(f"{self.name}_{d}" for d in ("channel", "y", "x")))
        return ("row", *(f"{self.name}_dim{k}" for k in range(len(self.shape))))

    @property
    def key(self) -> str:
        """The array's name inside the store."""
        return f"{FEATURE_GROUP}/{self.name}"

    def to_json(self) -> dict[str, object]:
        return {"shape": list(self.shape), "dtype": self.dtype}


def specs_from_json(data: dict[str, dict[str, object]]) -> dict[str, ArraySpec]:
    """Rebuild the ``{name: ArraySpec}`` mapping recorded in a store's attributes."""
    return {
        name: ArraySpec(name, tuple(d["shape"]), str(d["dtype"]))  # type: ignore[arg-type]
        for name, d in data.items()
    }


@dataclass
class VerifyReport:
    """What ``FeatureStore.verify`` found.

    Attributes:
        url: the store.
        n_shards: shards in the store.
        missing_shards: shards without a commit mark.
        corrupt_shards: shard -> reasons (checksum mismatch per array, unreadable data).
        missing_rows: rows not written (uncommitted shards and failed images).
        failed_rows: rows recorded as failures (a subset of ``missing_rows``).
    """

    url: str
    n_shards: int
    missing_shards: list[int] = field(default_factory=list)
    corrupt_shards: dict[int, list[str]] = field(default_factory=dict)
    missing_rows: int = 0
    failed_rows: int = 0

    @property
    def ok(self) -> bool:
        """True when every shard is committed and every committed shard checks out."""
        return not self.missing_shards and not self.corrupt_shards

    def summary(self) -> str:
        state = "ok" if self.ok else "NOT ok"
        return (
            f"{self.url}: {state}; {self.n_shards - len(self.missing_shards)}/{self.n_shards} "
            f"shards committed, {len(self.corrupt_shards)} corrupt, "
            f"{self.missing_rows} rows missing ({self.failed_rows} failed)"
        )


def corrupt_advice(url: str) -> str:
    """What a user can do about a damaged shard of the store at ``url``."""
    return (f"run 'iqa-cache verify {url} --reset-corrupt' and then 'iqa-extract ... "
            "--resume' to recompute the damaged shards")


def missing_advice(uncommitted: bool, failed: bool) -> str:
    """What a user can do about unwritten rows."""
    parts = []
    if uncommitted:
        parts.append("finish the extraction with 'iqa-extract ... --resume'")
    if failed:
        parts.append("fix the failed images and run 'iqa-extract ... --retry-failed'")
    parts.append("or train on the written rows only (--written-only)")
    return ", ".join(parts)
