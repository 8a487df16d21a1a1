"""iqa-train-head on a tiny Zarr store written by the test: outputs, FR refs, refusals."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from _tiny import store_args
from click.testing import CliRunner

from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec, open_store
from heads.checkpoint import read_checkpoint
from heads.cli import main
from heads.split_data import load_split
from heads.store_reader import StoreArray
from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestRow,
    Split,
    file_sha256,
    read_manifest,
    read_split,
    write_manifest,
    write_split,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REFS = [f"refs/r{i}.png" for i in range(4)]
DIST = [f"dist/r{i}_{k}.png" for i in range(4) for k in range(8)]
TINY = ["--set", "width=8", "--set", "scales=[1, 2]", "--set", "pool_size=4"]


# Small models on 2 shared cores: one thread avoids oversubscription.
pytestmark = pytest.mark.usefixtures("one_thread")


def _scores() -> dict[str, float]:
    rng = np.random.default_rng(0)
    return {d: float(rng.uniform(1, 5)) for d in DIST}


def _write_store(url: str, skip_shards: tuple[int, ...] = ()) -> None:
    ids = REFS + DIST
    scores = _scores()
    arrays = [ArraySpec("embed", (4, 8, 8)), ArraySpec("feature", (6,))]
    store = create_store(
        url,
        StoreLayout(arrays, ids, ("identity", "hflip"), shard_size=4),
        fingerprint_fields={"backbone": "toy"},
    )
    rng = np.random.default_rng(1)
    checker = ((np.arange(8)[:, None] + np.arange(8)) % 2) * 2.0 - 1  # (8, 8)
    for k in range(store.n_shards):
        if k in skip_shards:
            continue
        rows = list(store.shard_rows(k))
        quality = np.array([(scores.get(ids[r // 2], 5.0) - 1) / 4 for r in rows])
        embed = rng.normal(size=(len(rows), 4, 8, 8))
        embed[:, 0] += 2 * quality[:, None, None] * checker
        feature = rng.normal(size=(len(rows), 6)) * 0.1
        feature[:, 0] += 2 * quality
        sizes = np.tile([8, 8], (len(rows), 1))
        store.writer.write_shard(k, {"embed": embed, "feature": feature}, sizes, sizes)
    store.close()


@pytest.fixture
def files(tmp_path):
    scores = _scores()
    rows = tuple(
        ManifestRow(image=d, score=scores[d], group=d.split("/")[1][:2], ref=REFS[int(d[6])])
        for d in DIST
    )
    info = DatasetInfo(name="toy", score_range=(1.0, 5.0))
    write_manifest(Manifest(info=info, rows=rows), tmp_path / "manifest.csv")
    by_ref = [DIST[8 * i : 8 * (i + 1)] for i in range(4)]  # parts by reference: no leak
    for n, (a, b, c, d) in enumerate([by_ref, by_ref[::-1]]):
        write_split(
            Split(train=tuple(a + b), val=tuple(c), test=tuple(d),
                  manifest_sha256=file_sha256(tmp_path / "manifest.csv")),
            tmp_path / f"split_{n}.json",
        )
    _write_store(str(tmp_path / "f.zarr"))
    return tmp_path


def _run(tmp_path, *args: str) -> object:
    base = [
        *store_args(tmp_path),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
    ]
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


def test_single_split_writes_every_output(files) -> None:
    out = files / "nr"
    res = _run(
        files, "--head", "sfem_nr", "--split", str(files / "split_0.json"), "--out", str(out), *TINY
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    (run,) = metrics["runs"]
    assert set(run["val"]) >= {"srcc", "plcc", "krcc", "rmse"}
    assert set(run["test"]) >= {"srcc", "plcc", "krcc", "rmse"}
    assert metrics["summary"]["test"]["srcc"]["n"] == 1
    with open(out / "run_00" / "curves.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    with open(out / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert list(preds[0]) == ["run", "dataset", "id", "part", "distortion", "score", "target",
                              "prediction", "predicted_score"]
    assert sorted(p["id"] for p in preds) == sorted(DIST)
    p = preds[0]
    assert float(p["score"]) == pytest.approx(1 + 4 * float(p["target"]), abs=1e-5)
    ckpt = read_checkpoint(out / "run_00" / "model.pt")
    assert ckpt["store_fingerprint"] == metrics["fingerprint"]
    assert ckpt["label_norm"] == {
        "method": "score_range",
        "low": 1.0,
        "high": 5.0,
        "lower_better": False,
        "flip": False,
    }


def test_fr_over_two_splits_summarises(files) -> None:
    out = files / "fr"
    res = _run(
        files,
        "--head",
        "sfem_fr",
        "--split",
        str(files / "split_0.json"),
        "--split",
        str(files / "split_1.json"),
        "--ref-features",
        str(files / "f.zarr"),
        "--out",
        str(out),
        *TINY,
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["runs"]) == 2
    assert set(metrics["summary"]["test"]["srcc"]) == {"median", "mean", "std", "n"}
    assert (out / "run_01" / "model.pt").is_file() and (out / "predictions.csv").is_file()


def test_prompt_head_with_repeats(files) -> None:
    out = files / "prompt"
    args = ["--head", "prompt", "--split", str(files / "split_0.json"), "--out", str(out),
            "--batch-size", "4"]
    res = CliRunner().invoke(main, [*args[:2], *store_args(files), *args[2:]])
    assert res.exit_code != 0 and "pass feature=NAME" in res.output
    tiny = [
        "--set",
        "feature=feature",
        "--set",
        "dim=16",
        "--set",
        "heads=2",
        "--set",
        "fusion_depth=1",
        "--seeds",
        "2",
    ]
    res = _run(files, *args, *tiny)
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["seed"] for r in metrics["runs"]] == [0, 1]
    assert all(len(r["prompt_ids"]) == 10 for r in metrics["runs"])
    prompts = read_checkpoint(out / "run_00" / "model.pt")["extra"]["prompts"]
    assert prompts[0]["ids"] == metrics["runs"][0]["prompt_ids"]


def test_unwritten_rows_are_refused_unless_written_only(files) -> None:
    (files / "f.zarr").rename(files / "full.zarr")
    _write_store(str(files / "f.zarr"), skip_shards=(2,))
    args = ["--head", "sfem_nr", "--split", str(files / "split_0.json"), *TINY]
    res = CliRunner().invoke(main, [*args, *store_args(files), "--out", str(files / "a")])
    assert res.exit_code == 1 and "--written-only" in res.output and "--resume" in res.output
    assert not (files / "a").exists()  # nothing left behind
    res = _run(files, *args, "--written-only", "--out", str(files / "b"))
    assert res.exit_code == 0, res.output
    assert json.loads((files / "b" / "metrics.json").read_text())["runs"][0][
        "dropped_unwritten"] == 4
    assert "left out 4 images with unwritten rows" in res.output


def test_usage_errors(files) -> None:
    split = str(files / "split_0.json")
    res = _run(
        files, "--head", "sfem_nr", "--split", split, "--split", split, "--repeats", "3",
        "--out", str(files / "x"),
    )
    assert res.exit_code == 2 and "only 2 split files" in res.output
    res = _run(files, "--head", "sfem_nr", "--split", str(files / "x"), "--out", str(files / "y"))
    assert res.exit_code == 2 and "does not exist" in res.output
    res = _run(
        files, "--head", "sfem_nr", "--split", split, "--set", "oops", "--out", str(files / "x")
    )
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    for bad in (["--epochs", "0"], ["--epochs", "-1"], ["--batch-size", "0"], ["--lr", "0"]):
        res = CliRunner().invoke(main, ["--features", str(files / "f.zarr"), "--manifest",
                                        str(files / "manifest.csv"), "--head", "sfem_nr",
                                        "--split", split, "--out", str(files / "z"), *bad])
        assert res.exit_code == 2 and "range" in res.output, bad
    res = _run(files, "--head", "sfem_nr", "--split", split, "--train-set", "patience=-2",
               "--out", str(files / "z"))
    assert res.exit_code == 2 and "patience" in res.output
    assert not (files / "x").exists() and not (files / "z").exists()
    res = _run(
        files,
        "--head",
        "qfd",
        "--split",
        split,
        "--set",
        "feature=embed",
        "--out",
        str(files / "x"),
    )
    assert res.exit_code == 1 and "unknown config fields" in res.output


@pytest.mark.parametrize("ref", [False, True])
def test_lazy_rows_match_the_preloaded_part(files, ref: bool) -> None:
    store = open_store(str(files / "f.zarr"))
    manifest, split = read_manifest(files / "manifest.csv"), read_split(files / "split_0.json")
    opts = {"ref_store": store if ref else None}
    ram = load_split(store, manifest, split, preload=True, **opts)
    lazy = load_split(store, manifest, split, preload=False, **opts)
    assert isinstance(lazy.train.features["embed"], StoreArray)
    assert (
        lazy.train.feature_specs == ram.train.feature_specs == {"embed": (4, 8, 8), "feature": (6,)}
    )
    rows, views = torch.tensor([3, 0, 5]), torch.tensor([1, 0, 1])
    for a, b in zip(ram.train.batch(rows, views), lazy.train.batch(rows, views), strict=True):
        if isinstance(a, dict):
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert a is None and b is None or torch.equal(a, b)
    assert ram.train.targets.min() >= 0 and ram.train.targets.max() <= 1
    row = store.row_of(ram.train.ids[3], "hflip")
    expected = store.read([row], ["embed"])["embed"][0]
    assert torch.equal(ram.train.features["embed"][3, 1], torch.from_numpy(expected))


def test_split_folder_repeats_and_params(files) -> None:
    folder = files / "splits"
    folder.mkdir()
    for n in range(2):
        (folder / f"split_{n:02d}.json").write_text((files / f"split_{n}.json").read_text())
    params = files / "params.yaml"
    params.write_text("head_config:\n  sfem_nr: {width: 6, scales: [1], pool_size: 4}\n")
    out = files / "folder"
    res = _run(files, "--head", "sfem_nr", "--split", str(folder), "--params", str(params),
               "--out", str(out))
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["split"] for r in metrics["runs"]] == [str(folder / "split_00.json"),
                                                       str(folder / "split_01.json")]
    assert read_checkpoint(out / "run_00" / "model.pt")["config"]["width"] == 6
    one = files / "one"
    res = _run(files, "--head", "sfem_nr", "--split", str(folder), "--repeats", "1",
               "--params", str(params), "--out", str(one))
    assert res.exit_code == 0, res.output
    metrics_one = json.loads((one / "metrics.json").read_text())
    assert [r["split"] for r in metrics_one["runs"]] == [str(folder / "split_00.json")]
    assert set(metrics_one) == set(metrics)  # one schema, whatever the number of runs


def test_params_training_options_yield_to_the_command_line(files) -> None:
    params = files / "params.yaml"
    params.write_text("head_train:\n  sfem_nr: {epochs: 2, lr: 0.01}\n"
                      "head_config:\n  sfem_nr: {width: 6, scales: [1], pool_size: 4}\n")
    split = str(files / "split_0.json")
    out = files / "p"
    # _run passes --epochs 3 explicitly: it wins over head_train's 2
    res = _run(files, "--head", "sfem_nr", "--split", split, "--params", str(params),
               "--out", str(out))
    assert res.exit_code == 0, res.output
    with open(out / "run_00" / "curves.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    alone = files / "q"
    res = CliRunner().invoke(main, [
        "--features", str(files / "f.zarr"), "--manifest", str(files / "manifest.csv"),
        "--head", "sfem_nr", "--split", split, "--params", str(params), "--out", str(alone),
    ])
    assert res.exit_code == 0, res.output
    with open(alone / "run_00" / "curves.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2  # head_train's epochs, not the default 500
    params.write_text("head_train:\n  sfem_nr: {epoch: 2}\n")
    res = _run(files, "--head", "sfem_nr", "--split", split, "--params", str(params),
               "--out", str(out))
    assert res.exit_code == 2 and "unknown training option(s) ['epoch']" in res.output


def test_a_split_made_for_another_manifest_is_refused(files) -> None:
    other = read_manifest(files / "manifest.csv")
    rows = tuple(r if i else replace(r, score=r.score + 0.5) for i, r in enumerate(other.rows))
    write_manifest(Manifest(info=other.info, rows=rows), files / "other.csv")
    res = CliRunner().invoke(main, [
        "--head", "sfem_nr", "--features", str(files / "f.zarr"), "--manifest",
        str(files / "other.csv"), "--split", str(files / "split_0.json"), "--out",
        str(files / "o"), *TINY,
    ])
    assert res.exit_code == 1 and "split_0.json" in res.output and "other.csv" in res.output
    assert not (files / "o").exists()


@pytest.mark.parametrize("ratios", ["0.8,0.2", "0.6,0.2,0.2"])
def test_a_folder_written_by_iqa_data_split_trains(files, ratios: str) -> None:
    """The README's real-dataset flow: ``iqa-data split --out DIR`` then ``--split DIR``.

    The folder holds the output marker (``.iqa-output.json``) beside the split files; it is
    not a split and is not read as one.
    """
    from iqadata.cli import main as data_main

    folder = files / "made"
    res = CliRunner().invoke(data_main, ["split", str(files / "manifest.csv"), "--ratios", ratios,
                                         "--repeats", "2", "--out", str(folder)])
    assert res.exit_code == 0, res.output
    assert (folder / ".iqa-output.json").is_file()
    out = files / "from_split_folder"
    res = _run(files, "--head", "sfem_nr", "--split", str(folder), "--out", str(out), *TINY)
    assert res.exit_code == 0, res.output
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    assert [r["split"] for r in runs] == [str(folder / f"split_{n:02d}.json") for n in range(2)]


def test_runs_in_two_processes_give_the_same_bytes(files) -> None:
    """``--jobs 2`` trains the splits in two worker processes: same checkpoints and metrics."""
    outs = {}
    for jobs in (1, 2):
        out = files / f"jobs{jobs}"
        res = _run(files, "--head", "sfem_nr", "--split", str(files / "split_0.json"), "--split",
                   str(files / "split_1.json"), "--jobs", str(jobs), "--threads", "1",
                   "--out", str(out), *TINY)
        assert res.exit_code == 0, res.output
        outs[jobs] = out
    for name in ("run_00/model.pt", "run_01/model.pt", "predictions.csv", "run_01/curves.csv"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
    one, two = (json.loads((outs[j] / "metrics.json").read_text()) for j in (1, 2))
    assert one["runs"] == two["runs"] and one["summary"] == two["summary"]


def test_the_workers_server_imports_each_heads_module() -> None:
    """The forkserver skips a preload module it cannot import without a word, and each
    worker would then import it itself (timm for the prompt head): every name must import."""
    import importlib

    from heads.registry import HEADS
    from heads.workers import WORKER_PRELOAD, worker_preload

    for head, target in HEADS.items():
        modules = worker_preload(head)
        assert modules[: len(WORKER_PRELOAD)] == list(WORKER_PRELOAD)
        assert target.partition(":")[0] in modules, head
        for name in modules:
            importlib.import_module(name)


def _renamed(files, name: str) -> tuple[str, str]:
    """The tiny dataset's manifest under another dataset name, and a split file for it."""
    old = read_manifest(files / "manifest.csv")
    path = files / f"{name}.csv"
    write_manifest(Manifest(info=replace(old.info, name=name), rows=old.rows), path)
    split = read_split(files / "split_0.json")
    write_split(replace(split, manifest_sha256=file_sha256(path)), files / f"{name}_split.json")
    return str(path), str(files / f"{name}_split.json")


def test_milestones_per_dataset_and_the_named_loss_are_applied_and_recorded(files) -> None:
    """DP-IQA's build.py decays CLIVE (our ``livec``) at epoch 10, KonIQ at 5; the loss is
    a named option (paper eq. 11: mse_rank; the reference trains mse) in metrics.json."""
    params = files / "params.yaml"
    params.write_text(
        "head_train:\n  linear: {epochs: 12, lr: 1.0e-3, batch_size: 4, schedule: multistep,"
        " gamma: 0.2, milestones: [5], milestones_by_dataset: {livec: [10]}, loss: mse_rank}\n"
    )
    got = {}
    for name in ("livec", "koniq10k"):
        manifest, split = _renamed(files, name)
        out = files / f"run_{name}"
        res = CliRunner().invoke(main, [
            "--head", "linear", "--features", str(files / "f.zarr"), "--manifest", manifest,
            "--split", split, "--params", str(params), "--out", str(out),
        ])
        assert res.exit_code == 0, res.output
        metrics = json.loads((out / "metrics.json").read_text())
        with open(out / "run_00" / "curves.csv") as fh:
            lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
        got[name] = (metrics["training"]["milestones"], lrs.index(min(lrs)), metrics["loss"])
    assert got["livec"][:2] == ([10], 10) and got["koniq10k"][:2] == ([5], 5)
    assert got["livec"][2] == {"name": "mse_rank", "l1": 0.0, "mse": 1.0, "rank": 1.0,
                               "margin_coef": 0.25}
    split = str(files / "split_0.json")
    out = files / "mse"
    res = _run(files, "--head", "linear", "--split", split, "--train-set", "loss=mse",
               "--out", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["loss"]["name"] == "mse"
    manifest, split_livec = _renamed(files, "livec")
    res = CliRunner().invoke(main, [
        "--head", "qfd", "--features", str(files / "f.zarr"), "--manifest", manifest,
        "--split", split_livec, "--show-config", "--train-set", "milestones=[3]"])
    shown = json.loads(res.output)["training"]  # milestones asked for: on every dataset
    assert (shown["milestones"], shown["milestones_by_dataset"]) == ([3], {})
    res = CliRunner().invoke(main, ["--head", "qfd", "--show-config"])
    assert json.loads(res.output)["training"]["milestones_by_dataset"]["livec"] == [10]
    res = _run(files, "--head", "linear", "--split", split, "--train-set", "loss=hinge",
               "--out", str(files / "bad"))
    assert res.exit_code == 2 and "loss must be one of" in res.output
