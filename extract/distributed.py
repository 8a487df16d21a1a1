"""Extraction on a dask.distributed cluster: one model per worker, whole shards per task.

The client creates the store (its arrays and attributes) before any task runs; each task
then owns one whole shard, opens the store for appending and writes it, so no two
processes ever write to the same shard file. A worker builds its backbone once and keeps
it for every later task with the same configuration. Per shard the work is exactly what a
single process does (``extract.shards.fill_shards``), so the store is the same bit for bit
(on the same device type and dtype).

Many GPUs: with a CUDA device and no scheduler address, ``gpu_cluster`` starts one worker
process per GPU, each with ``CUDA_VISIBLE_DEVICES`` set to its own GPU (the set-up of
dask-cuda's ``LocalCUDACluster``, with dask's own ``SpecCluster`` and ``Nanny`` and no
further dependency), so every worker computes on ``cuda`` = its GPU. On a cluster of
several hosts, start ``dask worker --nthreads 1`` per GPU with that variable set and pass
the scheduler address. Row progress comes back to the client as worker events.

HDF5 stores are single-writer files and are refused here; write Zarr and export.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from dask.distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster, as_completed

from cache.manifest import Manifest, read_manifest
from cache.store import open_store
from extract.shards import KnownRow, Reuse, ShardStats, fill_shards

_MODELS: dict[Any, Any] = {}


def _worker_backbone(cfg: Any) -> Any:
    """The backbone for ``cfg``, built once per worker process."""
    if cfg not in _MODELS:
        from extract.run import build_backbone

        _MODELS.clear()  # one model per worker: drop a previous configuration's weights
        _MODELS[cfg] = build_backbone(cfg)
    return _MODELS[cfg]


def _run_task(
    cfg: Any, manifest_path: str, store_url: str, shard: int, threads: int, decode: int,
    known: dict[int, KnownRow] | None, topic: str,
) -> ShardStats:  # fmt: skip
    """Dask task: compute and write one shard, reporting rows as worker events."""
    from distributed import get_worker

    torch.set_num_threads(threads)
    worker = get_worker()
    manifest = read_manifest(manifest_path)
    store = open_store(store_url, "a")
    return fill_shards(
        store, _worker_backbone(cfg), manifest, [shard], batch_size=cfg.batch_size,
        dtype=cfg.dtype, decode_workers=decode, on_rows=lambda n: worker.log_event(topic, n),
        reuse=(lambda _k: known) if known else None,
    )  # fmt: skip


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` entries, else all it sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_cluster(gpus: Sequence[str], workers: int | None = None) -> SpecCluster:
    """A local cluster of one single-threaded worker process per GPU (round robin).

    Each worker sees only its GPU (``CUDA_VISIBLE_DEVICES``), as ``cuda``/``cuda:0``.
    """
    if not gpus:
        raise ValueError("no GPU visible for a per-GPU cluster (CUDA_VISIBLE_DEVICES empty?)")
    n = workers or len(gpus)
    specs = {
        f"gpu-{i}-{gpus[i % len(gpus)]}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}},
        }
        for i in range(n)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    return SpecCluster(workers=specs, scheduler=scheduler)


@contextmanager
def _client(workers: int | None, scheduler: str | None, gpus: Sequence[str]) -> Iterator[Client]:
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    if gpus:
        with gpu_cluster(gpus, workers) as cluster, Client(cluster) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or 1, threads_per_worker=1, processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield client


class _RowEvents:
    """Row counts sent by workers as events on one topic, forwarded to ``on_rows``."""

    def __init__(self, client: Client, on_rows: Callable[[int], None] | None) -> None:
        self.client, self.on_rows, self.seen = client, on_rows, 0
        self.topic = f"iqa-extract-rows-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        if on_rows is not None:
            client.subscribe_topic(self.topic, self._handle)

    def _handle(self, event: tuple[float, Any]) -> None:
        with self._lock:
            self.seen += int(event[1])
            assert self.on_rows is not None
            self.on_rows(int(event[1]))

    def close(self, total: int) -> None:
        """Stop listening; report what late events have not reported yet."""
        if self.on_rows is None:
            return
        self.client.unsubscribe_topic(self.topic)
        with self._lock:
            if total > self.seen:
                self.on_rows(total - self.seen)
            self.seen = max(self.seen, total)


def fill_distributed(
    cfg: Any,
    manifest: Manifest,
    store: Any,
    shards: list[int],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    gpus: Sequence[str] | None = None,
    on_shard: Callable[[int, int], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    reuse: Reuse | None = None,
) -> ShardStats:
    """Hand ``shards`` to a cluster (a new local one, or the one at ``scheduler``).

    Args:
        workers: worker processes of a new local cluster (default: one, or one per GPU).
        gpus: GPU ids for one worker each; default: every visible GPU when ``cfg.device``
            is CUDA and no scheduler is given, none otherwise.
        on_rows: called with row counts as workers finish them.
        reuse: asked on the client for each shard's known rows (see ``fill_shards``).
    """
    caps = store.capabilities
    if not (caps.parallel_writers and caps.shared):
        raise ValueError(f"distributed extraction needs a store that several processes may "
                         f"write at once (Zarr); {store.url} is {store.backend}")  # fmt: skip
    if manifest.path is None:
        raise ValueError("distributed extraction needs a manifest file the workers can read")
    cuda = str(cfg.device).startswith("cuda")
    if gpus is None:
        gpus = visible_gpus() if cuda and not scheduler else []
    task_cfg = replace(cfg, device="cuda") if gpus else cfg  # each worker sees one GPU
    threads = max(1, torch.get_num_threads() // max(1, workers or 1))
    decode = cfg.decode_workers if cuda else 1
    stats = ShardStats()
    with _client(workers, scheduler, gpus) as client:
        events = _RowEvents(client, on_rows)
        futures = {
            client.submit(
                _run_task, task_cfg, str(manifest.path), store.url, k, threads, decode,
                reuse(k) if reuse is not None else None, events.topic, pure=False,
            ): k
            for k in shards
        }  # fmt: skip
        for future in as_completed(futures):
            part = future.result()
            stats.merge(part)
            if on_shard is not None:
                on_shard(futures[future], part.rows)
            if should_stop():
                client.cancel(list(futures))
                break
        events.close(stats.rows)
    return stats
