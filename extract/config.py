"""What decides an extraction's numbers, and the frozen backbone built from it.

``ExtractConfig`` holds every setting of ``iqa-extract`` that decides how features are
computed and stored; ``build_backbone`` builds the frozen backbone it names (in this
process, on a dask worker, or for scoring new images), and ``fingerprint_fields`` turns
the two into the fields that decide the stored numbers, which ``extract.run`` builds once
per run. Every part of the fill path (``extract.fill``, ``extract.shards``,
``extract.distributed``) reads its settings from here; nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cache.record import ExtractionRecord
from extract.base import Backbone
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
            backbone=self.backbone,
            arch=self.arch,
            compute_dtype=self.dtype,
            storage_dtype=self.storage_dtype,
            keepbits=self.keepbits,
            views=self.views,
            which=self.which,
            options=tuple(self.engine_options().items()),
        )

    def engine_options(self) -> dict[str, Any]:
        """The engine settings that change bits (kept in the record's ``options``)."""
        return {
            "attention": self.attention,
            "cast_weights": self.cast_weights,
            "compile": self.compile,
        }

    @classmethod
    def from_record(
        cls, record: ExtractionRecord, checkpoint: str | None, device: str = "cpu"
    ) -> ExtractConfig:
        """The settings that compute a record's features for new images (identity view).

        Records from before the engine options existed ran segment_anything's own attention.
        """
        options = dict(record.options)
        return cls(
            backbone=record.backbone,
            checkpoint=checkpoint,
            arch=record.arch,
            device=device,
            dtype=record.compute_dtype,
            storage_dtype=record.storage_dtype,
            which=record.which,
            keepbits=record.keepbits,
            attention=str(options.get("attention", "reference")),
            cast_weights=bool(options.get("cast_weights", False)),
            compile=bool(options.get("compile", False)),
        )


def build_backbone(cfg: ExtractConfig) -> Backbone:
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
    return configure(
        model, dtype=cfg.dtype, cast_weights=cfg.cast_weights, compile_batch=compile_batch
    )


def fingerprint_fields(backbone: Backbone, cfg: ExtractConfig) -> dict[str, Any]:
    """The fields that decide the stored numbers (the device does not, within tolerance).

    ``backbone`` here is the one place the backbone's name enters a store: every reader
    takes it from these fields (``cache.store.FeatureStore.backbone``).
    """
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
    kernels = kernel_fields(
        backbone, dtype=cfg.dtype, cast_weights=cfg.cast_weights, compiled=cfg.compile
    )
    if kernels:  # absent for the reference kernels: older stores keep their fingerprints
        fields["kernels"] = kernels
    return fields


def arch_overrides(pairs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Architecture overrides as the hashable, sorted tuple ``ExtractConfig`` keeps."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in pairs.items()))
