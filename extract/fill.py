"""Filling a store's missing shards: writer claims, rows other stores hold, interrupts.

``fill_missing`` is the part of ``extract.run.run_extract`` that computes: one pipeline
(``extract.shards.fill_shards``, or a dask cluster through ``extract.distributed``) over
the shards this process claims, claimed as the pipeline reaches them, so a second writer
of the same store finds unclaimed shards to take and no shard is computed twice; rows
that donor stores of the cache root hold are reused rather than recomputed; the first
Ctrl-C finishes the shards in flight.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.console import progress as make_progress
from cache.manifest import Manifest
from cache.root import RowDonors
from cache.store import FeatureStore
from extract.shards import ShardStats, fill_shards

if TYPE_CHECKING:
    from extract.run import ExtractConfig

WAIT_POLL_S = 2.0  # seconds between looks while others compute the remaining shards


@contextmanager
def _graceful_interrupt(say: Callable[[str], None]) -> Iterator[list[bool]]:
    """First Ctrl-C asks to stop after the shards in flight; a second one aborts."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        say("Interrupted: finishing the shards in flight (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def fill_missing(
    cfg: ExtractConfig, backbone: Any, store: FeatureStore, manifest: Manifest,
    donors: RowDonors | None, workers: int | None, scheduler: str | None, show: bool,
) -> tuple[ShardStats, bool]:  # fmt: skip
    """Fill the missing shards; with writer claims, only those no one else is computing.

    One pipeline runs over all the shards this process claims; shards are claimed as the
    pipeline reaches them (``_claimed``), so the pipeline never drains between claims and
    a second writer finds unclaimed shards to take. When the rest is being computed by
    others, wait for them (and take over any whose writer died).
    """
    claims = store.claims()
    total = sum(len(store.shard_rows(k)) for k in store.missing_shards())
    bar = make_progress(total, f"extract {cfg.backbone}", "img", enabled=show)
    stats = ShardStats()
    reuse = _reuser(store, donors) if donors is not None and len(donors) else None
    with bar, _graceful_interrupt(bar.write) as stop:
        try:
            while not stop[0]:
                others = [False]
                shards = _claimed(store, claims, stop, others)
                stats.merge(_compute(cfg, backbone, store, manifest, shards, workers,
                                     scheduler, bar, stop, reuse))  # fmt: skip
                if not others[0]:
                    break
                time.sleep(WAIT_POLL_S)  # another process is computing the rest
        finally:
            if claims is not None:
                claims.release_all()
                claims.clean_stale()
            if donors is not None:
                donors.close()
    return stats, stop[0]


def _claimed(
    store: FeatureStore, claims: Any, stop: list[bool], others: list[bool]
) -> Iterator[int]:
    """Missing shards, each claimed by us just before it is yielded (all of them when the
    backend has no claims); sets ``others[0]`` when someone else holds one. Claims of
    shards that are committed meanwhile are released as it goes."""
    held: list[int] = []
    for k in store.missing_shards():
        if stop[0]:
            return
        if claims is not None:
            committed = store.committed()
            _release(claims, [h for h in held if committed[h]])
            held = [h for h in held if not committed[h]]
            if committed[k]:
                continue  # someone finished it meanwhile
            if not claims.try_claim(_claim_name(k)):
                others[0] = True
                continue
            if store.committed()[k]:  # committed between our check and our claim
                _release(claims, [k])
                continue
            held.append(k)
        yield k


def _claim_name(k: int) -> str:
    return f"shard_{k:06d}"


def _release(claims: Any, shards: list[int]) -> None:
    if claims is not None:
        for k in shards:
            claims.release(_claim_name(k))


def _reuser(store: FeatureStore, donors: RowDonors) -> Callable[[int], dict[int, Any]]:
    """``fill_shards``'s ``reuse``: the rows of shard ``k`` that a donor store holds."""

    def reuse(k: int) -> dict[int, Any]:
        rows = store.shard_rows(k)
        keys = [(store.image_ids[r // store.n_views], store.views[r % store.n_views])
                for r in rows]  # fmt: skip
        known = donors.lookup(keys)
        return {i: (f, tuple(int(x) for x in v), tuple(int(x) for x in o))
                for i, (f, v, o) in known.items()}  # fmt: skip

    return reuse


def _write_known(store: FeatureStore, k: int, known: dict[int, Any]) -> None:
    """Write shard ``k`` from rows a donor holds (every row of the shard)."""
    order = range(len(known))
    feats = {n: np.stack([known[i][0][n] for i in order]) for n in store.arrays}
    store.write_shard(k, feats, np.array([known[i][1] for i in order]),
                      np.array([known[i][2] for i in order]))  # fmt: skip


def _compute(
    cfg: ExtractConfig, backbone: Any, store: FeatureStore, manifest: Manifest,
    shards: Iterator[int], workers: int | None, scheduler: str | None, bar: Any,
    stop: list[bool], reuse: Callable[[int], dict[int, Any]] | None,
) -> ShardStats:  # fmt: skip
    if workers or scheduler:
        from extract.distributed import fill_distributed

        # Known rows are not shipped to workers (a cluster's task list is built at once,
        # and donor rows of every shard would sit in memory together): shards a donor
        # holds whole are copied here, one at a time; the rest are computed whole.
        copied, todo = ShardStats(), []
        for k in shards:
            known = reuse(k) if reuse is not None else {}
            if len(known) < len(store.shard_rows(k)):
                todo.append(k)
                continue
            _write_known(store, k, known)
            copied.shards += 1
            copied.rows += len(known)
            copied.reused_rows += len(known)
            bar.update(len(known))
        copied.merge(fill_distributed(
            cfg, manifest, store, todo, workers=workers, scheduler=scheduler,
            on_rows=bar.update, should_stop=lambda: stop[0],
        ))  # fmt: skip
        return copied
    return fill_shards(
        store, backbone, manifest, shards, batch_size=cfg.batch_size, dtype=cfg.dtype,
        decode_workers=cfg.decode_workers, on_rows=bar.update, should_stop=lambda: stop[0],
        reuse=reuse,
    )  # fmt: skip
