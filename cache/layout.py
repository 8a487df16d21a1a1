"""The row layout of a store: creating and checking it, row indexing, row selections.

``StoreLayout`` is what a caller asks a new store to hold (arrays, image ids, views, shard
size); ``create_layout`` creates every array of a new store (see ``cache.schema``),
``check_same_layout`` compares an existing store with what a caller asks for (and leaves
the store open: closing is the caller's), ``RowIndex`` maps (image id, view) to a row and
``normalise_rows`` turns any row selection into what every backend reads in one go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.backends import STRING, Backend
from cache.fingerprint import FingerprintMismatch, describe_diff, diff_fields
from cache.schema import DEFAULT_CHECKSUM, DIGEST_BYTES, ArraySpec

if TYPE_CHECKING:
    from cache.store import FeatureStore


@dataclass(frozen=True)
class StoreLayout:
    """The rows and arrays of a store: what ``cache.create.create_store`` builds or reopens.

    Attributes:
        arrays: one spec per named feature output.
        image_ids: one per image, in row order (rows are image-major: image x view).
        views: the pixel views stored per image (``identity`` first by convention).
        shard_size: images per shard (the unit of writing).
    """

    arrays: Sequence[ArraySpec]
    image_ids: Sequence[str]
    views: Sequence[str] = ("identity",)
    shard_size: int = 64


def _check_layout(
    arrays: Sequence[ArraySpec], image_ids: Sequence[str], views: Sequence[str], shard_size: int
) -> None:
    if not arrays:
        raise ValueError("a store needs at least one ArraySpec")
    names = [a.name for a in arrays]
    if len(set(names)) != len(names):
        raise ValueError(f"array names must be unique, got {names}")
    if not image_ids:
        raise ValueError("a store needs at least one image id")
    seen: set[str] = set()
    for i, image in enumerate(image_ids):
        if not isinstance(image, str) or not image:
            raise ValueError(f"image id #{i} must be a non-empty string, got {image!r}")
        if image in seen:
            raise ValueError(f"image id {image!r} appears twice (#{i})")
        seen.add(image)
    if not views or len(set(views)) != len(views) or not all(views):
        raise ValueError(f"views must be unique non-empty names, got {list(views)}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")


def create_layout(b: Backend, layout: StoreLayout, codec: str) -> dict[str, Any]:
    """Create every array of a new store (see ``cache.schema``); return the layout attrs."""
    arrays, image_ids, views = list(layout.arrays), list(layout.image_ids), tuple(layout.views)
    shard_size = layout.shard_size
    _check_layout(arrays, image_ids, views, shard_size)
    n_views = len(views)
    n_rows, sr = len(image_ids) * n_views, shard_size * n_views
    n_shards = -(-len(image_ids) // shard_size)
    codec_config = {}
    for a in arrays:
        codec_config[a.name] = b.create_array(
            a.key, (n_rows, *a.shape), a.dtype, chunks=(1, *a.shape), shard_rows=sr,
            fill_value=np.nan, codec=codec, dims=a.dims,
        )
    b.create_array("image_id", (n_rows,), STRING, chunks=(n_rows,), dims=("row",))
    b.create_array("view", (n_rows,), STRING, chunks=(n_rows,), dims=("row",))
    b.write("image_id", 0, np.repeat(np.array(image_ids, dtype=object), n_views))
    b.write("view", 0, np.tile(np.array(views, dtype=object), len(image_ids)))
    b.create_array("written", (n_rows,), "bool", chunks=(sr,), fill_value=False, dims=("row",))
    b.create_array(
        "sizes", (n_rows, 4), "int32", chunks=(sr, 4), fill_value=-1, dims=("row", "size")
    )
    b.create_array("failure", (n_rows,), STRING, chunks=(sr,), dims=("row",))
    width = 1 + DIGEST_BYTES * len(arrays)
    b.create_array(
        "commit", (n_shards, width), "uint8", chunks=(1, width), fill_value=0,
        dims=("shard", "commit_byte"),
    )
    return {
        "arrays": {a.name: a.to_json() for a in arrays},
        "checksum": DEFAULT_CHECKSUM,
        "views": list(views),
        "n_images": len(image_ids),
        "shard_size": shard_size,
        "codec": codec,
        "codec_config": codec_config,
    }


class RowIndex:
    """Maps (image id, view) to a row: ``row = image_index * n_views + view_index``."""

    def __init__(self, image_ids: Sequence[str], views: Sequence[str], url: str) -> None:
        self._image = {image: i for i, image in enumerate(image_ids)}
        self._view = {view: j for j, view in enumerate(views)}
        self._url = url

    def row_of(self, image_id: str, view: str = "identity") -> int:
        try:
            i = self._image[image_id]
        except KeyError:
            raise KeyError(f"image id {image_id!r} is not in store {self._url}") from None
        try:
            j = self._view[view]
        except KeyError:
            raise KeyError(
                f"view {view!r} is not in store {self._url} (views {list(self._view)})"
            ) from None
        return i * len(self._view) + j


def normalise_rows(rows: Any, n_rows: int, url: str) -> tuple[slice | np.ndarray, np.ndarray]:
    """Turn an int, slice, range or index sequence into (backend selection, row indices).

    Contiguous increasing rows become a slice, which every backend reads in one go.
    """
    if isinstance(rows, slice):
        rows = range(*rows.indices(n_rows))
    idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    if idx.ndim != 1:
        raise IndexError(f"{url}: rows must be one-dimensional, got shape {idx.shape}")
    if len(idx) and (idx.min() < 0 or idx.max() >= n_rows):
        bad = int(idx[(idx < 0) | (idx >= n_rows)][0])
        raise IndexError(f"{url}: row {bad} out of range 0..{n_rows - 1}")
    if len(idx) == 0:
        return slice(0, 0), idx
    if len(idx) == 1 or (np.diff(idx) == 1).all():
        return slice(int(idx[0]), int(idx[-1]) + 1), idx
    return idx, idx


def check_same_layout(store: FeatureStore, fields: dict[str, Any], layout: StoreLayout) -> None:
    """Raise ``FingerprintMismatch`` unless an existing store matches what is asked."""
    differ = diff_fields(fields, store.fingerprint_fields)
    details = [describe_diff(store.fingerprint_fields, fields)] if differ else []
    checks = [
        ("arrays", sorted(store.arrays.values(), key=str), sorted(layout.arrays, key=str)),
        ("views", list(store.views), list(layout.views)),
        ("image_ids", store.image_ids, list(layout.image_ids)),
        ("shard_size", store.shard_size, layout.shard_size),
    ]
    for name, have, given in checks:
        if have != given:
            differ.append(name)
            details.append(_layout_detail(name, have, given))
    if differ:
        raise FingerprintMismatch(
            f"existing store {store.url} differs in {differ} (store != given: "
            f"{'; '.join(details)}); write to another URL (the existing store is kept)",
            differ,
        )


def _layout_detail(name: str, have: Any, given: Any) -> str:
    if name == "image_ids":
        return f"image ids: {len(have)} in the store vs {len(given)} given"
    return f"{name}: {have} != {given}"


def as_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    """``data`` in ``dtype``; float16 -> float32 through torch's vectorised cast.

    numpy converts float16 one value at a time: 52 ms for 32 SAM rows (64 MiB) against 13 ms
    here, which is most of what a store-fed training batch costs beyond the preloaded one.
    The values are the same (signalling NaNs come out quiet: still NaN).
    """
    target = np.dtype(dtype)
    if data.dtype == target:
        return data
    if data.dtype != np.float16 or target != np.float32 or data.size < 1 << 16:
        return data.astype(target)
    import torch  # lazily: the store's command-line tools start without it

    out = np.empty(data.shape, dtype=target)
    torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(data)))
    return out
