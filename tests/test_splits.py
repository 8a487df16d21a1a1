"""Tests for iqadata.splits: content-disjoint, sized, deterministic splits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestError,
    ManifestRow,
    file_sha256,
    read_split,
    write_manifest,
)
from iqadata.splits import make_splits, normalize_ratios, write_splits

RATIOS = [(0.6, 0.2, 0.2), (0.8, 0.2), (0.7, 0.1, 0.2), (0.5, 0.5)]


def _manifest(group_sizes: list[int]) -> Manifest:
    rows = [
        ManifestRow(image=f"g{g:03d}/img{i}.png", score=float(i), group=f"g{g:03d}")
        for g, size in enumerate(group_sizes)
        for i in range(size)
    ]
    return Manifest(info=DatasetInfo(name="fake"), rows=tuple(rows))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=5, max_size=40),
    ratios=st.sampled_from(RATIOS),
    seed=st.integers(0, 2**31 - 1),
)
def test_split_properties(sizes: list[int], ratios: tuple[float, ...], seed: int) -> None:
    manifest = _manifest(sizes)
    splits = make_splits(manifest, ratios=ratios, repeats=2, seed=seed)
    group_of = {r.image: r.group for r in manifest.rows}
    targets = normalize_ratios(ratios)
    for split in splits:
        parts = [split.train, split.val, split.test]
        all_ids = [i for part in parts for i in part]
        assert sorted(all_ids) == sorted(manifest.image_ids)  # each image exactly once
        group_sets = [{group_of[i] for i in part} for part in parts]
        assert not (group_sets[0] & group_sets[1] or group_sets[0] & group_sets[2])
        assert not group_sets[1] & group_sets[2]
        for part, target in zip(parts, targets, strict=True):
            assert abs(len(part) - target * len(all_ids)) <= max(sizes)
            assert (len(part) > 0) == (target > 0)
    again = make_splits(manifest, ratios=ratios, repeats=2, seed=seed)
    assert again == splits


def test_two_ratios_give_empty_val_and_seeds_differ() -> None:
    manifest = _manifest([3] * 20)
    a = make_splits(manifest, ratios=(0.8, 0.2), repeats=3, seed=1)
    assert all(s.val == () for s in a)
    assert all(len(s.train) == 48 and len(s.test) == 12 for s in a)
    assert len({s.test for s in a}) == 3  # repeats differ
    b = make_splits(manifest, ratios=(0.8, 0.2), repeats=3, seed=2)
    assert a[0].test != b[0].test
    # any repeat can be rebuilt alone: repeat 0 does not depend on how many repeats
    assert make_splits(manifest, ratios=(0.8, 0.2), repeats=1, seed=1)[0] == a[0]


def test_written_files_record_manifest_sha(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_manifest(_manifest([2] * 10), path)
    from iqadata.manifest import read_manifest

    manifest = read_manifest(path)
    paths = write_splits(make_splits(manifest, repeats=3, seed=7), tmp_path / "splits")
    assert [p.name for p in paths] == ["split_00.json", "split_01.json", "split_02.json"]
    split = read_split(paths[1])
    assert split.manifest_sha256 == file_sha256(path)
    assert split.seed == 7 and split.ratios == (0.6, 0.2, 0.2)
    split.check_against(manifest)
    assert json.loads(paths[0].read_text())["val"]


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.5, 0.2, 0.2), "sum to 1"),
        ((1.0,), "2 \\(train, test\\) or 3 values"),
        ((1.2, -0.2), "non-negative"),
    ],
)
def test_bad_ratios(ratios: tuple[float, ...], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        make_splits(_manifest([1] * 5), ratios=ratios)


def test_too_few_groups_and_bad_repeats() -> None:
    with pytest.raises(ManifestError, match="2 group\\(s\\) cannot fill 3 non-empty parts"):
        make_splits(_manifest([5, 5]), ratios=(0.6, 0.2, 0.2))
    with pytest.raises(ManifestError, match="repeats must be >= 1"):
        make_splits(_manifest([1] * 5), repeats=0)


def test_split_for_another_manifest_is_refused(tmp_path: Path) -> None:
    from iqadata.manifest import read_manifest

    first, other = tmp_path / "a.csv", tmp_path / "b.csv"
    write_manifest(_manifest([2] * 10), first)
    write_manifest(_manifest([2] * 10 + [1]), other)
    path = write_splits(make_splits(read_manifest(first), repeats=1), tmp_path / "s")[0]
    split = read_split(path)
    split.check_against(read_manifest(first))
    with pytest.raises(
        ManifestError, match=f"{path} was made for another manifest .* than {other}"
    ):
        split.check_against(read_manifest(other))
    # same ids, different labels: still another manifest
    moved = _manifest([2] * 10)
    write_manifest(replace(moved, info=replace(moved.info, root="/elsewhere")), other)
    with pytest.raises(ManifestError, match="was made for another manifest"):
        split.check_against(read_manifest(other))


def test_split_without_a_manifest_hash_is_accepted_with_a_warning(tmp_path: Path) -> None:
    from iqadata.manifest import Split, UncheckedSplitWarning, read_manifest, write_split

    write_manifest(_manifest([2] * 5), tmp_path / "m.csv")
    manifest = read_manifest(tmp_path / "m.csv")
    ids = manifest.image_ids
    write_split(Split(tuple(ids[:6]), (), tuple(ids[6:])), tmp_path / "old.json")
    with pytest.warns(UncheckedSplitWarning, match="old.json records no manifest_sha256"):
        read_split(tmp_path / "old.json").check_against(manifest)
