"""Head checkpoints: the weights plus everything needed to rebuild and trust them.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(map_location="cpu", weights_only=True)`` (no pickled classes)::

    {"model": state_dict, "config": dataclasses.asdict(config), "head": name,
     "feature_specs": {name: [shape...]}, "store_fingerprint": str, "label_norm": {...},
     "epoch": int, "optimizer": optimizer state_dict or None, "extra": {...}}

Loading for a store whose fingerprint differs from the one the head was trained on is
refused, naming both fingerprints: the same numbers would mean different features.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cache.outputs import atomic_path
from heads.registry import build_from_config

CHECKPOINT_KEYS = ("model", "config", "head", "feature_specs", "store_fingerprint", "epoch")


class CheckpointError(ValueError):
    """A head checkpoint is missing, unreadable or does not fit the caller's store."""


@dataclasses.dataclass(frozen=True)
class TrainedOn:
    """What a checkpoint's head was trained on: its feature shapes, the store's
    fingerprint and how the labels were normalised."""

    feature_specs: Mapping[str, tuple[int, ...]]
    store_fingerprint: str
    label_norm: Mapping[str, Any] | None = None


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    head: str,
    trained_on: TrainedOn,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename) and return its path."""
    path = Path(path)
    config: Any = model.config
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dataclasses.asdict(config),
        "head": head,
        "feature_specs": {k: list(v) for k, v in trained_on.feature_specs.items()},
        "store_fingerprint": trained_on.store_fingerprint,
        "label_norm": dict(trained_on.label_norm or {}),
        "epoch": int(epoch),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "extra": dict(extra or {}),
    }
    return save_atomic(path, payload)


def save_atomic(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    Saved through a file object, so the archive's inner folder is torch's fixed
    ``archive`` rather than the temporary file's name (which holds the process id): the
    same payload gives the same bytes, and a rerun DVC stage the same output hash.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(dict(payload), fh)
    return Path(path)


def update_extra(path: str | os.PathLike[str], **values: Any) -> None:
    """Add entries to a saved checkpoint's ``extra`` (rewritten atomically)."""
    ckpt = read_checkpoint(path)
    ckpt["extra"] = {**ckpt.get("extra", {}), **values}
    save_atomic(path, ckpt)


def load_plain(
    path: str | os.PathLike[str], error: type[Exception] = CheckpointError, what: str = "checkpoint"
) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``; ``error`` names ``what`` failed."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        raise error(f"{path}: not a readable {what}: {err}") from err


def read_checkpoint(
    path: str | os.PathLike[str], *, store_fingerprint: str | None = None
) -> dict[str, Any]:
    """Read a checkpoint dict (CPU, ``weights_only=True``) and check its store fingerprint.

    Args:
        path: the checkpoint file.
        store_fingerprint: the fingerprint of the store the caller will feed the head;
            None skips the check.

    Raises:
        CheckpointError: missing or unreadable file, missing keys, or another fingerprint.
    """
    ckpt = load_plain(path, CheckpointError, "head checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a head checkpoint, missing keys {missing}")
    trained_on = ckpt["store_fingerprint"]
    if store_fingerprint is not None and store_fingerprint != trained_on:
        raise CheckpointError(
            f"{path}: head trained on store fingerprint {trained_on!r}, "
            f"but the features come from a store with fingerprint {store_fingerprint!r}"
        )
    return ckpt


def load_head(
    path: str | os.PathLike[str], *, store_fingerprint: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a head from its checkpoint (strict) and return it with the checkpoint dict."""
    ckpt = read_checkpoint(path, store_fingerprint=store_fingerprint)
    model = build_from_config(ckpt["head"], ckpt["config"])
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit head {ckpt['head']!r}: {err}") from err
    return model, ckpt
