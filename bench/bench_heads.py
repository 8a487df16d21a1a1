"""Head training from a store: loader efficiency and seconds per epoch, measured in one run.

Builds a LIVE-sized store shaped like SAM ViT-H features (779 distorted + 29 reference rows
of 256x64x64 float16, smooth random maps), loads the split twice (preloaded into RAM, and
lazily from the store) and runs one epoch of ``sfem_fr`` training steps over every
distorted row in batches, each batch stepped twice in a row: once fed from the preloaded
tensors, once read from the store (the same rows, views and references). Pairing each
batch keeps load from other work on the machine from favouring either side. Prints

    loader efficiency = (rows/s reading from the store) / (rows/s from preloaded tensors)

(goal >= 0.9) and the seconds per epoch of each (the sums of their steps; the head trains
twice as often as in ``fit``, which does not change a step's cost).

    python bench/bench_heads.py                   # 779 rows, sfem_fr, CPU
    python bench/bench_heads.py --rows 200 --device cuda --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec, open_store
from heads.losses import head_loss
from heads.registry import build_from_config, get_head, make_config
from heads.split_data import load_split
from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestRow,
    Split,
    read_manifest,
    write_manifest,
)


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
        str(root / "f.zarr"),
        StoreLayout([ArraySpec("embed", shape)], dist + ref_ids, shard_size=64),
        fingerprint_fields={"backbone": "bench"},
    )
    base = gaussian_filter(rng.standard_normal((8, *shape)), sigma=(0, 2, 2, 2))
    for k in range(store.n_shards):
        n = len(store.shard_rows(k))
        feats = base[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, *shape))
        store.writer.write_shard(k, {"embed": feats.astype(np.float16)},
                          np.full((n, 2), shape[1:]), np.full((n, 2), (512, 768)), {})
    return path


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paired_epoch(root: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """Seconds of all preloaded steps, of all store-fed steps, and the rows of the epoch."""
    manifest = read_manifest(root / "manifest.csv")
    split = Split(train=tuple(manifest.image_ids), val=(), test=())
    store = open_store(str(root / "f.zarr"))
    fed = {p: load_split(store, manifest, split, ref_store=store, preload=p).train
           for p in (True, False)}
    torch.manual_seed(0)
    model = build_from_config("sfem_fr", make_config("sfem_fr", fed[True].feature_specs))
    model = model.to(args.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_cfg = get_head("sfem_fr").loss

    def step(data: Any, rows: torch.Tensor) -> float:
        _sync(args.device)
        start = time.perf_counter()
        feats, valid, ref = data.batch(rows, None, args.device)
        loss = head_loss(model(feats, valid, ref), data.targets[rows].to(args.device), loss_cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(args.device)
        return time.perf_counter() - start

    order = torch.randperm(len(fed[True]), generator=torch.Generator().manual_seed(0))
    step(fed[True], order[: args.batch_size])  # warm-up
    pre = lazy = 0.0
    for rows in order.split(args.batch_size):
        pre += step(fed[True], rows)
        lazy += step(fed[False], rows)
    return pre, lazy, len(order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=779)
    parser.add_argument("--refs", type=int, default=29)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_store(root, args.rows, args.refs, (256, 64, 64))
        write_s = time.perf_counter() - t0
        pre, lazy, n = paired_epoch(root, args)
    res = {"head": "sfem_fr", "rows": n, "batch": args.batch_size, "device": args.device,
           "threads": torch.get_num_threads(), "store_write_s": write_s,
           "preloaded_s_per_epoch": pre, "store_s_per_epoch": lazy,
           "loader_efficiency": pre / lazy}
    if args.json:
        print(json.dumps(res))
        return
    print(f"store: {args.rows}+{args.refs} rows of 256x64x64 float16 written in {write_s:.1f} s")
    print(f"sfem_fr, batch {args.batch_size}, device {args.device}, threads {res['threads']}, "
          "each batch stepped from both sources in turn")
    print(f"preloaded tensors : {pre:7.1f} s/epoch ({n / pre:6.1f} rows/s)")
    print(f"read from store   : {lazy:7.1f} s/epoch ({n / lazy:6.1f} rows/s)")
    print(f"loader efficiency : {pre / lazy:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
