"""Extraction on a dask.distributed cluster: one model per worker, whole shards per task.

The client creates the store (its arrays and attributes) before any task runs; each task
then owns one whole shard, opens the store for appending and writes it, so no two
processes ever write to the same shard file. A worker builds its backbone once
(``extract.config.build_backbone``) and keeps it for every later task with the same
configuration. Per shard the work is exactly what a single process does
(``extract.shards.fill_shards`` on a ``FillJob`` the worker makes around the same
settings), so the store is the same bit for bit (on the same device type and dtype).

Donor rows (``FillJob.known_rows``) stay on the client: a shard a donor holds whole is
written there, one at a time; the others are computed whole by the workers (a cluster's
task list is built at once, and donor rows of every shard would sit in memory together).

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
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from dask.distributed import (
    Client,
    LocalCluster,
    Nanny,
    Scheduler,
    SpecCluster,
    as_completed,
    get_worker,
)

from cache.store import open_store
from extract.base import Backbone
from extract.config import ExtractConfig, build_backbone
from extract.job import Cluster, FillJob, RowProgress
from extract.shards import ShardStats, fill_shards, write_known
from iqadata.manifest import read_manifest

_MODELS: dict[ExtractConfig, Backbone] = {}


def _worker_backbone(cfg: ExtractConfig) -> Backbone:
    """The backbone for ``cfg``, built once per worker process."""
    if cfg not in _MODELS:
        _MODELS.clear()  # one model per worker: drop a previous configuration's weights
        _MODELS[cfg] = build_backbone(cfg)
    return _MODELS[cfg]


@dataclass(frozen=True)
class _Task:
    """What every task of one run shares (sent to the workers with each shard)."""

    cfg: ExtractConfig
    manifest_path: str
    store_url: str
    threads: int
    topic: str


class _WorkerRows:
    """A worker's progress: row counts sent to the client as events on the run's topic."""

    def __init__(self, topic: str) -> None:
        self.topic, self.worker = topic, get_worker()

    def update(self, n: int = 1) -> None:
        self.worker.log_event(self.topic, n)

    def write(self, text: str) -> None:
        print(text)


def _run_task(task: _Task, shard: int) -> ShardStats:
    """Dask task: compute and write one shard, reporting rows as worker events."""
    torch.set_num_threads(task.threads)
    job = FillJob(
        store=open_store(task.store_url, "a"),
        backbone=_worker_backbone(task.cfg),
        cfg=task.cfg,
        manifest=read_manifest(task.manifest_path),
        progress=_WorkerRows(task.topic),
    )
    return fill_shards(job, [shard])


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
def _client(cluster: Cluster, gpus: Sequence[str]) -> Iterator[Client]:
    if cluster.scheduler:
        with Client(cluster.scheduler) as client:
            yield client
        return
    if gpus:
        with gpu_cluster(gpus, cluster.workers) as local, Client(local) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=cluster.workers or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as local,
        Client(local) as client,
    ):
        yield client


class _RowEvents:
    """Row counts sent by workers as events on one topic, forwarded to ``progress``."""

    def __init__(self, client: Client, progress: RowProgress) -> None:
        self.client, self.progress, self.seen = client, progress, 0
        self.topic = f"iqa-extract-rows-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        client.subscribe_topic(self.topic, self._handle)

    def _handle(self, event: tuple[float, Any]) -> None:
        with self._lock:
            self.seen += int(event[1])
            self.progress.update(int(event[1]))

    def close(self, total: int) -> None:
        """Stop listening; report what late events have not reported yet."""
        self.client.unsubscribe_topic(self.topic)
        with self._lock:
            if total > self.seen:
                self.progress.update(total - self.seen)
            self.seen = max(self.seen, total)


def fill_distributed(
    job: FillJob, shards: Iterable[int], cluster: Cluster, gpus: Sequence[str] | None = None
) -> ShardStats:
    """Fill ``shards`` of ``job.store`` on a cluster (a new local one, or the one at its
    scheduler); shards a donor holds whole are written here first.

    Args:
        cluster: ``workers`` processes of a new local cluster (default: one, or one per
            GPU), or the ``scheduler`` of a running one.
        gpus: GPU ids for one worker each; default: every visible GPU when the job's
            device is CUDA and no scheduler is given, none otherwise.
    """
    store = job.store
    caps = store.capabilities
    if not (caps.parallel_writers and caps.shared):
        raise ValueError(
            "distributed extraction needs a store that several processes may write at "
            f"once (Zarr); {store.url} is {store.backend}"
        )
    if job.manifest.path is None:
        raise ValueError("distributed extraction needs a manifest file the workers can read")
    stats, todo = _write_donated(job, shards)
    if todo:
        stats.merge(_on_cluster(job, todo, cluster, gpus))
    return stats


def _on_cluster(
    job: FillJob, shards: list[int], cluster: Cluster, gpus: Sequence[str] | None
) -> ShardStats:
    cfg = job.cfg
    cuda = cfg.device.startswith("cuda")
    if gpus is None:
        gpus = visible_gpus() if cuda and not cluster.scheduler else []
    device = "cuda" if gpus else cfg.device  # each worker sees one GPU, as "cuda"
    task_cfg = replace(cfg, device=device, decode_workers=cfg.decode_workers if cuda else 1)
    threads = max(1, torch.get_num_threads() // max(1, cluster.workers or 1))
    stats = ShardStats()
    with _client(cluster, gpus) as client:
        events = _RowEvents(client, job.progress)
        task = _Task(task_cfg, str(job.manifest.path), job.store.url, threads, events.topic)
        futures = [client.submit(_run_task, task, k, pure=False) for k in shards]
        for future in as_completed(futures):
            stats.merge(future.result())
            if job.stop.is_set():
                client.cancel(futures)
                break
        events.close(stats.rows)
    return stats


def _write_donated(job: FillJob, shards: Iterable[int]) -> tuple[ShardStats, list[int]]:
    """Write the shards a donor holds whole; return what they did and the others."""
    stats, todo = ShardStats(), []
    for k in shards:
        known = job.known_rows(k)
        if len(known) < len(job.store.shard_rows(k)):
            todo.append(k)
            continue
        write_known(job.store, k, known)
        stats.shards += 1
        stats.rows += len(known)
        stats.reused_rows += len(known)
        job.progress.update(len(known))
    return stats, todo
