"""Tests for iqadata.demo: determinism, label monotonicity, layout."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from cache.outputs import OutputPathError
from iqadata.demo import (
    DISTORTIONS,
    REFERENCES,
    DemoSplits,
    activity,
    build_demo,
    pseudo_mos,
)
from iqadata.manifest import read_manifest, read_split

SMALL = (48, 64)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_build_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    build_demo(tmp_path / "a", seed=3, n_refs=3, size=SMALL, splits=DemoSplits(2))
    build_demo(tmp_path / "b", seed=3, n_refs=3, size=SMALL, splits=DemoSplits(2))
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert len(a) == 3 + 3 * len(DISTORTIONS) * 5 + 1 + 2 + 1  # + the output marker
    assert a == b
    build_demo(tmp_path / "c", seed=4, n_refs=3, size=SMALL, splits=DemoSplits(2))
    c = _tree_bytes(tmp_path / "c")
    noisy = "images/astronaut_white_noise_3.png"
    assert c[noisy] != a[noisy]  # the seed drives the noise
    assert c["images/astronaut_gaussian_blur_3.png"] == a["images/astronaut_gaussian_blur_3.png"]


def test_labels_fall_with_level_for_every_reference(tmp_path: Path) -> None:
    m = build_demo(tmp_path, n_refs=len(REFERENCES), size=SMALL, splits=DemoSplits(0))
    by_type = collections.defaultdict(list)
    for row in m.rows:
        by_type[(row.ref, row.distortion)].append((int(row.extra["level"]), row.score))
    assert len(by_type) == len(REFERENCES) * len(DISTORTIONS)
    for key, pairs in by_type.items():
        scores = [s for _, s in sorted(pairs)]
        assert len(scores) == 5
        assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), (key, scores)
        assert all(1.0 <= s <= 5.0 for s in scores)


def test_layout_manifest_and_splits(tmp_path: Path) -> None:
    m = build_demo(tmp_path, n_refs=10, levels=2, size=SMALL, distortions=["jpeg", "darken"])
    manifest = read_manifest(tmp_path / "manifest.csv")
    assert manifest.info.score_kind == "pseudo-MOS" and manifest.info.root == "."
    assert manifest.info.score_range == (1.0, 5.0) and not manifest.info.lower_better
    assert len(m.rows) == 10 * 2 * 2 and len(m.ref_ids) == 10
    assert {r.extra["level"] for r in m.rows} == {"1", "5"}
    for row in m.rows[:4]:
        with Image.open(m.resolve(row.image)) as img:
            assert img.size == (SMALL[1], SMALL[0]) and img.mode == "RGB"
        kind = DISTORTIONS[row.distortion]
        strength = kind.strength[int(row.extra["level"]) - 1]
        busy = float(row.extra["activity"])
        assert row.score == pytest.approx(pseudo_mos(strength, kind.masking, busy), abs=1e-5)
    assert m.resolve(m.ref_ids[0]).is_file()
    splits = sorted((tmp_path / "splits").glob("split_*.json"))
    assert len(splits) == 10
    group_of = {r.image: r.group for r in m.rows}
    for path in splits:
        split = read_split(path)
        split.check_against(manifest)
        train = {group_of[i] for i in split.train}
        assert not train & {group_of[i] for i in split.test + split.val}


def test_halves_of_one_photo_share_a_group(tmp_path: Path) -> None:
    m = build_demo(tmp_path, n_refs=10, levels=1, size=SMALL, distortions=["jpeg"],
                   splits=DemoSplits(0))
    groups = {r.ref: r.group for r in m.rows}
    assert groups["refs/hubble_a.png"] == groups["refs/hubble_b.png"] == "hubble_deep_field"
    assert len(set(groups.values())) == 8


def test_pseudo_mos_mapping() -> None:
    assert pseudo_mos(0.0, 0.5, 0.9) == 5.0 and pseudo_mos(0.5, 0.0, 0.3) == 3.0
    assert pseudo_mos(1.0, 0.5, 1.0) == 1.0  # clipped: visibility 1.25
    assert np.isclose(pseudo_mos(0.5, -0.5, 1.0), 1 + 4 * (1 - 0.375))  # busy hides noise
    assert np.isclose(pseudo_mos(0.5, 0.5, 1.0), 1 + 4 * (1 - 0.625))  # busy shows blur
    assert activity(np.zeros((8, 8, 3), np.uint8)) == 0.0


def test_labels_are_not_a_baseline_metric(tmp_path: Path) -> None:
    """No reported baseline (PSNR, SSIM) reproduces the synthetic observer's ranking."""
    from pipelines.report.baselines import baseline_scores

    m = build_demo(tmp_path, n_refs=4, size=SMALL, splits=DemoSplits(0))
    scores = np.array(m.scores())
    for values in baseline_scores(m, m.image_ids).values():
        finite = np.isfinite(values)
        srcc = stats.spearmanr(values[finite], scores[finite]).statistic
        assert 0.2 < srcc < 0.95, srcc  # related (both see the damage), never the same


def test_an_existing_folder_of_other_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(OutputPathError, match="nothing was written"):
        build_demo(tmp_path, n_refs=1, size=SMALL, splits=DemoSplits(0))
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 6}, "levels must be between 1 and 5"),
        ({"n_refs": 17}, "n_refs must be between 1 and 16"),
        ({"distortions": ["blurr"]}, "unknown distortion\\(s\\) \\['blurr'\\]"),
        ({"size": (8, 8)}, "size must be at least 16x16"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_demo(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("IQA_RUN_SLOW"), reason="set IQA_RUN_SLOW=1 (20 s)")
def test_labels_fall_with_level_at_default_size(tmp_path: Path) -> None:
    m = build_demo(tmp_path, splits=DemoSplits(0))
    by_type = collections.defaultdict(list)
    for row in m.rows:
        by_type[(row.ref, row.distortion)].append((int(row.extra["level"]), row.score))
    for key, pairs in by_type.items():
        scores = [s for _, s in sorted(pairs)]
        assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), (key, scores)
