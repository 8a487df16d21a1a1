"""Cross-dataset tests: a head trained on one dataset's store, tested on another's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny import split_and_extract
from click.testing import CliRunner
from PIL import Image
from test_extract_run import _photo

from extract.config import ExtractConfig, arch_overrides
from extract.run import run_extract
from heads.cli import main as train_main
from heads.cli import test_main as cross_main
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow

pytestmark = pytest.mark.usefixtures("one_thread")


def _noisy(seed: int, level: int):
    import numpy as np

    img = _photo(seed % 5).astype(float)
    img += np.random.default_rng(seed).normal(0, 12 * level, img.shape)
    return Image.fromarray(img.clip(0, 255).astype("uint8"))


def _dataset(root: Path, name: str, dmos: bool) -> Path:
    """Images whose label falls (MOS) or rises (DMOS) with added noise."""
    root.mkdir()
    rows = []
    for i in range(20):
        level = i % 4
        _noisy(i, level).save(root / f"{name}{i}.png")
        score = float(level) if dmos else float(3 - level)
        rows.append(ManifestRow(image=f"{name}{i}.png", score=score, group=f"g{i}"))
    info = DatasetInfo(name, "DMOS" if dmos else "MOS", dmos, (0.0, 3.0))
    return split_and_extract(root, Manifest(info, tuple(rows)))


def test_train_on_one_dataset_test_on_another(tmp_path: Path) -> None:
    mos, dmos = _dataset(tmp_path / "mos", "mos", False), _dataset(tmp_path / "dmos", "dm", True)
    run = tmp_path / "run"
    res = CliRunner().invoke(train_main, [
        "--head", "sfem_nr", "--features", str(mos / "f.zarr"), "--manifest",
        str(mos / "manifest.csv"), "--split", str(mos / "splits"), "--epochs", "15",
        "--batch-size", "4", "--lr", "3e-3", "--set", "width=8", "--set", "scales=[1]",
        "--set", "pool_size=2", "--out", str(run)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "cross"
    res = CliRunner().invoke(cross_main, [str(run), "--features", str(dmos / "f.zarr"),
                                         "--manifest", str(dmos / "manifest.csv"),
                                         "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "metrics.json").read_text())
    assert (result["trained_on"], result["tested_on"], result["n_images"]) == ("mos", "dm", 20)
    assert len(result["runs"]) == 2
    # noise lowers quality in both sets: a head that learned it ranks the DMOS set correctly
    assert result["summary"]["test"]["srcc"]["median"] > 0.5
    res = CliRunner().invoke(cross_main, [str(run), "--features", str(dmos / "f.zarr"),
                                         "--manifest", str(dmos / "manifest.csv"), "--split",
                                         str(dmos / "splits" / "split_00.json"), "--out",
                                         str(tmp_path / "cross2")])
    assert res.exit_code == 0 and "4 images" in res.output
    from pipelines.report.runs import read_runs  # the report reads the folder as a cross row

    (row,) = read_runs(out)
    assert (row.protocol, row.trained_on, row.dataset, row.backbone) == (
        "cross_dataset", "mos", "dm", "nss")
    assert len(row.repeats) == 2 and len(row.predictions.ids) == 40


def test_another_backbones_store_is_refused(tmp_path: Path) -> None:
    mos = _dataset(tmp_path / "mos", "mos", False)
    run = tmp_path / "run"
    CliRunner().invoke(train_main, [
        "--head", "sfem_nr", "--features", str(mos / "f.zarr"), "--manifest",
        str(mos / "manifest.csv"), "--split", str(mos / "splits" / "split_00.json"),
        "--epochs", "1", "--batch-size", "4", "--set", "width=4", "--set", "scales=[1]",
        "--set", "pool_size=2", "--out", str(run)])
    other = ExtractConfig(backbone="nss", arch=arch_overrides({"size": 32, "grid": 8}),
                          shard_size=8)
    run_extract(other, mos / "manifest.csv", out=str(tmp_path / "g8.zarr"), progress=False)
    res = CliRunner().invoke(cross_main, [str(run), "--features", str(tmp_path / "g8.zarr"),
                                         "--manifest", str(mos / "manifest.csv"),
                                         "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "fingerprint" in res.output and not (tmp_path / "x").exists()
