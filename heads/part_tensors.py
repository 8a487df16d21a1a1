"""In-memory training data for one split part, independent of the store.

``TrainData`` holds, for one part (train, val or test) of one dataset: the features of every
row as ``dict[str, Tensor (N, V, *shape)]`` (V cached views per image; V = 1 without flip
views), optional row-aligned reference features (FR), per-row valid sizes (h, w) in map
cells, targets normalised to [0, 1] with higher = better, and the image ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


class TrainDataError(ValueError):
    """Arrays of a ``TrainData`` disagree in length or layout."""


@dataclass
class TrainData:
    """Features, references, valid sizes, targets and ids of one split part.

    Attributes:
        features: name -> (N, V, *shape) float32.
        targets: (N,) in [0, 1], higher is better.
        ids: N image ids.
        valid: (N, 2) valid (h, w) of each row, or None when every map is fully valid.
        ref_features: name -> (N, V, *shape), row i the reference of row i; None for NR.
        name: part name for messages ("train", "val", "test").
    """

    features: dict[str, Tensor]
    targets: Tensor
    ids: list[str]
    valid: Tensor | None = None
    ref_features: dict[str, Tensor] | None = None
    name: str = "data"
    _views: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.targets.shape != (n,):
            raise TrainDataError(f"{self.name}: targets {tuple(self.targets.shape)} for {n} ids")
        if not self.features:
            raise TrainDataError(f"{self.name}: no feature arrays")
        views = {self._check(k, v, n) for k, v in self.features.items()}
        for k, v in (self.ref_features or {}).items():
            views.add(self._check(f"ref {k}", v, n))
        if len(views) != 1:
            raise TrainDataError(f"{self.name}: feature arrays disagree on the view count {views}")
        if self.valid is not None and self.valid.shape != (n, 2):
            raise TrainDataError(f"{self.name}: valid {tuple(self.valid.shape)}, expected ({n}, 2)")
        self._views = views.pop()

    def _check(self, key: str, value: Tensor, n: int) -> int:
        if value.dim() < 2 or value.shape[0] != n:
            raise TrainDataError(
                f"{self.name}: feature {key!r} has shape {tuple(value.shape)}, "
                f"expected ({n}, V, ...)"
            )
        return value.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_views(self) -> int:
        return self._views

    @property
    def feature_specs(self) -> dict[str, tuple[int, ...]]:
        """Per-row shape of every feature (the view axis removed)."""
        return {k: tuple(v.shape[2:]) for k, v in self.features.items()}

    def batch(
        self, rows: Tensor, views: Tensor | None = None, device: str | torch.device = "cpu"
    ) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        """Features, valid sizes and references of ``rows``, one view each (view 0 default).

        The reference of a row uses the same view as the row.
        """
        views = torch.zeros_like(rows) if views is None else views

        def take(arrays: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: v[rows, views].to(device, torch.float32) for k, v in arrays.items()}

        valid = None if self.valid is None else self.valid[rows].to(device)
        ref = None if self.ref_features is None else take(self.ref_features)
        return take(self.features), valid, ref
