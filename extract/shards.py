"""Fill whole shards of a store: decode ahead, batched forward, write behind.

The unit of work is a shard (``store.shard_size`` images, all their views). Within a shard
the rows to compute are batched in order, so the same shard gives the same batches, and
therefore the same numbers, whether it runs in this process or on a dask worker.

The pipeline (``fill_shards(job, shards)``, reading everything else from the
``extract.job.FillJob``): decode threads run ``prefetch`` images ahead, each view
``Backbone.prepare``-d into a compact tensor (uint8 where the backbone has a device half;
page-locked when the backbone is on a CUDA device); the rows stream into batches that
never cross a shard boundary; ``extract.forward.DeviceRunner`` keeps one batch in flight
on the device; a finished shard goes to a writer thread while the next one computes (at
most one shard waits to be written). Rows a donor store holds (``FillJob.known_rows``) are
neither decoded nor computed; a shard is always assembled and written whole
(``write_known`` writes one a donor holds entirely, as the dask client does).

Host memory is bounded by the prefetch depth: about ``(prefetch + 2 * batch_size) * views``
prepared inputs (SAM: at most 3 MiB each as uint8; 12 MiB each as float32 without a device
half) plus three shards of features (the one filling, the one being written, and the
float32 batch outputs on their way), whatever the dataset size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from cache.store import FeatureStore
from extract.forward import DeviceRunner, check_batch_fits, device_of, to_stored
from extract.job import FillJob, KnownRow
from extract.loader import PreparedView, prefetch_map, prepare_image

# Per image: (shard, image index, views to prepare); (shard, None, ()) ends a shard.
Work = tuple[int, int | None, tuple[int, ...]]
# A batch's key: (shard, its rows within the shard); (shard, None) ends a shard.
BatchKey = tuple[int, list[int] | None]
Features = dict[str, np.ndarray]


@dataclass
class ShardStats:
    """What a batch of shards did."""

    shards: int = 0
    rows: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    reused_rows: int = 0

    def merge(self, other: ShardStats) -> None:
        self.shards += other.shards
        self.rows += other.rows
        self.reused_rows += other.reused_rows
        self.failures.update(other.failures)


@dataclass
class _Shard:
    """One shard on its way: known rows, prepared rows' sizes and errors, computed outputs."""

    k: int
    n_rows: int
    known: dict[int, KnownRow]
    sizes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    computed: list[tuple[list[int], Features]] = field(default_factory=list)

    def add_view(self, local: int, view: PreparedView) -> bool:
        """Record a prepared row's sizes (or its error); True when it is to be computed."""
        self.sizes[local] = (*view.valid_hw, *view.orig_hw)
        if view.tensor is None:
            self.errors[local] = view.error or "unknown error"
        return view.tensor is not None

    def assemble(
        self, store: FeatureStore
    ) -> tuple[Features, np.ndarray, np.ndarray, dict[int, str]]:
        """Features, valid and original sizes, and failures, in store row order."""
        features = {}
        filled = {r for rows, _ in self.computed for r in rows} | set(self.known)
        empty = [r for r in range(self.n_rows) if r not in filled]  # failed rows
        for name, spec in store.arrays.items():
            features[name] = np.empty((self.n_rows, *spec.shape), dtype=spec.dtype)
            features[name][empty] = np.nan  # no NaN pass over a whole 128 MiB shard
        for rows, out in self.computed:
            for name, spec in store.arrays.items():
                stored = to_stored({name: out[name]}, spec.dtype, store.keepbits)
                features[name][rows] = stored[name]
        sizes = np.zeros((self.n_rows, 4), dtype=np.int32)  # (rows, valid h w + orig h w)
        for local, (feats, valid, orig) in self.known.items():
            for name in features:
                features[name][local] = feats[name]
            sizes[local] = (*valid, *orig)
        for local, hw in self.sizes.items():
            sizes[local] = hw
        return features, sizes[:, :2], sizes[:, 2:], dict(self.errors)


def write_known(store: FeatureStore, k: int, known: dict[int, KnownRow]) -> None:
    """Write shard ``k`` from rows a donor holds (every row of the shard)."""
    features, valid, orig, failures = _Shard(k, len(known), known).assemble(store)
    store.writer.write_shard(k, features, valid, orig, failures)


def _shard_images(store: FeatureStore, shard: int) -> range:
    start = shard * store.shard_size
    return range(start, min(start + store.shard_size, store.n_images))


def _jobs(job: FillJob, shards: Iterable[int], open_shards: dict[int, _Shard]) -> Iterator[Work]:
    """Per image ``(shard, image, views to prepare)``, then ``(shard, None, ())`` per shard.

    Asks the job for each shard's known rows as the shard is scheduled; an image whose
    every view is known is not decoded at all.
    """
    n_views = len(job.store.views)
    for k in shards:
        images = _shard_images(job.store, k)
        known = job.known_rows(k)
        open_shards[k] = _Shard(k, len(images) * n_views, known)
        for i in images:
            first = (i - images.start) * n_views
            needed = tuple(v for v in range(n_views) if first + v not in known)
            if needed:
                yield k, i, needed
        yield k, None, ()


def _batches(
    store: FeatureStore,
    prepared: Iterator[tuple[Work, list[PreparedView]]],
    open_shards: dict[int, _Shard],
    batch_size: int,
) -> Iterator[tuple[BatchKey, list[torch.Tensor]]]:
    """Batches of prepared rows, in row order, never across shards; a marker ends a shard."""
    n_views = len(store.views)
    rows: list[int] = []
    tensors: list[torch.Tensor] = []
    for (k, i, needed), views in prepared:
        if i is None:
            if rows:
                yield (k, rows), tensors
            rows, tensors = [], []
            yield (k, None), []
            continue
        shard = open_shards[k]
        first = (i - k * store.shard_size) * n_views
        for v, view in zip(needed, views, strict=True):
            if shard.add_view(first + v, view):
                rows.append(first + v)
                tensors.append(view.tensor)  # type: ignore[arg-type]
            if len(rows) == batch_size:
                yield (k, rows), tensors
                rows, tensors = [], []


def fill_shards(job: FillJob, shards: Iterable[int], *, prefetch: int | None = None) -> ShardStats:
    """Compute and write ``shards`` of ``job.store``; decoding runs ahead, writing behind.

    Rows are counted on ``job.progress`` as they finish (after each batch; known and failed
    rows when their shard is handed to the writer); ``job.stop`` is looked at between
    shards and finishes the shard in flight.

    Args:
        prefetch: images decoded ahead (default two shards and a few); bounds host memory.
    """
    store, backbone, cfg = job.store, job.backbone, job.cfg
    check_batch_fits(backbone, cfg.batch_size, cfg.dtype)
    depth = prefetch or 2 * store.shard_size + 4
    with ThreadPoolExecutor(cfg.decode_workers) as pool, ThreadPoolExecutor(1) as writer:
        open_shards: dict[int, _Shard] = {}
        work = _jobs(job, shards, open_shards)
        prepared = prefetch_map(_preparer(job), work, pool, depth)
        runner = DeviceRunner(backbone, dtype=cfg.dtype, out_dtype=_out_dtype(store))
        stream = runner.map(_batches(store, prepared, open_shards, cfg.batch_size))
        try:
            stats = _drain(job, stream, open_shards, writer)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # drop decoding done ahead
    return stats


def _out_dtype(store: FeatureStore) -> str:
    dtypes = {spec.dtype for spec in store.arrays.values()}
    return dtypes.pop() if len(dtypes) == 1 else "float32"


def _preparer(job: FillJob) -> Callable[[Work], tuple[Work, list[PreparedView]]]:
    store, backbone = job.store, job.backbone
    views = tuple(store.views)
    pin = device_of(backbone).type == "cuda"

    def work(item: Work) -> tuple[Work, list[PreparedView]]:
        _, i, needed = item
        if i is None:
            return item, []
        path = job.manifest.resolve(store.image_ids[i])
        return item, prepare_image(path, tuple(views[v] for v in needed), backbone.prepare, pin)

    return work


def _drain(
    job: FillJob,
    stream: Iterator[tuple[BatchKey, Features | None]],
    open_shards: dict[int, _Shard],
    writer: ThreadPoolExecutor,
) -> ShardStats:
    """Collect batch outputs per shard; hand each finished shard to the writer."""
    store = job.store
    stats = ShardStats()
    pending: Future[None] | None = None
    for (k, rows), out in stream:
        shard = open_shards[k]
        if rows is not None:
            assert out is not None
            shard.computed.append((rows, out))
            job.progress.update(len(rows))
            continue
        features, valid, orig, failures = shard.assemble(store)
        del open_shards[k]
        if pending is not None:
            pending.result()  # at most one shard waits to be written
        pending = writer.submit(store.writer.write_shard, k, features, valid, orig, failures)
        _count(stats, store, shard, failures)
        if len(shard.known) + len(failures):
            job.progress.update(len(shard.known) + len(failures))
        if job.stop.is_set():
            break
    if pending is not None:
        pending.result()
    return stats


def _count(stats: ShardStats, store: FeatureStore, shard: _Shard, failures: dict[int, str]) -> None:
    first_row = shard.k * store.shard_size * len(store.views)
    for local, reason in failures.items():
        stats.failures[store.image_ids[(first_row + local) // len(store.views)]] = reason
    stats.shards += 1
    stats.rows += shard.n_rows
    stats.reused_rows += len(shard.known)
