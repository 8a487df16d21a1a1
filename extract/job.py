"""One fill of a store's missing shards: what every level of the fill path reads.

``extract.run.run_extract`` builds one :class:`FillJob` per run (the store, the backbone
built once, the settings, the manifest, the progress counter, a stop event and the donor
stores of the cache root) and hands it down: ``extract.fill`` claims shards for it,
``extract.shards.fill_shards`` computes and writes them, ``extract.distributed`` hands
them to a dask cluster (a worker makes its own job around the same settings).

Donor rows are found in one place, :meth:`FillJob.known_rows`: the same fingerprint and
image id mean the same features, so those rows are copied rather than recomputed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from cache.root import RowDonors
from cache.store import FeatureStore
from extract.base import Backbone
from extract.config import ExtractConfig
from iqadata.manifest import Manifest

# A row a donor store holds: (features by array name, valid size (h, w), original size (h, w)).
KnownRow = tuple[dict[str, np.ndarray], tuple[int, int], tuple[int, int]]


class RowProgress(Protocol):
    """Where the fill path reports: rows as they finish, and one-line messages.

    ``cache.console.progress`` bars are one; a dask worker's row events are another.
    """

    def update(self, n: int = 1) -> object: ...

    def write(self, text: str) -> None: ...


@dataclass(frozen=True)
class Cluster:
    """Run on dask: a new local cluster of ``workers`` processes, or the one at ``scheduler``."""

    workers: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class FillJob:
    """Everything the fill path needs, built once per run.

    Attributes:
        store: the store being filled (open for appending).
        backbone: the frozen backbone (``extract.config.build_backbone(cfg)``).
        cfg: the settings (batch size, compute dtype, decode threads, device).
        manifest: where the store's image ids are found on disk.
        progress: counts rows as they finish.
        stop: set to finish the shards in flight and return (the first Ctrl-C sets it).
        donors: stores of the cache root with this fingerprint (None: no cache root).
    """

    store: FeatureStore
    backbone: Backbone
    cfg: ExtractConfig
    manifest: Manifest
    progress: RowProgress
    stop: threading.Event = field(default_factory=threading.Event)
    donors: RowDonors | None = None

    def known_rows(self, k: int) -> dict[int, KnownRow]:
        """The rows of shard ``k`` a donor holds, ``{row within the shard: KnownRow}``."""
        if self.donors is None or not len(self.donors):
            return {}
        store = self.store
        keys = [
            (store.image_ids[r // store.n_views], store.views[r % store.n_views])
            for r in store.shard_rows(k)
        ]
        return {
            i: (f, (int(v[0]), int(v[1])), (int(o[0]), int(o[1])))
            for i, (f, v, o) in self.donors.lookup(keys).items()
        }
