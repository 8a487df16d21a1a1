"""Filling a store's missing shards: writer claims, rows other stores hold, interrupts.

``fill_missing`` is the part of ``extract.run.run_extract`` that computes: one pipeline
(``extract.shards.fill_shards``, or a dask cluster through ``extract.distributed``) over
the shards this process claims, claimed as the pipeline reaches them, so a second writer
of the same store finds unclaimed shards to take and no shard is computed twice; rows
that donor stores of the cache root hold are reused rather than recomputed
(``FillJob.known_rows``); the first Ctrl-C sets the job's stop event, which finishes the
shards in flight.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from cache.claims import ClaimFolder
from cache.store import FeatureStore
from extract.job import Cluster, FillJob
from extract.shards import ShardStats, fill_shards

WAIT_POLL_S = 2.0  # seconds between looks while others compute the remaining shards


@contextmanager
def _graceful_interrupt(job: FillJob) -> Iterator[None]:
    """First Ctrl-C sets ``job.stop`` (finish the shards in flight); a second one aborts."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        if job.stop.is_set():
            raise KeyboardInterrupt
        job.stop.set()
        job.progress.write("Interrupted: finishing the shards in flight (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fill_missing(job: FillJob, cluster: Cluster | None = None) -> ShardStats:
    """Fill the missing shards; with writer claims, only those no one else is computing.

    One pipeline runs over all the shards this process claims; shards are claimed as the
    pipeline reaches them (``_Claimer``), so the pipeline never drains between claims and
    a second writer finds unclaimed shards to take. When the rest is being computed by
    others, wait for them (and take over any whose writer died). Stopped early when
    ``job.stop`` is set.

    Args:
        cluster: run on dask (``extract.distributed``); None: in this process.
    """
    claims = job.store.claims()
    stats = ShardStats()
    with _graceful_interrupt(job):
        try:
            while not job.stop.is_set():
                claimer = _Claimer(job.store, claims, job.stop)
                stats.merge(_compute(job, claimer, cluster))
                if not claimer.others_hold_some:
                    break
                time.sleep(WAIT_POLL_S)  # another process is computing the rest
        finally:
            if claims is not None:
                claims.release_all()
                claims.clean_stale()
    return stats


class _Claimer:
    """The missing shards, each claimed by us just before it is handed out (all of them
    when the backend has no claims). Claims of shards committed meanwhile are released as
    it goes; ``others_hold_some`` tells whether another writer holds one."""

    def __init__(
        self, store: FeatureStore, claims: ClaimFolder | None, stop: threading.Event
    ) -> None:
        self.store, self.claims, self.stop = store, claims, stop
        self.others_hold_some = False

    def __iter__(self) -> Iterator[int]:
        held: list[int] = []
        for k in self.store.missing_shards():
            if self.stop.is_set():
                return
            if self.claims is not None:
                committed = self.store.committed()
                self._release([h for h in held if committed[h]])
                held = [h for h in held if not committed[h]]
                if committed[k]:
                    continue  # someone finished it meanwhile
                if not self.claims.try_claim(_claim_name(k)):
                    self.others_hold_some = True
                    continue
                if self.store.committed()[k]:  # committed between our check and our claim
                    self._release([k])
                    continue
                held.append(k)
            yield k

    def _release(self, shards: list[int]) -> None:
        if self.claims is not None:
            for k in shards:
                self.claims.release(_claim_name(k))


def _claim_name(k: int) -> str:
    return f"shard_{k:06d}"


def _compute(job: FillJob, shards: _Claimer, cluster: Cluster | None) -> ShardStats:
    if cluster is None:
        return fill_shards(job, shards)
    # dask.distributed takes a second to import: only runs that use a cluster pay for it
    from extract.distributed import fill_distributed

    return fill_distributed(job, shards, cluster)
