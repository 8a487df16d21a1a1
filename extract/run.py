"""The extraction stage: one frozen backbone over one dataset into one feature store.

``run_extract`` is what ``iqa-extract`` calls. It builds the backbone once, computes the
store's fingerprint (backbone, architecture, weight hash, preprocessing, compute and
storage dtypes, views, extractor version) and fills only the shards that are missing,
here or on a dask cluster (``extract.distributed``).

Sharing. With a shared cache root (``cache_root``), the store of this exact content
(fingerprint + image ids) is reused when it is there; otherwise rows that other stores of
the same dataset and fingerprint hold are copied rather than recomputed, and the result
is filed in the root. With both ``out`` and ``cache_root`` the store is built at ``out``
(e.g. a DVC output) from what the root holds, and then filed in the root too.

Writers. Stores whose backend coordinates writers by shard claims (Zarr) may be filled by
several processes at once (two people extracting the same set into one cache root): each
shard is claimed before it is computed, so every shard is computed once, and a writer
waits for shards others are computing (``extract.fill``). Single-writer backends (HDF5)
refuse a second one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cache.backends import store_exists
from cache.create import create_store, store_fields
from cache.fingerprint import fingerprint_of
from cache.manifest import Manifest, read_manifest
from cache.record import ExtractionRecord
from cache.root import CacheRoot, RowDonors
from cache.store import ArraySpec, FeatureStore, open_store
from cache.transfer import copy_store
from extract.fill import fill_missing
from extract.forward import AUTOCAST_DTYPES, configure, kernel_fields
from extract.loader import check_views
from extract.registry import get_backbone

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
        keepbits: lossy mantissa bit-rounding of the stored features (None: lossless);
            recorded in the fingerprint.
        attention: SAM attention kernel (``extract.sam_attention.KERNELS``; others ignore it).
        cast_weights: run in ``dtype`` with cast weights instead of under autocast.
        compile: ``torch.compile`` the forward (static batch shape).
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
    keepbits: int | None = None
    attention: str = "sdpa"
    cast_weights: bool = False
    compile: bool = False

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

    def record(self) -> ExtractionRecord:
        """The store's extraction record (what a head checkpoint needs to score images)."""
        return ExtractionRecord(
            backbone=self.backbone, arch=self.arch, compute_dtype=self.dtype,
            storage_dtype=self.storage_dtype, keepbits=self.keepbits, views=self.views,
            which=self.which, options=tuple(self.engine_options().items()),
        )  # fmt: skip

    def engine_options(self) -> dict[str, Any]:
        """The engine settings that change bits (kept in the record's ``options``)."""
        return {"attention": self.attention, "cast_weights": self.cast_weights,
                "compile": self.compile}  # fmt: skip

    @classmethod
    def from_record(
        cls, record: ExtractionRecord, checkpoint: str | None, device: str = "cpu"
    ) -> ExtractConfig:
        """The settings that compute a record's features for new images (identity view).

        Records from before the engine options existed ran segment_anything's own attention.
        """
        options = dict(record.options)
        return cls(
            backbone=record.backbone, checkpoint=checkpoint, arch=record.arch,
            device=device, dtype=record.compute_dtype, storage_dtype=record.storage_dtype,
            which=record.which, keepbits=record.keepbits,
            attention=str(options.get("attention", "reference")),
            cast_weights=bool(options.get("cast_weights", False)),
            compile=bool(options.get("compile", False)),
        )  # fmt: skip


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
    copied_rows: int = 0
    written_rows: int = 0

    @property
    def failed_rows(self) -> int:
        return self.rows - self.written_rows


def build_backbone(cfg: ExtractConfig) -> Any:
    """Build the frozen backbone on ``cfg.device`` in eval mode.

    Random weights are drawn from a fixed seed (the global RNG is left as it was), so every
    process, dask worker included, builds the same random-init model.
    """
    builder = get_backbone(cfg.backbone)
    checkpoint = None if cfg.random_init else cfg.checkpoint
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = builder(checkpoint, random_init=cfg.random_init, **dict(cfg.arch))
    model.eval().requires_grad_(False)
    set_attention = getattr(model, "set_attention", None)  # SAM only
    if set_attention is not None:
        set_attention(cfg.attention)
    model = model.to(torch.device(cfg.device))
    compile_batch = cfg.batch_size if cfg.compile else None
    return configure(model, dtype=cfg.dtype, cast_weights=cfg.cast_weights,
                     compile_batch=compile_batch)  # fmt: skip


def fingerprint_fields(backbone: Any, cfg: ExtractConfig) -> dict[str, Any]:
    """The fields that decide the stored numbers (the device does not, within tolerance)."""
    fields = {
        "backbone": cfg.backbone,
        "arch": backbone.arch_config(),
        "weights_sha256": backbone.weights_sha256,
        "preprocessing": backbone.preprocessing(),
        "feature_version": FEATURE_VERSION,
        "compute_dtype": cfg.dtype,
        "storage_dtype": cfg.storage_dtype,
        "views": list(cfg.views),
    }
    kernels = kernel_fields(backbone, dtype=cfg.dtype, cast_weights=cfg.cast_weights,
                            compiled=cfg.compile)  # fmt: skip
    if kernels:  # absent for the reference kernels: older stores keep their fingerprints
        fields["kernels"] = kernels
    return fields


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
    """What extraction adds to the store's own provenance (which has the package version)."""
    return {
        "dataset": manifest.info.name,
        "backbone": cfg.backbone,
        "torch_version": torch.__version__,
        "device": cfg.device,
        "extraction": cfg.record().to_dict(),
    }


def open_output(
    cfg: ExtractConfig, backbone: Any, manifest: Manifest, out: str, resume: bool
) -> FeatureStore:
    """Create the store, or reopen it to resume when it exists with the same fingerprint."""
    if store_exists(out) and not resume:
        raise FileExistsError(
            f"store {out} already exists; pass --resume to fill what is missing "
            "(the fingerprint must match), or choose another --out"
        )
    dtype = cfg.storage_dtype
    arrays = [ArraySpec(name, tuple(shape), dtype) for name, shape in backbone.outputs.items()]
    return create_store(
        out, arrays=arrays, image_ids=image_ids_for(manifest, cfg.which), views=cfg.views,
        fingerprint_fields=fingerprint_fields(backbone, cfg),
        provenance=_provenance(cfg, manifest), shard_size=cfg.shard_size, codec=cfg.codec,
        keepbits=cfg.keepbits,
    )  # fmt: skip


def run_extract(
    cfg: ExtractConfig,
    manifest_path: str | Path,
    *,
    out: str | None = None,
    cache_root: str | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract ``cfg.backbone`` features for a manifest into a store.

    Args:
        out: the store to build (a path, URL or ``.h5``); with ``cache_root`` as well, it
            is built from what the root holds and then filed in the root.
        cache_root: a shared cache root (see the module docstring).
        resume: continue an existing store with the same fingerprint.
        retry_failed: also compute again the images recorded as failed (after a fix).
    """
    if out is None and cache_root is None:
        raise ValueError("give --out, --cache-root, or both")
    start = time.perf_counter()
    manifest = read_manifest(manifest_path)
    backbone = build_backbone(cfg)
    root = CacheRoot(cache_root) if cache_root else None
    fields = store_fields(fingerprint_fields(backbone, cfg), cfg.keepbits)
    fp, ids = fingerprint_of(fields), image_ids_for(manifest, cfg.which)
    in_root = root.find(manifest.info.name, fp, ids, cfg.views) if root else None
    target = out or in_root or _root_path(root, manifest, cfg, fp, ids)
    store = open_output(cfg, backbone, manifest, target, resume or out is None or retry_failed)
    if retry_failed:
        _uncommit_failed(store)
    missing = store.missing_shards()
    result = ExtractResult(store=target, fingerprint=store.fingerprint, rows=store.n_rows,
                           computed_rows=0, reused=not missing, seconds=0.0)  # fmt: skip
    if missing:
        donors = _donors(root, manifest.info.name, fp, exclude=target)
        stats, stopped = fill_missing(cfg, backbone, store, manifest, donors, workers,
                                      scheduler, progress)  # fmt: skip
        result.computed_rows = stats.rows - stats.reused_rows
        result.copied_rows = stats.reused_rows
        result.interrupted = stopped
    result.failures = dict(store.failures)
    result.written_rows = int(store.written.sum())
    store.tidy()
    if root is not None and out is not None and not result.interrupted:
        _file_in_root(root, store, manifest, cfg, ids)
    store.close()
    result.seconds = time.perf_counter() - start
    return result


def _root_path(root: CacheRoot | None, manifest: Manifest, cfg: ExtractConfig, fp: str,
               ids: list[str]) -> str:  # fmt: skip
    assert root is not None
    return root.path_for(manifest.info.name, cfg.backbone, fp, ids, cfg.views)


def _uncommit_failed(store: FeatureStore) -> None:
    """Make the shards holding failed images pending again (their good rows are kept)."""
    failed = store.failed_rows()
    shards = sorted({store.shard_of_row(int(r)) for r in failed})
    if shards:
        store.uncommit(shards)


def _donors(root: CacheRoot | None, dataset: str, fp: str, exclude: str) -> RowDonors | None:
    if root is None:
        return None
    urls = [u for u in root.related(dataset, fp) if u.rstrip("/") != exclude.rstrip("/")]
    return RowDonors(urls) if urls else None


def _file_in_root(root: CacheRoot, store: FeatureStore, manifest: Manifest,
                  cfg: ExtractConfig, ids: list[str]) -> None:  # fmt: skip
    """Copy a store built at ``--out`` into the cache root, unless the root has it."""
    dest = root.path_for(manifest.info.name, cfg.backbone, store.fingerprint, ids, cfg.views)
    if dest.rstrip("/") == store.url.rstrip("/"):
        return
    existing = root.find(manifest.info.name, store.fingerprint, ids, cfg.views)
    if existing is not None:
        with open_store(existing) as there:
            if not there.missing_shards():
                return
    copy_store(store.url, dest).close()


def arch_overrides(pairs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Architecture overrides as the hashable, sorted tuple ``ExtractConfig`` keeps."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs.items()))
