"""Distributed extraction: 2 dask workers vs 1 on a CPU-bound backbone, one thread each.

speedup = (seconds of ``fill_distributed`` on a warm 1-worker cluster)
        / (seconds of the same on a warm 2-worker cluster),
each worker single-threaded (torch and decoding), the same images, shards and backbone.
Goal: >= 1.8x. Both clusters are started and warmed (workers imported, model built) before
anything is timed; then the two are timed in alternating rounds (best of ``--repeats``),
so load from other work on the machine hits both alike. The workers' CPU seconds per image
are printed too: equal for 1 and 2 workers means the work is split, not repeated; the
wall-clock speedup then depends only on how many cores the machine has free.

    python bench/bench_dask.py                        # sam_small, 16 images, shards of 2
    python bench/bench_dask.py --backbone nss --images 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from dask.distributed import Client, LocalCluster

from bench.bench_extract import PRESETS, make_dataset
from cache.console import progress
from extract.config import ExtractConfig, build_backbone
from extract.distributed import fill_distributed
from extract.job import Cluster, FillJob
from extract.run import open_output
from iqadata.manifest import read_manifest


def config_of(args: argparse.Namespace) -> ExtractConfig:
    name, arch = PRESETS.get(args.backbone, (args.backbone, {}))
    return ExtractConfig(backbone=name, random_init=True, arch=tuple(sorted(arch.items())),
                         batch_size=args.batch_size, shard_size=args.shard_size)


def _worker_cpu(address: str) -> float:
    with Client(address) as client:
        return sum(client.run(time.process_time).values())


def timed_fill(
    cfg: ExtractConfig, manifest_path: Path, out: Path, address: str
) -> tuple[float, float]:
    """Wall seconds and workers' CPU seconds to fill a fresh store (creation not timed)."""
    manifest = read_manifest(manifest_path)
    backbone = build_backbone(cfg)
    store = open_output(cfg, backbone, manifest, str(out))
    job = FillJob(store, backbone, cfg, manifest, progress(None, "bench", enabled=False))
    cpu = _worker_cpu(address)
    start = time.perf_counter()
    fill_distributed(job, store.missing_shards(), Cluster(scheduler=address))
    wall = time.perf_counter() - start
    return wall, _worker_cpu(address) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="sam_small")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the tasks take the client's threads per worker: one each
    cfg = config_of(args)
    best = {1: float("inf"), 2: float("inf")}
    cpu = {1: float("inf"), 2: float("inf")}
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as one, LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as two:
        root = Path(tmp)
        manifest = make_dataset(root, args.images, (512, 384))
        clusters = {1: one.scheduler_address, 2: two.scheduler_address}
        for n, address in clusters.items():  # warm: imports and one model per worker
            timed_fill(cfg, manifest, root / f"warm{n}.zarr", address)
        for r in range(args.repeats):
            for n, address in clusters.items():
                wall, work = timed_fill(cfg, manifest, root / f"r{r}w{n}.zarr", address)
                best[n], cpu[n] = min(best[n], wall), min(cpu[n], work)
    res = {"backbone": args.backbone, "images": args.images, "shard_size": args.shard_size,
           "one_worker_img_s": args.images / best[1], "two_workers_img_s": args.images / best[2],
           "speedup": best[1] / best[2], "cpu_s_per_img_1": cpu[1] / args.images,
           "cpu_s_per_img_2": cpu[2] / args.images}
    if args.json:
        print(json.dumps(res))
        return
    print(f"{args.backbone}, {args.images} images in shards of {args.shard_size}, one thread "
          f"per worker, best of {args.repeats} alternating rounds on warm clusters")
    print(f"1 worker  : {res['one_worker_img_s']:7.2f} img/s")
    print(f"2 workers : {res['two_workers_img_s']:7.2f} img/s")
    print(f"speedup   : {res['speedup']:.2f}x  (goal >= 1.8x)")
    print(f"worker CPU s/img: {res['cpu_s_per_img_1']:.3f} (1 worker), "
          f"{res['cpu_s_per_img_2']:.3f} (2 workers)")


if __name__ == "__main__":
    main()
