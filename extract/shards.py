"""Fill whole shards of a store: decode ahead, batched forward, write behind.

The unit of work is a shard (``store.shard_size`` images, all their views). Within a shard
the rows are batched in order, so the same shard gives the same batches, and therefore the
same numbers, whether it runs in this process or on a dask worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cache.manifest import Manifest
from extract.loader import PreparedView, prefetch_map, prepare_image

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass
class ShardStats:
    """What a batch of shards did."""

    shards: int = 0
    rows: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    copied: int = 0

    def merge(self, other: ShardStats) -> None:
        self.shards += other.shards
        self.rows += other.rows
        self.copied += other.copied
        self.failures.update(other.failures)


def autocast(device: torch.device, dtype: str) -> Any:
    """Autocast context for ``dtype`` (``fp32`` = none)."""
    target = AUTOCAST_DTYPES[dtype]
    if target is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=target)


def _shard_images(store: Any, shard: int) -> range:
    start = shard * store.shard_size
    return range(start, min(start + store.shard_size, store.n_images))


def _prepared_shards(
    store: Any, manifest: Manifest, shards: list[int], backbone: Any, pool: ThreadPoolExecutor
) -> Iterator[tuple[int, list[list[PreparedView]]]]:
    """Yield (shard, per-image prepared views), decoding up to two shards ahead."""
    views = tuple(store.views)

    def work(index: int) -> list[PreparedView]:
        return prepare_image(manifest.resolve(store.image_ids[index]), views, backbone.preprocess)

    order = [(k, i) for k in shards for i in _shard_images(store, k)]
    results = prefetch_map(lambda ki: work(ki[1]), order, pool, depth=2 * store.shard_size + 4)
    for k in shards:
        yield k, [next(results) for _ in _shard_images(store, k)]


def _forward_rows(
    backbone: Any, tensors: list[torch.Tensor], batch_size: int, dtype: str
) -> dict[str, np.ndarray]:
    """Run the backbone over ``tensors`` in order, in batches; float32 numpy outputs."""
    device = _device_of(backbone)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in backbone.outputs}
    with torch.inference_mode(), autocast(device, dtype):
        for start in range(0, len(tensors), batch_size):
            x = torch.stack(tensors[start : start + batch_size]).to(device)  # (B, 3, H, W)
            out = backbone.forward_features(x)
            for name in chunks:
                chunks[name].append(out[name].float().cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _device_of(module: torch.nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def compute_shard(
    store: Any, backbone: Any, images: list[list[PreparedView]], batch_size: int, dtype: str
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[int, str]]:
    """Features, valid and original sizes, and failures for one shard's rows."""
    rows = [view for image in images for view in image]  # image-major, as store rows
    failures = {i: v.error or "unknown error" for i, v in enumerate(rows) if v.tensor is None}
    ok = [i for i in range(len(rows)) if i not in failures]
    features = {}
    for name, spec in store.arrays.items():
        features[name] = np.full((len(rows), *spec.shape), np.nan, dtype=spec.dtype)
    if ok:
        tensors = [t for t in (rows[i].tensor for i in ok) if t is not None]
        out = _forward_rows(backbone, tensors, batch_size, dtype)
        for name, values in out.items():
            features[name][ok] = values.astype(features[name].dtype)
    valid = np.array([v.valid_hw for v in rows], dtype=np.int32).reshape(len(rows), 2)
    orig = np.array([v.orig_hw for v in rows], dtype=np.int32).reshape(len(rows), 2)
    return features, valid, orig, failures


def fill_shards(
    store: Any,
    backbone: Any,
    manifest: Manifest,
    shards: Iterable[int],
    *,
    batch_size: int,
    dtype: str,
    decode_workers: int = 2,
    on_shard: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ShardStats:
    """Compute and write ``shards``; decoding runs ahead and writing runs behind.

    Args:
        on_shard: called with (shard, rows) after each shard is handed to the writer.
        should_stop: polled between shards; True finishes the shard in flight and returns.
    """
    stats = ShardStats()
    shards = list(shards)
    with ThreadPoolExecutor(decode_workers) as pool, ThreadPoolExecutor(1) as writer:
        pending: Future[None] | None = None
        for k, images in _prepared_shards(store, manifest, shards, backbone, pool):
            features, valid, orig, failures = compute_shard(
                store, backbone, images, batch_size, dtype
            )
            if pending is not None:
                pending.result()  # at most one shard waits to be written
            pending = writer.submit(store.write_shard, k, features, valid, orig, failures)
            first_row = k * store.shard_size * len(store.views)
            for local, reason in failures.items():
                stats.failures[store.image_ids[(first_row + local) // len(store.views)]] = reason
            stats.shards += 1
            stats.rows += len(valid)
            if on_shard is not None:
                on_shard(k, len(valid))
            if should_stop():
                break
        pool.shutdown(wait=True, cancel_futures=True)  # drop decoding done ahead, if stopped
        if pending is not None:
            pending.result()
    return stats
