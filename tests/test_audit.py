"""The content audit: planted exact and near duplicates across two tiny datasets are found,
training can leave them out, and the cross-dataset test warns about them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage import data as photos

from extract.config import ExtractConfig, arch_overrides
from extract.run import run_extract
from heads.cli import main as train_main
from heads.cli import test_main as cross_main
from iqadata.cli import main as data_main
from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestRow,
    Split,
    read_manifest,
    with_file_hashes,
    write_manifest,
    write_split,
)
from iqadata.overlap import read_audit

pytestmark = pytest.mark.usefixtures("one_thread")
SOURCES = ("astronaut", "coffee", "chelsea", "rocket")


def _tiles() -> list[np.ndarray]:
    """24 pictures of distinct content: six non-overlapping crops of four photographs."""
    out = []
    for name in SOURCES:
        img = getattr(photos, name)()
        h, w = img.shape[0] // 2, img.shape[1] // 3
        out += [img[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in (0, 1) for c in (0, 1, 2)]
    return out


def _jpeg_resized(path: Path, scale: float = 0.6, quality: int = 70) -> bytes:
    img = Image.open(path)
    small = img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC)
    buf = io.BytesIO()
    small.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _dataset(root: Path, name: str, tiles: list[np.ndarray], plant: dict[int, bytes]) -> Path:
    """One image per tile (MOS falls with a tile's noise level); ``plant`` replaces files."""
    root.mkdir()
    rows = []
    for i, tile in enumerate(tiles):
        level = i % 4
        noisy = tile + np.random.default_rng(i).normal(0, 6 * level, tile.shape)
        suffix = ".jpg" if i in plant and plant[i][:2] == b"\xff\xd8" else ".png"
        path = root / f"{name}{i}{suffix}"
        if i in plant:
            path.write_bytes(plant[i])
        else:
            Image.fromarray(noisy.clip(0, 255).astype("uint8")).save(path)
        rows.append(ManifestRow(path.name, float(3 - level), group=f"g{i}"))
    manifest = Manifest(DatasetInfo(name, "MOS", False, (0.0, 3.0), str(root)), tuple(rows))
    write_manifest(with_file_hashes(manifest), root / "manifest.csv")
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides({"size": 32, "grid": 4}))
    run_extract(cfg, root / "manifest.csv", out=str(root / "f.zarr"), progress=False)
    return root


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A (12 tiles) and B (12 others): B's image 0 is A's image 3, byte for byte, and B's
    image 1 is A's image 5 resized to 60 % and re-encoded as JPEG."""
    tmp = tmp_path_factory.mktemp("audit")
    tiles = _tiles()
    a = _dataset(tmp / "a", "seta", tiles[:12], {})
    plant = {0: (a / "seta3.png").read_bytes(), 1: _jpeg_resized(a / "seta5.png")}
    b = _dataset(tmp / "b", "setb", tiles[12:], plant)
    audit = tmp / "audit.json"
    res = CliRunner().invoke(
        data_main, ["audit", str(a / "manifest.csv"), str(b / "manifest.csv"), "--out", str(audit)]
    )
    assert res.exit_code == 0, res.output
    assert "1 exact and 1 near-duplicate pair(s), 0 within a dataset and 2 across" in res.output
    return a, b, audit


def test_the_audit_finds_the_planted_pairs_and_nothing_else(two_sets: tuple) -> None:
    a, b, audit = two_sets
    result = json.loads(audit.read_text())
    found = {(p["kind"], p["a"]["id"], p["b"]["id"]) for p in result["pairs"]}
    assert found == {("exact", "seta3.png", "setb0.png"), ("near", "seta5.png", "setb1.jpg")}
    near = next(p for p in result["pairs"] if p["kind"] == "near")
    assert near["distance"] <= result["method"]["max_distance"] == 8
    read = read_audit(audit)
    sha_a = read_manifest(a / "manifest.csv").sha256()
    assert read.excluded(sha_a, "a") == {"seta3.png", "seta5.png"}


def test_exact_only_reads_the_manifests_hashes(two_sets: tuple, tmp_path: Path) -> None:
    a, b, _ = two_sets
    out = tmp_path / "exact.json"
    args = ["audit", str(a / "manifest.csv"), str(b / "manifest.csv"), "--exact-only"]
    res = CliRunner().invoke(data_main, [*args, "--out", str(out)])
    assert res.exit_code == 0 and "1 exact and 0 near-duplicate" in res.output
    (tmp_path / "other.json").write_text('{"not": "an audit"}\n')
    res = CliRunner().invoke(data_main, [*args, "--out", str(tmp_path / "other.json")])
    assert res.exit_code == 2 and "is not a content audit" in res.output
    (tmp_path / "copy.csv").write_bytes((a / "manifest.csv").read_bytes())
    res = CliRunner().invoke(
        data_main, ["audit", str(a / "manifest.csv"), str(tmp_path / "copy.csv"), "--out", str(out)]
    )
    assert res.exit_code == 2 and "the same content" in res.output


def test_within_a_dataset_pairs_name_the_splits_that_cross(tmp_path: Path) -> None:
    tiles = _tiles()
    root = tmp_path / "c"
    c = _dataset(root, "setc", tiles[:6], {})
    (c / "seta_copy.png").write_bytes((c / "setc2.png").read_bytes())
    m = read_manifest(c / "manifest.csv")
    copy = ManifestRow("seta_copy.png", 1.0, group="g_copy")
    write_manifest(with_file_hashes(Manifest(m.info, (*m.rows, copy))), c / "m2.csv")
    m2 = read_manifest(c / "m2.csv")
    ids = m2.image_ids
    crossing = Split(tuple(ids[:5]), (), tuple(ids[5:]), manifest_sha256=m2.sha256())
    write_split(crossing, tmp_path / "s.json")
    out = tmp_path / "audit.json"
    args = ["audit", str(c / "m2.csv"), "--splits", str(tmp_path / "s.json"), "--out", str(out)]
    res = CliRunner().invoke(data_main, args)
    assert res.exit_code == 0, res.output
    (pair,) = json.loads(out.read_text())["pairs"]
    assert (pair["scope"], pair["a"]["id"], pair["b"]["id"]) == (
        "within",
        "setc2.png",
        "seta_copy.png",
    )
    assert pair["crossing_splits"] == [str(tmp_path / "s.json")]


def _train(a: Path, split: Path, out: Path, *extra: str) -> None:
    args = [
        "--head",
        "sfem_nr",
        "--features",
        str(a / "f.zarr"),
        "--manifest",
        str(a / "manifest.csv"),
        "--split",
        str(split),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--set",
        "width=4",
        "--set",
        "scales=[1]",
        "--set",
        "pool_size=2",
        "--out",
        str(out),
        *extra,
    ]
    res = CliRunner().invoke(train_main, args)
    assert res.exit_code == 0, res.output


def test_cross_test_warns_about_shared_content(two_sets: tuple, tmp_path: Path) -> None:
    a, b, audit = two_sets
    m = read_manifest(a / "manifest.csv")
    ids = m.image_ids  # the planted images (3 and 5) are in the train part
    split = Split(tuple(ids[:8]), tuple(ids[8:10]), tuple(ids[10:]), manifest_sha256=m.sha256())
    write_split(split, tmp_path / "split.json")
    _train(a, tmp_path / "split.json", tmp_path / "run")
    base = [
        str(tmp_path / "run"),
        "--features",
        str(b / "f.zarr"),
        "--manifest",
        str(b / "manifest.csv"),
    ]
    res = CliRunner().invoke(cross_main, [*base, "--out", str(tmp_path / "x1")])
    assert res.exit_code == 0, res.output
    assert "warning: 1 of the 12 tested images share content" in res.stderr
    res = CliRunner().invoke(
        cross_main, [*base, "--audit", str(audit), "--out", str(tmp_path / "x2")]
    )
    assert "warning: 2 of the 12 tested images share content" in res.stderr
    assert "(1 by file hash, 2 by the audit; 1 of 1 runs)" in res.stderr
    overlap = json.loads((tmp_path / "x2" / "metrics.json").read_text())["overlap"]
    assert overlap["ids"] == ["setb0.png", "setb1.jpg"]
    res = CliRunner().invoke(
        cross_main, [*base, "--exclude-overlap", str(audit), "--out", str(tmp_path / "x3")]
    )
    assert res.exit_code == 0 and "left out 2 tested images" in res.stderr
    assert json.loads((tmp_path / "x3" / "metrics.json").read_text())["n_images"] == 10
    only_b = tmp_path / "only_b.json"
    res = CliRunner().invoke(data_main, ["audit", str(b / "manifest.csv"), "--out", str(only_b)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        cross_main, [*base, "--audit", str(only_b), "--out", str(tmp_path / "x4")]
    )
    assert "does not cover training manifest" in res.stderr


def test_training_with_the_audit_leaves_the_shared_images_out(
    two_sets: tuple, tmp_path: Path
) -> None:
    a, b, audit = two_sets
    m = read_manifest(a / "manifest.csv")
    ids = m.image_ids
    split = Split(tuple(ids[:8]), tuple(ids[8:10]), tuple(ids[10:]), manifest_sha256=m.sha256())
    write_split(split, tmp_path / "split.json")
    _train(a, tmp_path / "split.json", tmp_path / "run", "--exclude-overlap", str(audit))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["runs"][0]["excluded_overlap"] == 2
    assert record["exclude_overlap"]["audit"] == str(audit)
    preds = (tmp_path / "run" / "predictions.csv").read_text()
    assert "seta3.png" not in preds and "seta5.png" not in preds
    res = CliRunner().invoke(
        cross_main,
        [
            str(tmp_path / "run"),
            "--features",
            str(b / "f.zarr"),
            "--manifest",
            str(b / "manifest.csv"),
            "--audit",
            str(audit),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 0 and "share content" not in res.stderr, res.stderr


def test_an_audit_that_does_not_cover_the_manifest_is_refused(
    two_sets: tuple, tmp_path: Path
) -> None:
    a, _, audit = two_sets
    other = tmp_path / "other.csv"  # the same rows, another file: not what was audited
    other.write_text((a / "manifest.csv").read_text() + "\n")
    m = read_manifest(other)
    split = Split(tuple(m.image_ids[:8]), (), tuple(m.image_ids[8:]), manifest_sha256=m.sha256())
    write_split(split, tmp_path / "split.json")
    res = CliRunner().invoke(
        train_main,
        [
            "--head",
            "sfem_nr",
            "--features",
            str(a / "f.zarr"),
            "--manifest",
            str(other),
            "--split",
            str(tmp_path / "split.json"),
            "--exclude-overlap",
            str(audit),
            "--out",
            str(tmp_path / "r2"),
        ],
    )
    assert res.exit_code == 1 and "does not cover" in res.output and "other.csv" in res.output
    assert not (tmp_path / "r2").exists()
