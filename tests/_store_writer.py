"""Test helper run as a subprocess: write shards of a small deterministic store.

Usage: ``python tests/_store_writer.py URL FIRST STOP [--slow SECONDS]``. Creates the store
(or reopens it to resume) and writes the missing shards in ``[FIRST, STOP)``; the features
of shard ``k`` depend on ``k`` only, so any sequence of runs gives the same bytes.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from cache.store import ArraySpec, create_store

N_IMAGES = 24
SHARD = 2
VIEWS = ("identity", "flip")
ARRAYS = [ArraySpec("embed", (16, 32, 32)), ArraySpec("feature", (8,), "float32")]
FIELDS = {"backbone": "writer-test", "weights_sha256": "random-init"}


def open_or_create(url: str):
    ids = [f"img{i:03d}.png" for i in range(N_IMAGES)]
    return create_store(url, arrays=ARRAYS, image_ids=ids, views=VIEWS,
                        fingerprint_fields=FIELDS, shard_size=SHARD)  # fmt: skip


def shard_features(store, k: int) -> dict[str, np.ndarray]:
    n = len(store.shard_rows(k))
    rng = np.random.default_rng(k)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    smooth = np.sin(yy * rng.uniform(1, 6, (n, 16, 1, 1)) + xx)  # (rows, 16, 32, 32)
    return {"embed": smooth, "feature": rng.normal(size=(n, 8))}


def main(url: str, first: int, stop: int, slow: float) -> None:
    store = open_or_create(url)
    print("ready", flush=True)
    for k in store.missing_shards():
        if first <= k < stop:
            n = len(store.shard_rows(k))
            sizes = np.tile([[32, 24]], (n, 1))
            failures = {1: "synthetic failure"} if k % 5 == 3 else None
            store.write_shard(k, shard_features(store, k), sizes, sizes * 32, failures)
            time.sleep(slow)
    store.close()


if __name__ == "__main__":
    slow = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--slow" else 0.0
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), slow)
