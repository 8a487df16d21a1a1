"""Store glue: ``TrainData`` for each part of a split, read through ``heads.store_reader``.

Rows: every view of each image of the part (``(N, V, *shape)``, image-major as in the
store), float32, selected with ``heads.store_reader.select_rows`` (the one read path). FR:
references are matched by the manifest's ``ref`` column and read from the reference
store (which may be the same store) with the same view. A part is preloaded in RAM when it
fits, otherwise ``heads.store_reader.StoreArray`` reads rows lazily (and fork-safely) at each
batch. Reads are verified: each shard's checksum is checked the first time it is read.
A part with unwritten rows is refused unless ``written_only`` (then images with an
unwritten view or reference are dropped, and named in ``SplitData.dropped``).

Targets: raw scores mapped to [0, 1] with the manifest's nominal ``score_range``
(``(s - low) / (high - low)``) or the train part's own min and max (``train_minmax``); the
same map for every part (no statistic of the val or test part is used, so the test labels
never shape the training). Scores outside the range map outside [0, 1]; they are not
clipped. Orientation (``orientation``): ``higher_better`` reverses a lower-is-better
(DMOS) set so that higher is always better (every head but PromptIQA's); ``native`` keeps
each dataset's own orientation, min-max scaled but not flipped, as PromptIQA trains
(paper sec. 4.1 C: the 12 datasets are combined "without making any modifications to
accommodate ... MOS and DMOS"; the reference's loaders keep LIVE's and CSIQ's DMOS): the
prompt tells the head which way its scores run. The map, with ``flip`` (whether the
targets were reversed), is recorded as ``label_norm`` in checkpoints and ``metrics.json``;
metrics compare predictions with targets of the same map, so a DMOS set trained natively
gets a positive SRCC when the head ranks it well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cache.store import FeatureStore
from heads.part_tensors import TrainData
from heads.store_reader import load_arrays, select_rows
from iqadata.manifest import PARTS, Manifest, Split


class StoreDataError(ValueError):
    """The store does not hold what the split and manifest ask for."""


@dataclass
class SplitData:
    """The three parts of one split, with what a checkpoint records about them.

    Attributes:
        dropped: part -> images left out because a row of theirs is not written.
    """

    train: TrainData
    val: TrainData
    test: TrainData
    fingerprint: str
    label_norm: dict[str, Any]
    dropped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())


LABEL_NORMS = ("score_range", "train_minmax")
ORIENTATIONS = ("higher_better", "native")


def label_norm_of(
    manifest: Manifest,
    method: str = "score_range",
    train_ids: Sequence[str] = (),
    orientation: str = "higher_better",
) -> dict[str, Any]:
    """The score -> target map of a dataset (see the module docstring).

    Args:
        method: ``score_range`` (the manifest's nominal range) or ``train_minmax`` (the
            train part's own min and max, PromptIQA's per-split min-max; the same map is
            applied to every part, so no test statistic is used).
        train_ids: the train part's images (``train_minmax``).
        orientation: ``higher_better`` (DMOS reversed) or ``native`` (kept as it is).
    """
    if method not in LABEL_NORMS:
        raise StoreDataError(f"label normalisation must be one of {LABEL_NORMS}, got {method!r}")
    if orientation not in ORIENTATIONS:
        raise StoreDataError(
            f"label orientation must be one of {ORIENTATIONS}, got {orientation!r}"
        )
    low, high = manifest.info.score_range
    if method == "train_minmax":
        scores = manifest.scores(list(train_ids))
        low, high = min(scores), max(scores)
        if not high > low:
            raise StoreDataError("train_minmax needs train scores that differ")
    lower = manifest.info.lower_better
    flip = lower and orientation == "higher_better"
    return {"method": method, "low": low, "high": high, "lower_better": lower, "flip": flip}


def flipped(norm: dict[str, Any]) -> bool:
    """Whether a map reverses the scores (maps recorded before ``flip`` existed reversed
    every lower-is-better set)."""
    return bool(norm.get("flip", norm.get("lower_better", False)))


def normalise(scores: Sequence[float], norm: dict[str, Any]) -> Tensor:
    """Targets in [0, 1] from raw scores (reversed when the map says ``flip``)."""
    t = (torch.tensor(scores, dtype=torch.float64) - norm["low"]) / (norm["high"] - norm["low"])
    return (1 - t if flipped(norm) else t).float()


def denormalise(quality: Any, norm: dict[str, Any]) -> Any:
    """Inverse of :func:`normalise`: a prediction (a float or an array) back on the
    dataset's scale and orientation. An empty ``norm`` (no map recorded) returns it
    unchanged."""
    if not norm:
        return quality
    t = 1 - np.asarray(quality) if flipped(norm) else np.asarray(quality)
    raw = norm["low"] + t * (norm["high"] - norm["low"])
    return float(raw) if np.ndim(raw) == 0 else raw


def load_part(
    store: FeatureStore,
    manifest: Manifest,
    ids: Sequence[str],
    *,
    part: str = "data",
    ref_store: FeatureStore | None = None,
    written_only: bool = False,
    preload: bool | None = None,
    norm: dict[str, Any] | None = None,
) -> tuple[TrainData, list[str]]:
    """``TrainData`` of the images ``ids``, and the images dropped as unwritten.

    Raises:
        StoreDataError: an image or reference missing from its store or the manifest.
        IncompleteStoreError: unwritten rows without ``written_only``.
    """
    by_id = manifest.by_id()
    try:
        sel = select_rows(
            store, ids, ref_store=ref_store, ref_of=lambda i: by_id[i].ref,
            written_only=written_only, what=part,
        )
    except KeyError as err:
        raise StoreDataError(f"{part}: {err.args[0]}") from None
    norm = norm or label_norm_of(manifest)
    valid = torch.from_numpy(store.valid_size(sel.rows[:, 0]).astype(np.int64)) if len(sel) else (
        torch.zeros(0, 2, dtype=torch.long))
    data = TrainData(
        features=load_arrays(store, sel.rows, preload),
        targets=normalise([by_id[i].score for i in sel.image_ids], norm),
        ids=sel.image_ids,
        valid=valid,
        ref_features=None if ref_store is None or sel.ref_rows is None
        else load_arrays(ref_store, sel.ref_rows, preload),
        name=part,
    )
    return data, sel.dropped


def load_split(
    store: FeatureStore,
    manifest: Manifest,
    split: Split,
    *,
    ref_store: FeatureStore | None = None,
    written_only: bool = False,
    preload: bool | None = None,
    label_norm: str = "score_range",
    orientation: str = "higher_better",
) -> SplitData:
    """The train, val and test ``TrainData`` of one split of ``manifest`` from ``store``
    (targets mapped with ``label_norm`` and ``orientation``: see :func:`label_norm_of`)."""
    split.check_against(manifest)
    if ref_store is not None and ref_store.fingerprint != store.fingerprint:
        raise StoreDataError(
            f"reference store {ref_store.url} has fingerprint {ref_store.fingerprint!r} but the "
            f"feature store {store.url} has {store.fingerprint!r}: features must come from the "
            "same backbone and preprocessing"
        )
    parts: dict[str, TrainData] = {}
    dropped: dict[str, list[str]] = {}
    norm = label_norm_of(manifest, label_norm, split.train, orientation)
    for part in PARTS:
        parts[part], dropped[part] = load_part(
            store, manifest, split.part(part), part=part, ref_store=ref_store,
            written_only=written_only, preload=preload, norm=norm,
        )
    return SplitData(
        parts["train"], parts["val"], parts["test"], store.fingerprint, norm, dropped
    )
