"""Test helper run as a subprocess: write shards of a small deterministic store.

Usage: ``python tests/_store_writer.py URL FIRST STOP [--slow SECONDS] [--claims]``. Creates
the store (or reopens it to resume) and writes the missing shards in ``[FIRST, STOP)``; the
features of shard ``k`` depend on ``k`` only, so any sequence of runs gives the same bytes.
With ``--claims`` each shard is claimed first (``FeatureStore.claims``), as cooperating
writers do, and the numbers of the shards written are printed.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec

N_IMAGES = 24
SHARD = 2
VIEWS = ("identity", "flip")
ARRAYS = [ArraySpec("embed", (16, 32, 32)), ArraySpec("feature", (8,), "float32")]
FIELDS = {"backbone": "writer-test", "weights_sha256": "random-init"}


def open_or_create(url: str):
    ids = [f"img{i:03d}.png" for i in range(N_IMAGES)]
    return create_store(url, StoreLayout(ARRAYS, ids, VIEWS, SHARD), fingerprint_fields=FIELDS)


def shard_features(store, k: int) -> dict[str, np.ndarray]:
    n = len(store.shard_rows(k))
    rng = np.random.default_rng(k)
    yy, xx = np.mgrid[0:32, 0:32] / 32.0
    smooth = np.sin(yy * rng.uniform(1, 6, (n, 16, 1, 1)) + xx)  # (rows, 16, 32, 32)
    return {"embed": smooth, "feature": rng.normal(size=(n, 8))}


def write(store, k: int) -> None:
    n = len(store.shard_rows(k))
    sizes = np.tile([[32, 24]], (n, 1))
    failures = {1: "synthetic failure"} if k % 5 == 3 else None
    store.writer.write_shard(k, shard_features(store, k), sizes, sizes * 32, failures)


def main(url: str, first: int, stop: int, slow: float, claim: bool = False) -> None:
    store = open_or_create(url)
    print("ready", flush=True)
    claims = store.claims() if claim else None
    for k in store.missing_shards():
        if not first <= k < stop:
            continue
        if claims is not None:
            if not claims.try_claim(f"shard_{k:06d}") or k not in store.missing_shards():
                continue
        write(store, k)
        if claims is not None:
            claims.release(f"shard_{k:06d}")
            print(k, flush=True)
        time.sleep(slow)
    if claims is not None:
        claims.release_all()
        claims.remove_if_empty()
    store.tidy()  # as iqa-extract does: a complete store keeps no temporary files
    store.close()


if __name__ == "__main__":
    argv = sys.argv
    slow = float(argv[argv.index("--slow") + 1]) if "--slow" in argv else 0.0
    main(argv[1], int(argv[2]), int(argv[3]), slow, "--claims" in argv)
