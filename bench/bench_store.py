"""Store throughput against plain ``.npy`` files, for SAM-ViT-H-shaped features.

Writes ``--n-images`` rows of (256, 64, 64) float16 through ``FeatureStore.writer.write_shard``
(whole shards, checksums included) for the Zarr and HDF5 backends with each lossless codec,
then reads every row once in random order with ``FeatureStore.read`` (one row per call, as a
DataLoader does). The baseline writes and reads the same bytes as one ``np.save`` file per
image in the same folder. Printed: MB/s, the ratio store / raw, compression ratio, bytes per
image and files per 1000 images (extrapolated from the layout). Reads are warm (the page
cache is not dropped: that would need root and disturb other users of the machine).

Features are realistic rather than white noise: per channel, Gaussian-smoothed noise
(sigma 2 cells, like the smooth spatial maps of ViT necks) scaled by a log-normal channel
gain, plus 5 % fine noise; a pool of distinct maps is cycled through (each chunk is
compressed on its own, so reuse does not flatter the codecs).

Writes are measured in alternating rounds (raw files into a fresh folder, then a fresh
store; best of 3 each), so load from other work on the machine hits both alike. Neither
side calls fsync: both measure writes into the page cache.

``--profile`` prints where the time of one shard write goes instead (checksum, non-finite
check, feature shard file through zarr and through ``cache.backends.zarr_direct_write``, the small
per-row arrays, and an fsync of the shard file for scale).

Run: ``python bench/bench_store.py [--n-images 128] [--dir /tmp] [--keepbits 7] [--profile]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

import cache.backends.zarr as zarr_backend
from cache.backends import CODECS
from cache.create import create_store
from cache.layout import StoreLayout
from cache.shard_writer import _nonfinite_rows, digest
from cache.store import ArraySpec, FeatureStore, open_store

SHAPE = (256, 64, 64)
MB = 1e6


@dataclass
class Result:
    label: str
    write_s: float
    row_s: float  # all rows, one random row per call
    block_s: float  # all rows, random blocks of BLOCK consecutive rows per call
    stored: int
    files: int
    files_per_1000: float


BLOCK = 8
REPEATS = 3


def smooth_features(n: int, pool: int = 8, seed: int = 0) -> np.ndarray:
    """``(pool, 256, 64, 64)`` float16 maps that ``n`` rows cycle through."""
    rng = np.random.default_rng(seed)
    maps = gaussian_filter(rng.normal(size=(pool, *SHAPE)), sigma=(0, 0, 2, 2))
    maps /= maps.std(axis=(2, 3), keepdims=True)  # (pool, C, H, W) unit std per channel
    gain = rng.lognormal(0.0, 0.5, size=(pool, SHAPE[0], 1, 1))
    maps = maps * gain + 0.05 * rng.normal(size=maps.shape)
    return maps.astype(np.float16)[: min(pool, n)]


def _timed(fn: Callable[[], object], settle: bool = False) -> float:
    """Seconds ``fn`` takes; with ``settle``, dirty pages are flushed first (not timed), so
    each timed write starts from the same writeback state."""
    if settle:
        os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _blocks(n: int, seed: int = 2) -> list[np.ndarray]:
    starts = np.random.default_rng(seed).permutation(np.arange(0, n, BLOCK))
    return [np.arange(b, min(b + BLOCK, n)) for b in starts]


class RawFiles:
    """The baseline: one ``np.save`` file per image."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True)

    def write(self, pool: np.ndarray, n: int, folder: Path | None = None) -> float:
        where = folder or self.folder
        where.mkdir(parents=True, exist_ok=True)

        def run() -> None:
            for i in range(n):
                np.save(where / f"{i:06d}.npy", pool[i % len(pool)])

        return _timed(run, settle=True)

    def read_rows(self, rows: np.ndarray) -> None:
        for i in rows:
            np.load(self.folder / f"{i:06d}.npy")

    def stored(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir())


def _shards(store: FeatureStore, pool: np.ndarray) -> list[np.ndarray]:
    """Each shard's rows as one array, built before any timing (the raw side copies none)."""
    return [pool[np.arange(r.start, r.stop) % len(pool)] for r in map(store.shard_rows,
                                                                      range(store.n_shards))]


def _write_store(store: FeatureStore, shards: list[np.ndarray]) -> None:
    for k, data in enumerate(shards):
        sizes = np.tile([[64, 64]], (len(data), 1))
        store.writer.write_shard(k, {"embed": data}, sizes, sizes * 16)


def _files_per_1000(path: Path, n_shards: int, shard_size: int) -> tuple[int, float]:
    if path.is_file():
        return 1, 1.0
    files = [p for p in path.rglob("*") if p.is_file()]
    fixed = sum(p.name == "zarr.json" for p in files) + 2  # metadata + image_id, view
    per_shard = (len(files) - fixed) / n_shards
    return len(files), fixed + per_shard * np.ceil(1000 / shard_size)


def _read_times(read: Callable[[np.ndarray], object], order: np.ndarray) -> tuple[float, float]:
    """Seconds to read every row one at a time, and in blocks; results are dropped as read."""

    def each(batches: list[np.ndarray]) -> None:
        for batch in batches:
            read(batch)

    rows = _timed(lambda: each([np.array([i]) for i in order]))
    block = _timed(lambda: each(_blocks(len(order))))
    return rows, block


def _new_store(url: str, codec: str, args: argparse.Namespace, kb: int | None) -> FeatureStore:
    ids = [f"img{i:06d}.png" for i in range(args.n_images)]
    layout = StoreLayout([ArraySpec("embed", SHAPE)], ids, shard_size=args.shard_size)
    return create_store(url, layout, fingerprint_fields={"bench": True}, codec=codec, keepbits=kb)


def _writes(url: str, codec: str, pool: np.ndarray, raw: RawFiles, args: argparse.Namespace,
            kb: int | None) -> tuple[float, float]:
    """Best raw and best store write seconds over alternating rounds (the last store stays)."""
    best_raw, best_store = np.inf, np.inf
    for r in range(REPEATS):
        scratch = raw.folder.with_name(f"raw-w{r}")
        best_raw = min(best_raw, raw.write(pool, args.n_images, scratch))
        shutil.rmtree(scratch)
        if r:
            shutil.rmtree(url, ignore_errors=True) if not url.endswith(".h5") else os.remove(url)
        store = _new_store(url, codec, args, kb)
        shards = _shards(store, pool)
        timed = _timed(lambda s=store, d=shards: _write_store(s, d), settle=True)
        best_store = min(best_store, timed)
        store.close()
    return best_raw, best_store


def bench_store(url: str, codec: str, pool: np.ndarray, raw: RawFiles, args: argparse.Namespace,
                kb: int | None) -> tuple[Result, Result, float]:
    """Write then read one store, each interleaved with the raw baseline (best of 3 each)."""
    n, shard = args.n_images, args.shard_size
    raw_w, w = _writes(url, codec, pool, raw, args, kb)
    reader = open_store(url)
    reader.read([0], dtype=None)  # open handles and cache the written mask before timing
    order = np.random.default_rng(1).permutation(n)
    best_store, best_raw = [np.inf, np.inf], [np.inf, np.inf]
    for _ in range(REPEATS):
        best_raw = np.minimum(best_raw, _read_times(raw.read_rows, order)).tolist()
        got = _read_times(lambda r: reader.read(r, dtype=None), order)
        best_store = np.minimum(best_store, got).tolist()
    files, per_1000 = _files_per_1000(Path(url), reader.n_shards, shard)
    label = f"{reader.backend} {codec}" + (f" keepbits={kb}" if kb else "")
    result = Result(label, w, *best_store, reader.stored_bytes(), files, per_1000)
    reader.close()
    return result, Result("raw", raw_w, *best_raw, raw.stored(), n, 1000.0), raw_w


def _row(res: Result, raw: Result, raw_write_s: float, n: int) -> str:
    logical = n * int(np.prod(SHAPE)) * 2

    def rate(s: float) -> str:
        return f"{logical / s / MB:7.0f}"

    return (
        f"{res.label:<27} {rate(res.write_s)} {raw_write_s / res.write_s:5.2f}x "
        f"{rate(res.row_s)} {raw.row_s / res.row_s:5.2f}x "
        f"{rate(res.block_s)} {raw.block_s / res.block_s:5.2f}x "
        f"{logical / res.stored:6.3f} {res.stored / n / 2**20:7.3f} {res.files:5d} "
        f"{res.files_per_1000:8.0f}"
    )


HEADER = (
    f"{'store':<27} {'write':>7} {'/raw':>6} {'row rd':>7} {'/raw':>6} {'blk rd':>7} "
    f"{'/raw':>6} {'ratio':>6} {'MiB/img':>7} {'files':>5} {'files/1k':>8}"
)


def run(args: argparse.Namespace, folder: Path) -> None:
    n = args.n_images
    pool = smooth_features(n)
    raw = RawFiles(folder / "raw")
    raw.write(pool, n)
    codecs = args.codecs.split(",")
    configs = [("zarr", c, None) for c in codecs] + [("h5", c, None) for c in codecs]
    if args.keepbits is not None:
        configs.append(("zarr", "blosc-zstd", args.keepbits))
    mib = n * 2 * np.prod(SHAPE) / 2**20
    print(f"{n} images of {SHAPE} float16 ({mib:.0f} MiB), shards of {args.shard_size}, "
          f"in {folder}; MB/s and ratios store/raw (>1: faster); best of {REPEATS} "
          f"alternating rounds; warm page cache; blk = random blocks of {BLOCK} rows; "
          "each row's /raw uses the raw rounds run beside it")
    print(HEADER)
    for i, (kind, codec, kb) in enumerate(configs):
        url = str(folder / (f"s{i}.zarr" if kind == "zarr" else f"s{i}.h5"))
        res, raw_res, raw_write_s = bench_store(url, codec, pool, raw, args, kb)
        if i == 0:
            print(_row(Result("raw .npy files", raw_write_s, raw_res.row_s, raw_res.block_s,
                              raw_res.stored, n, 1000.0), raw_res, raw_write_s, n))
        print(_row(res, raw_res, raw_write_s, n), flush=True)
        shutil.rmtree(url, ignore_errors=True) if kind == "zarr" else os.remove(url)


def profile(args: argparse.Namespace, folder: Path) -> None:
    """Where one whole-shard write spends its time (alternating rounds, best of 3 per step)."""
    rows = smooth_features(args.shard_size)
    rows = rows[np.arange(args.shard_size) % len(rows)]  # (shard, 256, 64, 64)
    mb = rows.nbytes / MB
    layout = argparse.Namespace(**{**vars(args), "n_images": args.shard_size})

    def new_file(fsync: bool = False) -> float:  # a new file each time, as a shard write
        path = folder / "raw.bin"
        with open(path, "wb") as fh:
            start = time.perf_counter()
            fh.write(rows.data)
            if fsync:
                os.fsync(fh.fileno())
        seconds = time.perf_counter() - start
        path.unlink()  # freed pages: kept files make later writes wait for page reclaim
        return seconds

    def shard_file(fast: bool) -> float:  # the feature array of one shard, no checksum
        zarr_backend.FASTWRITE = fast
        store = _new_store(str(folder / "p.zarr"), "none", layout, None)
        start = time.perf_counter()
        store._backend.write(store.arrays["embed"].key, 0, rows)
        seconds = time.perf_counter() - start
        zarr_backend.FASTWRITE = True
        shutil.rmtree(folder / "p.zarr")
        return seconds

    steps: dict[str, Callable[[], float]] = {
        "raw file write (a new file)": new_file,
        "shard file via zarr": lambda: shard_file(False),
        "shard file via zarr_direct_write": lambda: shard_file(True),
        "xxh3-128 checksum (new stores)": lambda: _timed(lambda: digest(rows, "xxh3-128")),
        "blake2b checksum (older stores)": lambda: _timed(lambda: digest(rows, "blake2b")),
        "non-finite row check": lambda: _timed(lambda: _nonfinite_rows(rows)),
        "raw write + fsync (for scale)": lambda: new_file(fsync=True),
    }
    best = dict.fromkeys(steps, np.inf)
    for _ in range(REPEATS):
        for label, step in steps.items():
            os.sync()  # the same writeback state before every step
            best[label] = min(best[label], step())
    print(f"one shard: {args.shard_size} rows, {mb:.0f} MB; best of {REPEATS} alternating "
          "rounds; MB/s")
    for label, seconds in best.items():
        print(f"  {label:<34} {mb / seconds:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="Where a shard write goes.")
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--dir", default=None, help="Folder on the disk to measure.")
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--keepbits", type=int, default=None, help="Add a lossy row.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-store-") as tmp:
        profile(args, Path(tmp)) if args.profile else run(args, Path(tmp))


if __name__ == "__main__":
    main()
