"""Student training data: images decoded in DataLoader workers, teacher maps from a store.

An item is one (image, view) pair: the image file decoded with ``extract.images.load_image``,
flipped as pixels when the view is a flip, preprocessed as the teacher's features were
(``pipelines.distill.preprocess.preprocess``), together with that row's teacher map and score
from the teacher-map store (``heads.store_reader.FeatureDataset``, opened lazily in each worker,
preloaded into RAM when it fits) and the image's ground-truth quality.

Augmentation is exact: flips come from the views the SD 1.5 store was extracted with
(``iqa-extract --views identity,hflip``), so a flipped image is paired with the teacher's
map *of the flipped image*, never with a flipped map (which is not the same, see DESIGN).
The reference (``RomGai/DP-IQA``, ``datasets_in_the_wild.py``) does not augment; random
crops are not offered because the teacher's map describes the whole squashed image.

Which view an item uses is drawn in the main process by :class:`ViewSampler` from a seeded
generator per epoch, so workers hold no random state and a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from cache.console import DataProblem
from cache.store import FeatureStore
from extract.images import load_image
from extract.loader import VIEWS
from heads.split_data import label_norm_of, normalise
from heads.store_reader import FeatureDataset, available_memory
from iqadata.manifest import PARTS, Manifest, Split
from pipelines.distill.preprocess import preprocess

TEACHER_ARRAYS = ("map", "score")


@dataclass
class DistillPart:
    """One split part: its images, teacher-store rows (N, V) and targets.

    Attributes:
        name: ``train``, ``val`` or ``test``.
        ids: image ids (those whose teacher rows are all written).
        paths: image files, aligned with ``ids``.
        rows: (N, V) teacher-store row of each image and view.
        targets: (N,) ground-truth quality in [0, 1], higher is better.
        dropped: images left out because a teacher row is not written.
    """

    name: str
    ids: list[str]
    paths: list[str]
    rows: np.ndarray
    targets: Tensor
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def _part(maps: FeatureStore, manifest: Manifest, name: str, ids: tuple[str, ...]) -> DistillPart:
    try:
        rows = np.stack([maps.rows_of(ids, v) for v in maps.views], axis=1)  # (N, V)
    except KeyError as err:
        raise DataProblem(f"teacher-map store {maps.url}: {err.args[0]}") from None
    keep = maps.written[rows].all(axis=1) if len(ids) else np.ones(0, bool)
    kept = [i for i, k in zip(ids, keep, strict=True) if k]
    by_id = manifest.by_id()
    targets = normalise([by_id[i].score for i in kept], label_norm_of(manifest))
    paths = [str(manifest.resolve(i)) for i in kept]
    return DistillPart(name, kept, paths, rows[keep], targets, int((~keep).sum()))


def check_label_norm(maps: FeatureStore, manifest: Manifest) -> None:
    """Fail unless the teacher was trained on the manifest's label map."""
    teacher = maps.provenance.get("label_norm") or {}
    mine = label_norm_of(manifest)
    if teacher and {k: teacher.get(k) for k in mine} != mine:
        raise DataProblem(
            f"the teacher was trained with labels mapped by {teacher}, the manifest gives "
            f"{mine}; use the manifest the teacher was trained with"
        )


def split_parts(maps: FeatureStore, manifest: Manifest, split: Split) -> dict[str, DistillPart]:
    """The train, val and test parts of ``split`` (images with unwritten teacher rows dropped)."""
    split.check_against(manifest)
    check_label_norm(maps, manifest)
    parts = {name: _part(maps, manifest, name, split.part(name)) for name in PARTS}
    if len(parts["train"]) < 2:
        raise DataProblem(f"need at least 2 training images, got {len(parts['train'])}")
    return parts


class ViewSampler(Sampler[tuple[int, int]]):
    """(image, view) pairs of one epoch: shuffled, one random view each when augmenting."""

    def __init__(
        self, n: int, n_views: int, *, shuffle: bool, augment: bool, seed: int = 0
    ) -> None:
        self.n, self.n_views, self.shuffle, self.augment = n, n_views, shuffle, augment
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        views = torch.zeros(self.n, dtype=torch.long)
        if self.augment:
            views = torch.randint(self.n_views, (self.n,), generator=gen)
        return iter(zip(order.tolist(), views.tolist(), strict=True))


class DistillDataset(Dataset):
    """Items ``(image, view) -> {"image", "map", "teacher_score", "target", "index"}``."""

    def __init__(
        self, part: DistillPart, maps: FeatureStore, pre: Mapping[str, Any],
        preload: bool | None = None,
    ) -> None:
        self.part, self.pre, self.views = part, dict(pre), tuple(maps.views)
        nbytes = part.rows.size * sum(maps.arrays[n].row_bytes for n in TEACHER_ARRAYS)
        if preload is None:
            preload = nbytes < available_memory() // 4
        self.teacher = FeatureDataset(
            maps.url, rows=part.rows.reshape(-1).tolist(), names=TEACHER_ARRAYS, preload=preload
        )

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        i, v = key
        pixels = np.ascontiguousarray(VIEWS[self.views[v]](load_image(self.part.paths[i])))
        teacher = self.teacher[i * len(self.views) + v]["features"]
        return {
            "image": preprocess(pixels, self.pre),  # (3, S, S)
            "map": teacher["map"],  # (C, M, M)
            "teacher_score": teacher["score"][0],
            "target": self.part.targets[i],
            "index": i,
        }


def make_loader(
    data: DistillDataset, batch_size: int, sampler: ViewSampler, workers: int, device: str
) -> DataLoader:
    """A DataLoader that decodes in ``workers`` processes, a few batches ahead."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
