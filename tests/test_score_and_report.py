"""End to end on tiny data: extract -> train -> iqa-score (iqa-eval: tests/test_report.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import write_labels
from click.testing import CliRunner
from PIL import Image

from extract.config import ExtractConfig, arch_overrides
from extract.run import run_extract
from extract.sam import build_sam_vit_b
from heads.experiment import ExperimentSpec, Source, run_experiment
from heads.optim import TrainConfig
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow
from pipelines.score.cli import main as score_main

SAM_TINY = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 2,
            "global_attn_indexes": [1]}
NSS_TINY = {"size": 32, "grid": 8}
HEAD_TINY = {"width": 4, "scales": (1,), "pool_size": 4}


def _image(seed: int, blur: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([np.sin(xx / (3 + seed)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1)
    img = (img * 90 + 128 + rng.normal(0, 20 - 4 * blur, img.shape)).clip(0, 255)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 references x 4 levels of noise; score falls with the noise level."""
    root = tmp_path_factory.mktemp("tiny")
    rows = []
    for r in range(4):
        Image.fromarray(_image(r, 4)).save(root / f"ref{r}.png")
        for level in range(4):
            name = f"d{r}_{level}.png"
            Image.fromarray(_image(r, level)).save(root / name)
            rows.append(ManifestRow(image=name, ref=f"ref{r}.png", score=1.0 + level,
                                    group=f"ref{r}", distortion="noise"))
    ids = tuple(r.image for r in rows)
    write_labels(root, Manifest(DatasetInfo("tiny", score_range=(1, 5)), tuple(rows)),
                 (ids[:8], ids[8:12], ids[12:]), root / "splits" / "split_00.json")
    return root


def _train(root: Path, store: str, head: str, out: str) -> Path:
    source = Source(store, str(root / "manifest.csv"), (str(root / "splits" / "split_00.json"),))
    run_experiment(ExperimentSpec(
        head=head, sources=(source,), out=out, overrides=dict(HEAD_TINY),
        training=TrainConfig(epochs=2, batch_size=4, lr=1e-3),
    ))
    return Path(out)


def test_score_matches_training_predictions(dataset: Path, tmp_path: Path) -> None:
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides(NSS_TINY), shard_size=4)
    store = run_extract(cfg, dataset / "manifest.csv", out=str(tmp_path / "f.zarr"),
                        progress=False).store
    run = _train(dataset, store, "sfem_fr", str(tmp_path / "fr"))
    res = CliRunner().invoke(score_main, [
        str(dataset / "d3_1.png"), "--ref", str(dataset / "ref3.png"),
        "--head", str(run / "run_00" / "model.pt"), "--json",
    ])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    scored = out["scores"][0]
    assert out["about"]["mode"] == "full-reference" and out["about"]["higher_is_better"]
    with open(run / "predictions.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["id"] == "d3_1.png")
    assert scored["score"] == pytest.approx(float(row["predicted_score"]), abs=1e-4)
    assert scored["quality"] == pytest.approx(min(max(float(row["prediction"]), 0), 1), abs=1e-5)
    res = CliRunner().invoke(score_main, [str(dataset / "d3_1.png"), "--head",
                                          str(run / "run_00" / "model.pt")])
    assert res.exit_code == 1 and "full-reference" in res.output


def test_score_a_folder_against_a_reference_folder_into_a_csv(dataset: Path,
                                                              tmp_path: Path) -> None:
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides(NSS_TINY), shard_size=4)
    store = run_extract(cfg, dataset / "manifest.csv", out=str(tmp_path / "f.zarr"),
                        progress=False).store
    run = _train(dataset, store, "sfem_fr", str(tmp_path / "fr"))
    dist, refs = tmp_path / "dist", tmp_path / "refs"
    dist.mkdir(), refs.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.open(dataset / "d1_2.png").save(dist / name)
        Image.open(dataset / "ref1.png").save(refs / name.replace(".png", ".bmp"))
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(score_main, [str(dist), "-r", str(refs), "--head",
                                          str(run / "run_00" / "model.pt"), "--csv", str(out),
                                          "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert "full-reference" in res.output and "higher is better" in res.output
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["image"]).name for r in rows] == ["a.png", "b.png", "c.png"]
    assert all(Path(r["ref"]).suffix == ".bmp" for r in rows)
    scores = [float(r["score"]) for r in rows]
    # same pixels, same score, batch or not: equal up to float rounding (a batch of two and
    # a batch of one run through other gemm blockings, ~1e-7 apart with any CPU kernels)
    assert max(scores) - min(scores) < 1e-5 * max(1.0, abs(scores[0]))
    assert all(0 <= float(r["quality"]) <= 1 for r in rows)
    (tmp_path / "mine.csv").write_text("my,own\n")
    res = CliRunner().invoke(score_main, [str(dist), "-r", str(refs), "--head",
                                          str(run / "run_00" / "model.pt"), "--csv",
                                          str(tmp_path / "mine.csv")])
    assert res.exit_code == 2 and (tmp_path / "mine.csv").read_text() == "my,own\n"


def test_a_head_on_a_bit_rounded_store_scores(dataset: Path, tmp_path: Path) -> None:
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides(NSS_TINY), shard_size=4,
                        keepbits=5)
    store = run_extract(cfg, dataset / "manifest.csv", out=str(tmp_path / "k.zarr"),
                        progress=False).store
    run = _train(dataset, store, "sfem_nr", str(tmp_path / "nr"))
    res = CliRunner().invoke(score_main, [str(dataset / "d2_3.png"), "--head",
                                          str(run / "run_00" / "model.pt"), "--json"])
    assert res.exit_code == 0, res.output
    with open(run / "predictions.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["id"] == "d2_3.png")
    got = json.loads(res.output)["scores"][0]["score"]
    assert got == pytest.approx(float(row["predicted_score"]), abs=1e-4)


def test_score_refuses_other_backbone_weights(dataset: Path, tmp_path: Path) -> None:
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_sam_vit_b(None, random_init=True, **SAM_TINY)
        state = {f"image_encoder.{k}": v for k, v in model.image_encoder.state_dict().items()}
        paths.append(tmp_path / f"sam{seed}.pth")
        torch.save(state, paths[-1])
    cfg = ExtractConfig(backbone="sam_vit_b", checkpoint=str(paths[0]),
                        arch=arch_overrides(SAM_TINY), shard_size=8)
    store = run_extract(cfg, dataset / "manifest.csv", out=str(tmp_path / "sam.zarr"),
                        progress=False).store
    run = _train(dataset, store, "sfem_nr", str(tmp_path / "nr"))
    image = str(dataset / "d0_0.png")
    ok = CliRunner().invoke(score_main, [image, "--head", str(run / "run_00" / "model.pt"),
                                         "--checkpoint", str(paths[0])])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(score_main, [image, "--head", str(run / "run_00" / "model.pt"),
                                          "--checkpoint", str(paths[1])])
    assert bad.exit_code == 1 and "weights_sha256" in bad.output
