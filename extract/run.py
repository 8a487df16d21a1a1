"""The extraction stage: one frozen backbone over one dataset into one feature store.

``run_extract`` is what ``iqa-extract`` calls. It builds the backbone once
(``extract.config``), computes the store's fingerprint fields once (backbone,
architecture, weight hash, preprocessing, compute and storage dtypes, views, extractor
version) and fills only the shards that are missing, through one ``extract.job.FillJob``,
here or on a dask cluster (``extract.fill``, ``extract.distributed``).

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cache.backends import store_exists
from cache.console import progress as make_progress
from cache.create import create_store, store_fields
from cache.fingerprint import fingerprint_of
from cache.layout import StoreLayout
from cache.root import CacheRoot, RowDonors
from cache.store import ArraySpec, FeatureStore, open_store
from cache.transfer import copy_store
from extract.base import Backbone
from extract.config import ExtractConfig, build_backbone, fingerprint_fields
from extract.fill import fill_missing
from extract.job import Cluster, FillJob
from iqadata.manifest import Manifest, read_manifest


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
    cfg: ExtractConfig,
    backbone: Backbone,
    manifest: Manifest,
    out: str,
    *,
    resume: bool = False,
    fields: dict[str, Any] | None = None,
) -> FeatureStore:
    """Create the store, or reopen it to resume when it exists with the same fingerprint.

    Args:
        fields: the run's ``fingerprint_fields(backbone, cfg)`` (built here when not given).
    """
    if store_exists(out) and not resume:
        raise FileExistsError(
            f"store {out} already exists; pass --resume to fill what is missing "
            "(the fingerprint must match), or choose another --out"
        )
    dtype = cfg.storage_dtype
    arrays = [ArraySpec(name, tuple(shape), dtype) for name, shape in backbone.outputs.items()]
    layout = StoreLayout(arrays, image_ids_for(manifest, cfg.which), cfg.views, cfg.shard_size)
    return create_store(
        out,
        layout,
        fingerprint_fields=fields if fields is not None else fingerprint_fields(backbone, cfg),
        provenance=_provenance(cfg, manifest),
        codec=cfg.codec,
        keepbits=cfg.keepbits,
    )


def run_extract(
    cfg: ExtractConfig,
    manifest_path: str | Path,
    *,
    out: str | None = None,
    cache_root: str | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    cluster: Cluster | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract ``cfg.backbone`` features for a manifest into a store.

    Args:
        out: the store to build (a path, URL or ``.h5``); with ``cache_root`` as well, it
            is built from what the root holds and then filed in the root.
        cache_root: a shared cache root (see the module docstring).
        resume: continue an existing store with the same fingerprint.
        retry_failed: also compute again the images recorded as failed (after a fix).
        cluster: compute on dask (``extract.distributed``); None: in this process.
        progress: show a progress bar (or timed lines in logs).
    """
    if out is None and cache_root is None:
        raise ValueError("give --out, --cache-root, or both")
    start = time.perf_counter()
    manifest = read_manifest(manifest_path)
    backbone = build_backbone(cfg)
    root = CacheRoot(cache_root) if cache_root else None
    fields = fingerprint_fields(backbone, cfg)  # once per run
    fp, ids = fingerprint_of(store_fields(fields, cfg.keepbits)), image_ids_for(manifest, cfg.which)
    in_root = root.find(manifest.info.name, fp, ids, cfg.views) if root else None
    target = out or in_root or _root_path(root, manifest, cfg, fp, ids)
    resume = resume or out is None or retry_failed
    store = open_output(cfg, backbone, manifest, target, resume=resume, fields=fields)
    if retry_failed:
        _uncommit_failed(store)
    missing = store.missing_shards()
    result = ExtractResult(store=target, fingerprint=store.fingerprint, rows=store.n_rows,
                           computed_rows=0, reused=not missing, seconds=0.0)
    if missing:
        total = sum(len(store.shard_rows(k)) for k in missing)
        bar = make_progress(total, f"extract {cfg.backbone}", "img", enabled=progress)
        with bar, _donors(root, manifest.info.name, fp, exclude=target) as donors:
            job = FillJob(store, backbone, cfg, manifest, bar, donors=donors)
            stats = fill_missing(job, cluster)
        result.computed_rows = stats.rows - stats.reused_rows
        result.copied_rows = stats.reused_rows
        result.interrupted = job.stop.is_set()
    result.failures = dict(store.failures)
    result.written_rows = int(store.written.sum())
    store.tidy()
    if root is not None and out is not None and not result.interrupted:
        _file_in_root(root, store, manifest, cfg, ids)
    store.close()
    result.seconds = time.perf_counter() - start
    return result


def _root_path(root: CacheRoot | None, manifest: Manifest, cfg: ExtractConfig, fp: str,
               ids: list[str]) -> str:
    assert root is not None
    return root.path_for(manifest.info.name, cfg.backbone, fp, ids, cfg.views)


def _uncommit_failed(store: FeatureStore) -> None:
    """Make the shards holding failed images pending again (their good rows are kept)."""
    failed = store.failed_rows()
    shards = sorted({store.shard_of_row(int(r)) for r in failed})
    if shards:
        store.uncommit(shards)


@contextmanager
def _donors(
    root: CacheRoot | None, dataset: str, fp: str, exclude: str
) -> Iterator[RowDonors | None]:
    """The other stores of the root with this fingerprint (None without any), closed after."""
    urls = [] if root is None else root.related(dataset, fp)
    urls = [u for u in urls if u.rstrip("/") != exclude.rstrip("/")]
    donors = RowDonors(urls) if urls else None
    try:
        yield donors
    finally:
        if donors is not None:
            donors.close()


def _file_in_root(root: CacheRoot, store: FeatureStore, manifest: Manifest,
                  cfg: ExtractConfig, ids: list[str]) -> None:
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

