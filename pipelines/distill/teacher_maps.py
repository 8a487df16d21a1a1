"""Distillation step 1: a trained QFD teacher's maps and scores, into their own store.

DP-IQA (arXiv 2405.19996, §III-D) distils the 8-channel QFD feature map and supervises the
student with it. With a frozen backbone the map is a fixed function of the cached SD 1.5
features, so it is computed once per image and stored: training the student never runs
Stable Diffusion. The reference (``RomGai/DP-IQA``, ``train_student.py``) instead runs the
whole teacher, VAE sample included, on every student step, so its targets jitter slightly.

The new store has the source store's image ids, views and shard size (shard ``k`` of both
holds the same rows), and two arrays: ``map`` (the teacher's post-ReLU QFD map,
``(C, S, S)``, float16 by default) and ``score`` (``(1,)`` float32, the teacher's predicted
quality, normalised, higher is better). Its fingerprint covers the teacher checkpoint's
sha256 and config and the source store's fingerprint; resuming, verifying
(``iqa-cache verify``) and sharing through a cache root work as for any store. Rows the
source failed are recorded as failures, with the source's reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.backends import store_exists
from cache.console import DataProblem, UsageProblem, progress
from cache.create import create_store
from cache.fingerprint import fingerprint_of
from cache.layout import StoreLayout
from cache.root import CacheRoot
from cache.store import ArraySpec, FeatureStore, open_store
from heads.checkpoint import load_head
from iqadata.manifest import file_sha256

KIND = "dpiqa_teacher_maps"
MAPS_VERSION = 1
STORAGE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class TeacherMapsConfig:
    """How teacher maps are computed and stored.

    Attributes:
        batch_size: source rows per QFD forward.
        device: torch device of the QFD forward (fp32).
        storage_dtype: dtype of the ``map`` array (``score`` is always float32).
        codec: the new store's codec (see ``cache.create.create_store``).
    """

    batch_size: int = 8
    device: str = "cpu"
    storage_dtype: str = "float16"
    codec: str = "default"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageProblem(f"batch size must be positive, got {self.batch_size}")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise UsageProblem(f"storage dtype must be one of {STORAGE_DTYPES}")


@dataclass
class TeacherMapsResult:
    """What ``write_teacher_maps`` did."""

    store: str
    fingerprint: str
    rows: int
    computed_shards: int
    reused: bool
    failures: dict[str, str] = field(default_factory=dict)


def _load_teacher(path: str | Path, source: FeatureStore) -> tuple[Any, dict[str, Any]]:
    head, ckpt = load_head(path, store_fingerprint=source.fingerprint)
    if ckpt["head"] != "qfd":
        raise UsageProblem(f"{path}: a {ckpt['head']!r} head; the DP-IQA teacher is a qfd head")
    return head, ckpt


def teacher_fields(
    teacher_path: str | Path, ckpt: dict[str, Any], source: FeatureStore, cfg: TeacherMapsConfig
) -> dict[str, Any]:
    """The fingerprint fields of a teacher-map store (what decides its numbers)."""
    return {
        "kind": KIND,
        "maps_version": MAPS_VERSION,
        "teacher": {
            "head": ckpt["head"],
            "sha256": file_sha256(teacher_path),
            "config": ckpt["config"],
        },
        "source_fingerprint": source.fingerprint,
        "storage_dtype": cfg.storage_dtype,
        "views": list(source.views),
    }


def _provenance(source: FeatureStore, ckpt: dict[str, Any], teacher: str) -> dict[str, Any]:
    return {
        "dataset": source.provenance.get("dataset"),
        "backbone": "dpiqa_teacher",
        "source_store": source.url,
        "source_fields": source.fingerprint_fields,
        "teacher_checkpoint": str(teacher),
        "label_norm": ckpt.get("label_norm") or {},
    }


def _check_source(source: FeatureStore, names: Sequence[str]) -> None:
    missing = source.missing_shards()
    if missing:
        raise DataProblem(
            f"{source.url}: {len(missing)} of {source.n_shards} shards are not written; "
            "finish the extraction (iqa-extract --resume) first"
        )
    absent = [n for n in names if n not in source.arrays]
    if absent:
        raise DataProblem(f"{source.url} has no array(s) {absent} that the teacher reads")


def _target(out: str | None, cache_root: str | None, source: FeatureStore, fp: str) -> str:
    if (out is None) == (cache_root is None):
        raise UsageProblem("give exactly one of --out and --cache-root")
    if out is not None:
        return out
    assert cache_root is not None
    root = CacheRoot(cache_root)
    dataset = str(source.provenance.get("dataset") or "unknown")
    ids, views = source.image_ids, source.views
    return root.find(dataset, fp, ids, views) or root.path_for(dataset, "dpiqa_teacher", fp,
                                                               ids, views)


def _batches(source: FeatureStore, shard: int, size: int) -> list[tuple[list[int], list[int]]]:
    """(local positions, store rows) of the written rows of one shard, in batches."""
    rows = source.shard_rows(shard)
    written = source.written[rows.start : rows.stop]
    ok = [i for i in range(len(rows)) if written[i]]
    out = []
    for start in range(0, len(ok), size):
        local = ok[start : start + size]
        out.append((local, [rows.start + i for i in local]))
    return out


def _read_ahead(
    source: FeatureStore, batches: list[tuple[list[int], list[int]]], names: Sequence[str]
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Yield each batch's features while the next one is read in a thread."""
    with ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(source.read, rows, names) for _, rows in batches[:1]]
        for k, (local, _) in enumerate(batches):
            if k + 1 < len(batches):
                pending.append(pool.submit(source.read, batches[k + 1][1], names))
            yield local, pending[k].result()


def teacher_outputs(head: Any, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(map (B, C, S, S), score (B,)) of a QFD head from one forward of its decoder."""
    fmap = head.feature_map(feats)
    return fmap, head.mlp(fmap.flatten(1)).squeeze(-1)  # flatten: (B, C * S * S)


def _shard_maps(
    source: FeatureStore, shard: int, head: Any, names: Sequence[str], out: FeatureStore,
    cfg: TeacherMapsConfig,
) -> dict[str, np.ndarray]:
    n = len(source.shard_rows(shard))
    maps = np.full((n, *out.arrays["map"].shape), np.nan, dtype=np.float32)
    scores = np.full((n, 1), np.nan, dtype=np.float32)
    device = torch.device(cfg.device)
    batches = _batches(source, shard, cfg.batch_size)
    with torch.inference_mode():
        for local, arrays in _read_ahead(source, batches, names):
            feats = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
            fmap, score = teacher_outputs(head, feats)
            maps[local] = fmap.float().cpu().numpy()
            scores[local, 0] = score.float().cpu().numpy()
    return {"map": maps, "score": scores}


def _write_shard(source: FeatureStore, out: FeatureStore, k: int, data: dict) -> None:
    rows = source.shard_rows(k)
    reasons = source.failures
    written = source.written[rows.start : rows.stop]
    failed = {}
    for i in np.flatnonzero(~written):
        image = source.image_ids[(rows.start + int(i)) // source.n_views]
        failed[int(i)] = f"no source features: {reasons.get(image, 'not written')}"
    sizes = source.valid_size(rows)
    out.writer.write_shard(k, data, sizes, source.orig_size(rows), failed)


def _open_output(
    target: str, source: FeatureStore, fields: dict, ckpt: dict, teacher: str,
    cfg: TeacherMapsConfig, shape: tuple[int, ...],
) -> FeatureStore:
    arrays = [ArraySpec("map", shape, cfg.storage_dtype), ArraySpec("score", (1,), "float32")]
    layout = StoreLayout(arrays, source.image_ids, source.views, source.shard_size)
    return create_store(
        target,
        layout,
        fingerprint_fields=fields,
        provenance=_provenance(source, ckpt, teacher),
        codec=cfg.codec,
    )


def write_teacher_maps(
    source_url: str,
    teacher: str | Path,
    *,
    out: str | None = None,
    cache_root: str | None = None,
    cfg: TeacherMapsConfig | None = None,
    resume: bool = False,
    show_progress: bool = True,
) -> TeacherMapsResult:
    """Compute the teacher's QFD maps and scores of every row of an SD 1.5 store.

    Args:
        source_url: the feature store the teacher was trained on (its fingerprint must
            equal the one the teacher checkpoint records).
        teacher: a ``qfd`` head checkpoint (``model.pt`` of ``iqa-train-head``).
        out: the new store; an existing one with the same fingerprint is resumed.
        cache_root: instead of ``out``: file the store under a shared cache root (reused
            when it holds the same fingerprint).
        cfg: batch size, device, storage dtype, codec.
        resume: fill what an existing ``out`` store (same fingerprint) lacks; without it
            an existing ``out`` is refused. A cache-root store is always reused.
        show_progress: print progress (``cache.console.progress``).

    Raises:
        CheckpointError: the teacher does not fit the source store.
        DataProblem: the source store is incomplete, or the result fails verification.
    """
    cfg = cfg or TeacherMapsConfig()
    source = open_store(source_url)
    head, ckpt = _load_teacher(teacher, source)
    names = list(head.config.names)
    _check_source(source, names)
    fields = teacher_fields(teacher, ckpt, source, cfg)
    target = _target(out, cache_root, source, fingerprint_of(fields))
    if out is not None and not resume and store_exists(out):
        raise UsageProblem(f"store {out} exists; pass --resume to fill what it lacks (same "
                           "teacher and source), or choose another --out")
    c = head.config
    store = _open_output(target, source, fields, ckpt, str(teacher), cfg,
                         (c.reduce[-1], c.size, c.size))
    head = head.to(cfg.device).eval()
    missing = store.missing_shards()
    total = sum(len(store.shard_rows(k)) for k in missing)
    with progress(total, "teacher maps", "img", enabled=show_progress) as bar:
        for k in missing:
            _write_shard(source, store, k, _shard_maps(source, k, head, names, store, cfg))
            bar.update(len(store.shard_rows(k)))
    _require_verified(store)
    return TeacherMapsResult(
        target, store.fingerprint, store.n_rows, len(missing), not missing, dict(store.failures)
    )


def _require_verified(store: FeatureStore) -> None:
    report = store.verify()
    if not report.ok:
        raise DataProblem(f"verification failed: {report.summary()}")
