"""Extraction on a dask.distributed cluster: one model per worker, whole shards per task.

The client creates the store (its arrays and attributes) before any task runs; each task
then owns whole shards, opens the store for appending and writes them, so no two
processes ever write to the same shard file. A worker builds its backbone once and keeps
it for every later task with the same configuration. Per shard the work is exactly what a
single process does (``extract.shards.fill_shards``), so the store is the same bit for bit.

HDF5 stores are single-writer files and are refused here; write Zarr and export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from dask.distributed import Client, LocalCluster, as_completed

from cache.manifest import Manifest, read_manifest
from cache.store import open_store
from extract.shards import ShardStats, fill_shards

_MODELS: dict[Any, Any] = {}


def _worker_backbone(cfg: Any) -> Any:
    """The backbone for ``cfg``, built once per worker process."""
    if cfg not in _MODELS:
        from extract.run import build_backbone

        _MODELS.clear()  # one model per worker: drop a previous configuration's weights
        _MODELS[cfg] = build_backbone(cfg)
    return _MODELS[cfg]


def _run_task(cfg: Any, manifest_path: str, store_url: str, shard: int, threads: int) -> ShardStats:
    """Dask task: compute and write one shard."""
    torch.set_num_threads(threads)
    manifest = read_manifest(manifest_path)
    store = open_store(store_url, "a")
    return fill_shards(
        store, _worker_backbone(cfg), manifest, [shard], batch_size=cfg.batch_size,
        dtype=cfg.dtype, decode_workers=1,
    )


@contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Client]:
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or 1, threads_per_worker=1, processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def fill_distributed(
    cfg: Any,
    manifest: Manifest,
    store: Any,
    shards: list[int],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    on_shard: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ShardStats:
    """Hand ``shards`` to a cluster (a new LocalCluster of ``workers``, or ``scheduler``)."""
    caps = store.capabilities
    if not (caps.parallel_writers and caps.shared):
        raise ValueError(f"distributed extraction needs a store that several processes may "
                         f"write at once (Zarr); {store.url} is {store.backend}")  # fmt: skip
    if manifest.path is None:
        raise ValueError("distributed extraction needs a manifest file the workers can read")
    stats = ShardStats()
    threads = max(1, torch.get_num_threads() // max(1, workers or 1))
    with _client(workers, scheduler) as client:
        futures = {
            client.submit(
                _run_task, cfg, str(manifest.path), store.url, k, threads, pure=False
            ): k
            for k in shards
        }
        for future in as_completed(futures):
            part = future.result()
            stats.merge(part)
            if on_shard is not None:
                on_shard(futures[future], part.rows)
            if should_stop():
                client.cancel(list(futures))
                break
    return stats
