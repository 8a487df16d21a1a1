"""PromptIQA's ablations as the paper runs them: "w/o prompt" trains without the label
augmentation it cannot infer (Table 6), and the Table 5 prompt probes (inverted or random
prompts, random images) are test-time options of a trained model, never of training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import NSS, data_args, invoke_test_head, record_augment, store_args, vectors
from _tiny import PROMPT_TINY as TINY
from click.testing import CliRunner
from PIL import Image
from test_label_orientation import vector_set
from test_prompt_use import _dataset

from cache.store import open_store
from extract.config import ExtractConfig, arch_overrides
from extract.run import run_extract
from heads import protocols
from heads.checkpoint import load_head
from heads.cli import main as train_main
from heads.cli import test_main as probe_main
from heads.crosstest import random_image_features
from heads.evaluate import ProbeError, make_prompt
from heads.optim import TrainConfig, TrainConfigError
from heads.split_data import load_part
from heads.train import FitOptions, fit
from iqadata.cli import main as data_main
from iqadata.manifest import file_sha256, read_manifest, read_split

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_ARGS = sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])


def _train(run: Path, root: Path, *extra: str) -> object:
    args = [
        "--head",
        "prompt",
        *data_args(root),
        "--batch-size",
        "11",
        "--train-set",
        "groups_per_step=1",
        "--out",
        str(run),
        *TINY_ARGS,
        *extra,
    ]
    return CliRunner().invoke(train_main, args)


def _probe(run: Path, root: Path, out: Path, *extra: str) -> object:
    return invoke_test_head(run, data_args(root), out, *extra)


def test_without_prompts_training_has_no_label_augmentation(monkeypatch, tmp_path) -> None:
    calls = record_augment(monkeypatch)
    train, val = vectors(33, 0, "t"), vectors(22, 1, "v")
    res = fit(
        "prompt",
        {**TINY, "use_prompt": False},
        train,
        val,
        seed=0,
        options=FitOptions(out_dir=tmp_path),
        training=TrainConfig(epochs=2, batch_size=11, lr=1e-3),
    )
    assert calls and all(kw["scale_p"] == 0.0 and kw["flip_p"] == 0.0 for kw in calls)
    saved = torch.load(res.checkpoint, weights_only=True)["extra"]["training"]
    assert (saved["scale_p"], saved["flip_p"]) == (0.0, 0.0)  # recorded as trained
    calls.clear()
    fit("prompt", TINY, train, val, seed=0, training=TrainConfig(epochs=1, batch_size=11))
    assert calls[0]["scale_p"] == 0.5 and calls[0]["flip_p"] == 0.1  # with prompts: on


def test_the_probes_are_not_training_options(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="iqa-test-head --probe"):
        TrainConfig().replace(prompt_transform="invert")
    assert TrainConfig.from_dict({"epochs": 3, "prompt_transform": "none"}).epochs == 3
    root = vector_set(tmp_path / "v", "v", dmos=False, n=44)
    res = _train(tmp_path / "run", root, "--train-set", "prompt_transform=invert")
    assert res.exit_code == 2 and "iqa-test-head --probe" in res.output
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe")
    data = vector_set(root / "v", "v", dmos=False)
    run = root / "run"
    res = _train(run, data, "--epochs", "2", "--lr", "1e-3")
    assert res.exit_code == 0, res.output
    return {"root": root, "data": data, "run": run}


def _predictions(folder: Path) -> list[float]:
    with open(folder / "predictions.csv", newline="") as fh:
        return [float(r["prediction"]) for r in csv.DictReader(fh)]


def test_probes_test_a_trained_model_and_leave_it_as_it_was(trained: dict[str, Path]) -> None:
    """The probes change the test-time prompt only (that an inverted prompt reverses a
    prompt-reading head's ranking: test_prompt_use)."""
    run, data, root = trained["run"], trained["data"], trained["root"]
    before = {p: file_sha256(p) for p in sorted(run.rglob("*")) if p.is_file()}
    results, preds = {}, {}
    for probe in ("none", "invert", "random_scores"):
        res = _probe(run, data, root / f"t-{probe}", "--probe", probe)
        assert res.exit_code == 0, res.output
        results[probe] = json.loads((root / f"t-{probe}" / "metrics.json").read_text())
        preds[probe] = _predictions(root / f"t-{probe}")
        assert results[probe]["probe"] == probe
    trained_metrics = json.loads((run / "metrics.json").read_text())
    for k in (0, 1):  # no probe: exactly the run's own test evaluation
        assert results["none"]["runs"][k]["test"]["srcc"] == pytest.approx(
            trained_metrics["runs"][k]["test"]["srcc"], abs=1e-6
        )
    assert preds["invert"] != preds["none"] and preds["random_scores"] != preds["none"]
    assert {p: file_sha256(p) for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_probe_errors_are_one_line(trained: dict[str, Path], tmp_path: Path) -> None:
    run, data = trained["run"], trained["data"]
    res = _probe(run, data, tmp_path / "x", "--probe", "random_images")
    assert res.exit_code == 2 and "--random-images" in res.output
    args = [
        str(run),
        *store_args(data),
        "--probe",
        "invert",
        "--out",
        str(tmp_path / "y"),
    ]
    res = CliRunner().invoke(probe_main, args)
    assert res.exit_code == 2 and "give --split" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x").exists()
    with pytest.raises(ProbeError, match="probe must be one of"):  # N(0, 1) vectors: gone
        make_prompt(torch.nn.Identity(), vectors(11, 0, "t"), 4, probe="random_features")


def test_random_images_command(tmp_path: Path) -> None:
    out = tmp_path / "rand"
    res = CliRunner().invoke(
        data_main,
        ["random-images", "--out", str(out), "--count", "6", "--size", "40,48", "--seed", "3"],
    )
    assert res.exit_code == 0, res.output
    pixels = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("images/*.png"))])
    assert pixels.shape == (6, 40, 48, 3)
    assert abs(pixels.mean() - 127.5) < 3 and abs(pixels.std() - 73.9) < 3  # uniform 0-255
    assert len(read_manifest(out / "manifest.csv").rows) == 6
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    res = CliRunner().invoke(data_main, ["random-images", "--out", str(foreign)])
    assert res.exit_code == 2 and sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]


@pytest.fixture(scope="module")
def nss_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prompt head on nss features of photographs, and random images through nss."""
    root = tmp_path_factory.mktemp("nss")
    data = _dataset(root / "d", "d", 30)
    run = root / "run"
    res = _train(run, data, "--epochs", "2", "--batch-size", "4")
    assert res.exit_code == 0, res.output
    rand = root / "rand"
    res = CliRunner().invoke(data_main, ["random-images", "--out", str(rand), "--count", "12"])
    assert res.exit_code == 0, res.output
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides(NSS), shard_size=8)
    run_extract(cfg, rand / "manifest.csv", out=str(rand / "f.zarr"), progress=False)
    return {"root": root, "data": data, "run": run, "rand": rand}


def test_random_images_are_backbone_features_of_random_pixels(nss_run: dict[str, Path]) -> None:
    run, data, rand, root = nss_run["run"], nss_run["data"], nss_run["rand"], nss_run["root"]
    ids = {}
    for probe in ("random_images", "random_images_scores"):
        out = root / probe
        res = _probe(run, data, out, "--probe", probe, "--random-images", str(rand / "f.zarr"))
        assert res.exit_code == 0, res.output
        result = json.loads((out / "metrics.json").read_text())
        ids[probe] = [r["prompt_ids"] for r in result["runs"]]
        assert all(i.startswith("images/random_") for r in ids[probe] for i in r)
        assert result["options"]["random_images"] == str(rand / "f.zarr")
    assert ids["random_images"] == ids["random_images_scores"]  # same images, seeded
    other = root / "other.zarr"  # random images through another nss configuration
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides({"size": 32, "grid": 8}))
    run_extract(cfg, rand / "manifest.csv", out=str(other), progress=False)
    res = _probe(run, data, root / "bad", "--probe", "random_images", "--random-images", str(other))
    assert res.exit_code == 2 and "not features of the head's backbone" in res.output


def test_a_random_images_prompt_embeds_those_features(nss_run: dict[str, Path]) -> None:
    data = nss_run["data"]
    model, ckpt = load_head(nss_run["run"] / "run_00" / "model.pt")
    images = random_image_features(str(nss_run["rand"] / "f.zarr"), ckpt)
    assert len(images) == 12
    split = read_split(data / "splits" / "split_00.json")
    store = open_store(str(data / "f.zarr"))
    train, _ = load_part(store, read_manifest(data / "manifest.csv"), list(split.train))
    real, real_ids = make_prompt(model, train, 4)
    scores = train.targets[torch.tensor([train.ids.index(i) for i in real_ids])]
    for probe, real_scores in (("random_images", True), ("random_images_scores", False)):
        prompt, ids = make_prompt(model, train, 4, probe=probe, seed=5, random_images=images)
        feats, valid, _ = images.batch(torch.tensor([images.ids.index(i) for i in ids]))
        with torch.no_grad():
            want = protocols.embed_prompt(model, feats, scores, valid)
        assert torch.allclose(prompt, want) == real_scores  # the real scores, or random ones
        assert not torch.allclose(prompt, real)  # other images than the train part's
