"""The extraction record: how a store's features were computed, versioned and JSON-able.

A store keeps it in its attributes (``attrs["extraction"]``) and every head checkpoint
copies it, so ``iqa-score`` can compute the same features for new images and check them
against the fingerprint the head was trained on. It holds what decides the numbers and
is not already a fingerprint field by name: the registry name and the architecture
overrides as given (to rebuild the backbone), the compute and storage dtypes, lossy
bit-rounding, the views and which rows were extracted, plus engine options that change
bits (``options``). Never a local path: weights travel by hash, not by location.

``from_dict`` reads every version written so far, including stores from before the
record existed (their ``extract_config``, version 0). The backbone's name is read in one
place, ``backbone_of`` (the store's fingerprint field ``backbone``); the record still
writes its own copy, so stores stay byte-identical to earlier ones, but no reader takes it
from there unless the fingerprint fields name no backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RECORD_VERSION = 1


class RecordError(ValueError):
    """An extraction record is missing or cannot be read."""


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ExtractionRecord:
    """How the features of a store were computed (see the module docstring).

    Attributes:
        backbone: registry name (``sam_vit_h``), as ``backbone_of`` reads it.
        arch: architecture overrides as sorted (key, value) pairs.
        compute_dtype: ``fp32``, ``bf16`` or ``fp16``.
        storage_dtype: ``float16`` or ``float32``.
        keepbits: lossy mantissa bits kept (None: lossless).
        views: pixel views stored per image (``identity`` first).
        which: ``all``, ``images`` or ``refs``.
        options: engine options that change bits (e.g. the attention kernel).
    """

    backbone: str
    arch: tuple[tuple[str, Any], ...] = ()
    compute_dtype: str = "fp32"
    storage_dtype: str = "float16"
    keepbits: int | None = None
    views: tuple[str, ...] = ("identity",)
    which: str = "all"
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", tuple(sorted((str(k), _freeze(v)) for k, v in self.arch)))
        object.__setattr__(self, "views", tuple(self.views))
        opts = tuple(sorted((str(k), _freeze(v)) for k, v in self.options))
        object.__setattr__(self, "options", opts)

    @property
    def arch_overrides(self) -> dict[str, Any]:
        """The overrides as builder keyword arguments (lists for sequences)."""
        return {k: _thaw(v) for k, v in self.arch}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "backbone": self.backbone,
            "arch": {k: _thaw(v) for k, v in self.arch},
            "compute_dtype": self.compute_dtype,
            "storage_dtype": self.storage_dtype,
            "keepbits": self.keepbits,
            "views": list(self.views),
            "which": self.which,
            "options": {k: _thaw(v) for k, v in self.options},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, backbone: str) -> ExtractionRecord:
        """Read a record of any version (``extract_config`` of older stores included).

        Args:
            backbone: the store's backbone name, as ``backbone_of`` reads it.
        """
        if not data or not backbone:
            raise RecordError("no extraction record (the store or checkpoint predates it?)")
        version = int(data.get("version", 0))
        if version > RECORD_VERSION:
            raise RecordError(f"extraction record version {version} is newer than this package")
        if version == 0:
            return cls._from_legacy(data, backbone)
        arch = data.get("arch") or {}
        return cls(
            backbone=backbone,
            arch=tuple(arch.items()),
            compute_dtype=str(data.get("compute_dtype", "fp32")),
            storage_dtype=str(data.get("storage_dtype", "float16")),
            keepbits=data.get("keepbits"),
            views=tuple(data.get("views", ("identity",))),
            which=str(data.get("which", "all")),
            options=tuple((data.get("options") or {}).items()),
        )

    @classmethod
    def _from_legacy(cls, cfg: Mapping[str, Any], backbone: str) -> ExtractionRecord:
        """``dataclasses.asdict(ExtractConfig)`` as stores of format 1 kept it."""
        return cls(
            backbone=backbone,
            arch=tuple(tuple(pair) for pair in cfg.get("arch", ())),  # type: ignore[misc]
            compute_dtype=str(cfg.get("dtype", "fp32")),
            storage_dtype=str(cfg.get("storage_dtype", "float16")),
            views=tuple(cfg.get("views", ("identity",))),
            which=str(cfg.get("which", "all")),
        )


def backbone_of(fields: Mapping[str, Any], *older: Mapping[str, Any] | None) -> str:
    """The name of the backbone whose features a store holds ("" when nothing names it).

    The one reader of that name, for stores (``FeatureStore.backbone``) and for the store
    record a head checkpoint keeps. The name is the fingerprint field ``backbone``;
    ``older`` are the places stores without that field name it, looked at in order (a
    store's provenance, then its extraction record: teacher-map stores, stores written by
    other code).
    """
    name = fields.get("backbone")
    for place in older:
        if name is None and place is not None:
            name = place.get("backbone")
    return str(name or "")


def record_dict(attrs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The raw extraction record of store attributes or a checkpoint's store record."""
    return attrs.get("extraction") or attrs.get("extract_config")


def record_of(attrs: Mapping[str, Any], fields: Mapping[str, Any]) -> ExtractionRecord:
    """The record in a store's attributes (``extraction``, or a legacy ``extract_config``)
    with its fingerprint fields, which name the backbone (``backbone_of``)."""
    data = record_dict(attrs)
    return ExtractionRecord.from_dict(data, backbone_of(fields, attrs, data))
