"""Store glue: ``TrainData`` for each part of a split, read from a feature store.

Rows: every view of each image of the part (``(N, V, *shape)``, image-major as in the
store), float32. FR: references are matched by the manifest's ``ref`` column and read from
the reference store (which may be the same store) with the same view. The whole part is
preloaded in RAM when it fits (``cache.reader.check_fits``), otherwise rows are read lazily
from the store at each batch. A part with unwritten rows is refused unless
``written_only`` (then images with an unwritten view or reference are dropped).

Targets: raw scores mapped to [0, 1] with the manifest's nominal ``score_range``
(``(s - low) / (high - low)``), reversed for lower-is-better (DMOS) sets so that higher is
always better; the same map for every part (no statistics of any part are used, so the
test labels never shape the training). Scores outside the nominal range map outside
[0, 1]; they are not clipped. The map is recorded as ``label_norm`` in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cache.manifest import PARTS, Manifest, Split
from cache.reader import check_fits
from cache.store import FeatureStore, IncompleteStoreError
from heads.traindata import TrainData


class StoreDataError(ValueError):
    """The store does not hold what the split and manifest ask for."""


@dataclass
class SplitData:
    """The three parts of one split, with what a checkpoint records about them."""

    train: TrainData
    val: TrainData
    test: TrainData
    fingerprint: str
    label_norm: dict[str, Any]
    dropped: int = 0


class LazyRows:
    """A ``(N, V, *shape)`` view of one store array, read on indexing ``[rows, views]``."""

    def __init__(self, store: FeatureStore, name: str, rowmat: np.ndarray) -> None:
        self.store, self.name, self.rowmat = store, name, rowmat
        self.shape = torch.Size((*rowmat.shape, *store.arrays[name].shape))

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: tuple[Tensor, Tensor]) -> Tensor:
        rows = self.rowmat[np.asarray(key[0]), np.asarray(key[1])]
        return torch.from_numpy(self.store.read(rows.tolist(), [self.name])[self.name])


def label_norm_of(manifest: Manifest) -> dict[str, Any]:
    """The score -> target map of a dataset (see the module docstring)."""
    low, high = manifest.info.score_range
    lower = manifest.info.lower_better
    return {"method": "score_range", "low": low, "high": high, "lower_better": lower}


def normalise(scores: Sequence[float], norm: dict[str, Any]) -> Tensor:
    """Targets in [0, 1], higher is better, from raw scores."""
    t = (torch.tensor(scores, dtype=torch.float64) - norm["low"]) / (norm["high"] - norm["low"])
    return (1 - t if norm["lower_better"] else t).float()


def denormalise(quality: float, norm: dict[str, Any]) -> float:
    """Inverse of :func:`normalise`: a quality back on the dataset's scale and orientation.

    An empty ``norm`` (no map recorded) returns ``quality`` unchanged.
    """
    if not norm:
        return quality
    t = 1 - quality if norm.get("lower_better") else quality
    return norm["low"] + t * (norm["high"] - norm["low"])


def _rowmat(store: FeatureStore, ids: Sequence[str], views: Sequence[str]) -> np.ndarray:
    try:
        return np.stack([store.rows_of(ids, v) for v in views], axis=1)  # (N, V)
    except KeyError as err:
        raise StoreDataError(f"{store.url}: {err.args[0]}") from None


def _written_images(store: FeatureStore, rowmat: np.ndarray) -> np.ndarray:
    return store.written[rowmat].all(axis=1) if len(rowmat) else np.ones(0, bool)


def _fits(store: FeatureStore, n_rows: int) -> bool:
    nbytes = n_rows * sum(4 * int(np.prod(s.shape)) for s in store.arrays.values())
    try:
        check_fits(nbytes, f"{n_rows} rows of {store.url}")
    except MemoryError:
        return False
    return True


def _arrays(store: FeatureStore, rowmat: np.ndarray, preload: bool | None) -> dict[str, Any]:
    """Every array of ``store`` at the rows ``rowmat`` (N, V): tensors or lazy views."""
    if rowmat.size == 0:
        return {n: torch.zeros(*rowmat.shape, *s.shape) for n, s in store.arrays.items()}
    if not (_fits(store, rowmat.size) if preload is None else preload):
        return {n: LazyRows(store, n, rowmat) for n in store.arrays}
    flat = store.read(rowmat.reshape(-1).tolist())
    return {n: torch.from_numpy(a).view(*rowmat.shape, *a.shape[1:]) for n, a in flat.items()}


def _valid(store: FeatureStore, rowmat: np.ndarray) -> Tensor:
    if not len(rowmat):
        return torch.zeros(0, 2, dtype=torch.long)
    return torch.from_numpy(store.valid_size(rowmat[:, 0].tolist()).astype(np.int64))


def load_part(
    store: FeatureStore,
    manifest: Manifest,
    ids: Sequence[str],
    *,
    part: str = "data",
    ref_store: FeatureStore | None = None,
    written_only: bool = False,
    preload: bool | None = None,
) -> tuple[TrainData, int]:
    """``TrainData`` of the images ``ids``; also the number of images dropped as unwritten.

    Raises:
        StoreDataError: an image or reference missing from its store.
        IncompleteStoreError: unwritten rows without ``written_only``.
    """
    rows = manifest.by_id()
    views = store.views
    rowmat = _rowmat(store, ids, views)
    keep = _written_images(store, rowmat)
    refmat = np.zeros((len(ids), len(views)), np.int64)
    if ref_store is not None:
        refs = [rows[i].ref for i in ids]
        missing = [i for i, r in zip(ids, refs, strict=True) if not r]
        if missing:
            raise StoreDataError(f"{part}: image {missing[0]!r} has no reference in the manifest")
        refmat = _rowmat(ref_store, refs, views)
        keep &= _written_images(ref_store, refmat)
    if not keep.all() and not written_only:
        first = ids[int(np.flatnonzero(~keep)[0])]
        raise IncompleteStoreError(
            f"{store.url}: {int((~keep).sum())} {part} images have unwritten rows "
            f"(first {first!r}); resume the extraction or pass --written-only"
        )
    kept = [i for i, k in zip(ids, keep, strict=True) if k]
    norm = label_norm_of(manifest)
    data = TrainData(
        features=_arrays(store, rowmat[keep], preload),
        targets=normalise([rows[i].score for i in kept], norm),
        ids=kept,
        valid=_valid(store, rowmat[keep]),
        ref_features=None if ref_store is None else _arrays(ref_store, refmat[keep], preload),
        name=part,
    )
    return data, int((~keep).sum())


def load_split(
    store: FeatureStore,
    manifest: Manifest,
    split: Split,
    *,
    ref_store: FeatureStore | None = None,
    written_only: bool = False,
    preload: bool | None = None,
) -> SplitData:
    """The train, val and test ``TrainData`` of one split of ``manifest`` from ``store``."""
    split.check_against(manifest)
    if ref_store is not None and ref_store.fingerprint != store.fingerprint:
        raise StoreDataError(
            f"reference store {ref_store.url} has fingerprint {ref_store.fingerprint!r} but the "
            f"feature store {store.url} has {store.fingerprint!r}: features must come from the "
            "same backbone and preprocessing"
        )
    parts, dropped = {}, 0
    for part in PARTS:
        ids = split.part(part)
        parts[part], n = load_part(
            store,
            manifest,
            ids,
            part=part,
            ref_store=ref_store,
            written_only=written_only,
            preload=preload,
        )
        dropped += n
    norm = label_norm_of(manifest)
    return SplitData(parts["train"], parts["val"], parts["test"], store.fingerprint, norm, dropped)
