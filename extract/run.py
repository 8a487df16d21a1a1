"""The extraction stage: one frozen backbone over one dataset into one feature store.

``run_extract`` is what ``iqa-extract`` calls. It builds the backbone once, computes the
store's fingerprint (backbone, architecture, weight hash, preprocessing, compute and
storage dtypes, views, extractor version), looks in the shared cache root for a store with
that fingerprint, and otherwise fills only the shards that are missing, here or on a dask
cluster (``extract.distributed``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cache.backends import store_exists
from cache.fingerprint import fingerprint_of
from cache.manifest import Manifest, file_sha256, read_manifest
from cache.root import CacheRoot
from cache.store import ArraySpec, create_store
from extract.loader import check_views
from extract.registry import get_backbone
from extract.shards import AUTOCAST_DTYPES, ShardStats, fill_shards

# Bump when a change to the extraction code changes the numbers it writes.
FEATURE_VERSION = 1
WHICH = ("all", "images", "refs")
STORAGE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides how features are computed and stored.

    Attributes:
        backbone: a key of ``extract.registry.BACKBONES``.
        checkpoint: local weight file or folder; None only with ``random_init``.
        random_init: random weights, for tests and benchmarks (recorded in the fingerprint).
        arch: architecture overrides as sorted (key, value) pairs (tiny test configs).
        device: torch device for the forward pass.
        dtype: compute dtype under autocast: ``bf16``, ``fp16`` or ``fp32``.
        batch_size: images per forward.
        views: pixel-level views stored as extra rows (``identity`` first).
        storage_dtype: ``float16`` (default) or ``float32``.
        shard_size: images per shard (the unit of writing and of distributed work).
        codec: the store's codec name.
        which: ``all`` (images and references), ``images`` or ``refs``.
        decode_workers: threads decoding and preprocessing ahead of the forward.
    """

    backbone: str
    checkpoint: str | None = None
    random_init: bool = False
    arch: tuple[tuple[str, Any], ...] = ()
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 4
    views: tuple[str, ...] = ("identity",)
    storage_dtype: str = "float16"
    shard_size: int = 64
    codec: str = "default"
    which: str = "all"
    decode_workers: int = 2

    def __post_init__(self) -> None:
        check_views(self.views)
        if self.dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(AUTOCAST_DTYPES)}, got {self.dtype!r}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage dtype must be one of {STORAGE_DTYPES}")
        if self.which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {self.which!r}")
        if self.batch_size < 1 or self.shard_size < 1:
            raise ValueError("batch size and shard size must be positive")


@dataclass
class ExtractResult:
    """What ``run_extract`` did."""

    store: str
    fingerprint: str
    rows: int
    computed_rows: int
    reused: bool
    seconds: float
    failures: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False


def build_backbone(cfg: ExtractConfig) -> Any:
    """Build the frozen backbone on ``cfg.device`` in eval mode."""
    builder = get_backbone(cfg.backbone)
    checkpoint = None if cfg.random_init else cfg.checkpoint
    model = builder(checkpoint, random_init=cfg.random_init, **dict(cfg.arch))
    model.eval().requires_grad_(False)
    return model.to(torch.device(cfg.device))


def fingerprint_fields(backbone: Any, cfg: ExtractConfig) -> dict[str, Any]:
    """The fields that decide the stored numbers (the device does not, within tolerance)."""
    return {
        "backbone": cfg.backbone,
        "arch": backbone.arch_config(),
        "weights_sha256": backbone.weights_sha256,
        "preprocessing": backbone.preprocessing(),
        "feature_version": FEATURE_VERSION,
        "compute_dtype": cfg.dtype,
        "storage_dtype": cfg.storage_dtype,
        "views": list(cfg.views),
    }


def image_ids_for(manifest: Manifest, which: str) -> list[str]:
    """Store rows: distorted images, their unique references, or both (images first)."""
    refs = [r for r in manifest.ref_ids if r not in set(manifest.image_ids)]
    if which == "images":
        return manifest.image_ids
    if which == "refs":
        if not refs:
            raise ValueError(f"manifest {manifest.path} has no reference images")
        return refs
    return manifest.image_ids + refs


def _provenance(cfg: ExtractConfig, manifest: Manifest) -> dict[str, Any]:
    try:
        package = version("iqa-feature-cache")
    except PackageNotFoundError:
        package = "unknown"
    return {
        "dataset": manifest.info.name,
        "backbone": cfg.backbone,
        "manifest_sha256": file_sha256(manifest.path) if manifest.path else "",
        "package_version": package,
        "torch_version": torch.__version__,
        "device": cfg.device,
        "extract_config": asdict(cfg),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def open_output(
    cfg: ExtractConfig, backbone: Any, manifest: Manifest, out: str, resume: bool
) -> Any:
    """Create the store, or reopen it to resume when it exists with the same fingerprint."""
    exists = store_exists(out)
    if exists and not resume:
        raise FileExistsError(
            f"store {out} already exists; pass --resume to fill what is missing "
            "(the fingerprint must match), or choose another --out"
        )
    dtype = cfg.storage_dtype
    arrays = [ArraySpec(name, tuple(shape), dtype) for name, shape in backbone.outputs.items()]
    return create_store(
        out,
        arrays=arrays,
        image_ids=image_ids_for(manifest, cfg.which),
        views=cfg.views,
        fingerprint_fields=fingerprint_fields(backbone, cfg),
        provenance=_provenance(cfg, manifest),
        shard_size=cfg.shard_size,
        codec=cfg.codec,
    )


@contextmanager
def _graceful_interrupt() -> Iterator[list[bool]]:
    """First Ctrl-C asks to stop after the shard in flight; a second one aborts."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        tqdm.write("Interrupted: finishing the shard in flight (Ctrl-C again to abort)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def run_extract(
    cfg: ExtractConfig,
    manifest_path: str | Path,
    *,
    out: str | None = None,
    cache_root: str | None = None,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract ``cfg.backbone`` features for a manifest into a store.

    Exactly one of ``out`` and ``cache_root`` is given. With a cache root the store path is
    derived from the dataset and the fingerprint, an existing store is reused, and an
    incomplete one is resumed.
    """
    if (out is None) == (cache_root is None):
        raise ValueError("give exactly one of --out and --cache-root")
    start = time.perf_counter()
    manifest = read_manifest(manifest_path)
    backbone = build_backbone(cfg)
    if cache_root is not None:
        out, resume = _cache_root_target(cache_root, manifest, backbone, cfg), True
    assert out is not None
    store = open_output(cfg, backbone, manifest, out, resume)
    missing = store.missing_shards()
    result = ExtractResult(
        store=out, fingerprint=store.fingerprint, rows=store.n_rows, computed_rows=0,
        reused=not missing, seconds=0.0,
    )
    if missing:
        stats, stopped = _fill(
            cfg, backbone, store, manifest, missing, workers, scheduler, progress
        )
        result.computed_rows, result.interrupted = stats.rows, stopped
    result.failures = dict(store.failures)
    result.seconds = time.perf_counter() - start
    return result


def _cache_root_target(root: str, manifest: Manifest, backbone: Any, cfg: ExtractConfig) -> str:
    fingerprint = fingerprint_of(fingerprint_fields(backbone, cfg))
    cache = CacheRoot(root)
    found = cache.find(manifest.info.name, fingerprint)
    return found or cache.path_for(manifest.info.name, cfg.backbone, fingerprint)


def _fill(
    cfg: ExtractConfig,
    backbone: Any,
    store: Any,
    manifest: Manifest,
    missing: list[int],
    workers: int | None,
    scheduler: str | None,
    progress: bool,
) -> tuple[ShardStats, bool]:
    rows_per_shard = store.shard_size * len(store.views)
    total = min(len(missing) * rows_per_shard, store.n_rows)
    bar = tqdm(total=total, unit="img", desc=f"extract {cfg.backbone}", disable=not progress)
    with bar, _graceful_interrupt() as stop:
        if workers or scheduler:
            from extract.distributed import fill_distributed

            stats = fill_distributed(
                cfg, manifest, store, missing, workers=workers, scheduler=scheduler,
                on_shard=lambda k, n: bar.update(n), should_stop=lambda: stop[0],
            )
        else:
            stats = fill_shards(
                store, backbone, manifest, missing, batch_size=cfg.batch_size, dtype=cfg.dtype,
                decode_workers=cfg.decode_workers, on_shard=lambda k, n: bar.update(n),
                should_stop=lambda: stop[0],
            )
    return stats, stop[0]


def arch_overrides(pairs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Architecture overrides as the hashable, sorted tuple ``ExtractConfig`` keeps."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs.items()))
