"""Head training from a store: loader efficiency and seconds per epoch.

Builds a LIVE-sized store shaped like SAM ViT-H features (779 distorted + 29 reference rows
of 256x64x64 float16, smooth random maps) and trains ``sfem_fr`` for one epoch twice in one
run: with the split preloaded into RAM, and reading every batch from the store. Prints

    loader efficiency = (rows/s reading from the store) / (rows/s from preloaded tensors)

(goal >= 0.9) and the seconds per epoch of each.

    python bench/bench_heads.py                   # 779 rows, sfem_fr, CPU
    python bench/bench_heads.py --rows 200 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from cache.manifest import DatasetInfo, Manifest, ManifestRow, Split, write_manifest
from cache.store import ArraySpec, create_store, open_store
from heads.data import load_split
from heads.train import fit


def make_store(root: Path, rows: int, refs: int, shape: tuple[int, int, int]) -> Path:
    """A FR manifest and a store of smooth random maps; returns the manifest path."""
    rng = np.random.default_rng(0)
    dist = [f"d{i:04d}.png" for i in range(rows)]
    ref_ids = [f"r{j:02d}.png" for j in range(refs)]
    manifest_rows = [
        ManifestRow(image=d, ref=ref_ids[i % refs], score=float(rng.uniform(0, 100)),
                    group=ref_ids[i % refs])
        for i, d in enumerate(dist)
    ]
    path = root / "manifest.csv"
    write_manifest(Manifest(DatasetInfo("bench", score_range=(0, 100)), tuple(manifest_rows)),
                   path)
    store = create_store(
        str(root / "f.zarr"), arrays=[ArraySpec("embed", shape)], image_ids=dist + ref_ids,
        fingerprint_fields={"backbone": "bench"}, shard_size=64,
    )
    base = gaussian_filter(rng.standard_normal((8, *shape)), sigma=(0, 2, 2, 2))
    for k in range(store.n_shards):
        n = len(store.shard_rows(k))
        feats = (base[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, *shape)))
        store.write_shard(k, {"embed": feats.astype(np.float16)},
                          np.full((n, 2), shape[1:]), np.full((n, 2), (512, 768)), {})
    return path


def epoch_seconds(root: Path, preload: bool, args: argparse.Namespace) -> tuple[float, int]:
    """Wall time of one training epoch over every distorted row, and the rows it saw."""
    from cache.manifest import read_manifest

    manifest = read_manifest(root / "manifest.csv")
    ids = manifest.image_ids
    split = Split(train=tuple(ids), val=(), test=())
    store = open_store(str(root / "f.zarr"))
    data = load_split(store, manifest, split, ref_store=store, preload=preload)
    start = time.perf_counter()
    fit("sfem_fr", None, data.train, data.val, epochs=1, batch_size=args.batch_size,
        lr=1e-4, seed=0, device=args.device)
    return time.perf_counter() - start, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=779)
    parser.add_argument("--refs", type=int, default=29)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_store(root, args.rows, args.refs, (256, 64, 64))
        print(f"store: {args.rows}+{args.refs} rows of 256x64x64 float16 written in "
              f"{time.perf_counter() - t0:.1f} s")
        preloaded, n = epoch_seconds(root, True, args)
        streamed, _ = epoch_seconds(root, False, args)
    print(f"sfem_fr, batch {args.batch_size}, device {args.device}, "
          f"threads {torch.get_num_threads()}")
    print(f"preloaded tensors : {preloaded:7.1f} s/epoch ({n / preloaded:6.1f} rows/s)")
    print(f"read from store   : {streamed:7.1f} s/epoch ({n / streamed:6.1f} rows/s)")
    print(f"loader efficiency : {preloaded / streamed:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
