"""Content-disjoint random splits of a manifest, repeated over seeds.

The protocol is the one most IQA papers follow (hyperIQA ``train_test_IQA.py``; SAM-IQA
60/20/20 with validation; pyiqa's 10 x 80/20 by reference image): images that share a
``group`` (the reference image of a synthetic set, the image itself for an authentic
one) always land in the same part, so no content is seen in training and testing.

Algorithm: the groups are shuffled with a ``numpy.random.Generator`` seeded with
``[seed, repeat]`` (so any repeat can be rebuilt on its own) and dealt out in that
order, each to the part furthest below its image-count target. Each part's image count
is then within one (largest) group of its target. A positive-ratio part left empty (only
possible when its target is smaller than the groups) takes the smallest group of the
fullest part. (Cutting the shuffled sequence at cumulative boundaries, the usual
approach, cannot meet the one-group bound for some orders, e.g. sizes 1,1,1,7,7.)

Every split made is then checked from the manifest's own columns (:mod:`iqadata.content`):
a reference or prompt group in two parts (a manifest whose groups split it) is refused
with the first one and the parts it is in, whatever the groups were.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iqadata.content import shared_content, split_parts
from iqadata.manifest import Manifest, ManifestError, Split, manifest_digest, write_split


def normalize_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Check ``ratios`` and return (train, val, test); two values mean an empty val.

    Raises:
        ManifestError: unless there are 2 or 3 non-negative ratios summing to 1.
    """
    values = tuple(float(r) for r in ratios)
    if len(values) not in (2, 3):
        raise ManifestError(f"ratios must have 2 (train, test) or 3 values, got {values}")
    if any(r < 0 or not math.isfinite(r) for r in values) or not math.isclose(sum(values), 1.0):
        raise ManifestError(f"ratios must be non-negative and sum to 1, got {values}")
    if len(values) == 2:
        return values[0], 0.0, values[1]
    return values[0], values[1], values[2]


def _group_sizes(manifest: Manifest) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for row in manifest.rows:
        sizes[row.group] = sizes.get(row.group, 0) + 1
    return sizes


def _assign(sizes: Sequence[int], goal: np.ndarray) -> list[int]:
    """Part index of each group: each goes to the part furthest below its target.

    Every part then ends within one group of its target: a part only receives a group
    while it is below target (so it overshoots by less than that group), and if one
    part ended more than a group short, every part would end short, which cannot be
    since the counts sum to the total.
    """
    counts = np.zeros(3)
    owner = []
    for size in sizes:
        part = int(np.argmax(goal - counts))
        counts[part] += size
        owner.append(part)
    _fill_empty_parts(sizes, goal, owner)
    return owner


def _fill_empty_parts(sizes: Sequence[int], goal: np.ndarray, owner: list[int]) -> None:
    """Give each empty positive-target part the smallest group of the most-over part."""
    for part in np.flatnonzero(goal > 0):
        if part in owner:
            continue
        counts = np.bincount(owner, weights=sizes, minlength=3)
        donors = [p for p in range(3) if owner.count(p) > 1]
        if donors:
            donor = max(donors, key=lambda p: counts[p] - goal[p])
            mine = [i for i, o in enumerate(owner) if o == donor]
            owner[min(mine, key=lambda i: sizes[i])] = int(part)


def _one_split(
    manifest: Manifest,
    groups: list[str],
    sizes: dict[str, int],
    parts: tuple[float, float, float],
    rng: np.random.Generator,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    order = [groups[i] for i in rng.permutation(len(groups))]
    goal = np.array(parts) * len(manifest.rows)
    part_of = dict(zip(order, _assign([sizes[g] for g in order], goal), strict=True))
    out: tuple[list[str], list[str], list[str]] = ([], [], [])
    for row in manifest.rows:  # manifest order inside each part
        out[part_of[row.group]].append(row.image)
    return tuple(out[0]), tuple(out[1]), tuple(out[2])


def make_splits(
    manifest: Manifest,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    repeats: int = 10,
    seed: int = 0,
) -> list[Split]:
    """Random content-disjoint splits, one per repeat.

    Args:
        manifest: the dataset; rows sharing a ``group`` stay together.
        ratios: (train, val, test) or (train, test) fractions of the images.
        repeats: number of independent splits.
        seed: base seed; repeat ``r`` draws from ``default_rng([seed, r])``.

    Returns:
        ``repeats`` splits recording ``seed``, the ratios and the manifest's sha256.

    Raises:
        ManifestError: on bad ratios, ``repeats < 1``, too few groups for the parts, or a
            split that would put a reference or prompt group in two parts.
    """
    parts = normalize_ratios(ratios)
    if repeats < 1:
        raise ManifestError(f"repeats must be >= 1, got {repeats}")
    sizes = _group_sizes(manifest)
    groups = sorted(sizes)
    needed = sum(1 for r in parts if r > 0)
    if len(groups) < needed:
        raise ManifestError(
            f"{manifest.info.name}: {len(groups)} group(s) cannot fill {needed} non-empty parts"
        )
    digest = manifest_digest(manifest)
    stored = tuple(float(r) for r in ratios)
    splits = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        train, val, test = _one_split(manifest, groups, sizes, parts, rng)
        split = Split(train, val, test, seed=seed, ratios=stored, manifest_sha256=digest)
        _check_content(manifest, split, r)
        splits.append(split)
    return splits


def _check_content(manifest: Manifest, split: Split, repeat: int) -> None:
    leak = shared_content(manifest.rows, split_parts(split))
    if leak:
        where = manifest.path or manifest.info.name
        raise ManifestError(
            f"{where}: split {repeat}: {leak}: the manifest's groups do not keep each"
            " reference and prompt in one group; import it again (a reference's or a"
            " prompt's images must share a group)"
        )


def write_splits(splits: Sequence[Split], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``split_00.json``, ``split_01.json``, ... into ``out_dir``."""
    out = Path(out_dir)
    paths = []
    for i, split in enumerate(splits):
        path = out / f"split_{i:02d}.json"
        write_split(split, path)
        paths.append(path)
    return paths
