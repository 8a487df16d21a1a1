"""PromptIQA as its users use it: mixed training, user prompts in their own scale, the
paper's ablations reaching training, and the released checkpoint scoring images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import PROMPT_TINY as TINY
from _tiny import data_args, record_augment, split_and_extract, vectors
from click.testing import CliRunner
from PIL import Image
from scipy import stats
from test_extract_run import _photo
from test_monet import TINY as MONET_TINY
from test_monet import _reference_key

import heads.train as train_mod
from extract.monet import build_monet
from heads import protocols
from heads.cli import main as train_main
from heads.evaluate import make_prompt
from heads.optim import TrainConfig
from heads.part_tensors import TrainData
from heads.prompt import PromptConfig, PromptHead
from heads.prompt_release import load_release_head
from heads.train import fit
from iqadata.manifest import DatasetInfo, Manifest, ManifestRow, file_sha256
from pipelines.report.write import write_report
from pipelines.score.cli import main as score_main
from pipelines.score.kinds import checkpoint_kind
from pipelines.score.scorers import Scorer

pytestmark = pytest.mark.usefixtures("one_thread")
def test_mixed_training_draws_each_group_from_one_dataset(monkeypatch) -> None:
    a, b = vectors(33, 0, "a/"), vectors(22, 1, "b/")
    seen = []
    real = train_mod._unit_loss

    def spy(st, data, rows, cfg, device, loss):
        seen.append((data.name, [data.ids[int(i)][:2] for i in rows]))
        return real(st, data, rows, cfg, device, loss)

    monkeypatch.setattr(train_mod, "_unit_loss", spy)
    res = fit("prompt", TINY, [a, b], [vectors(11, 2, "a/"), vectors(11, 3, "b/")],
              training=TrainConfig(epochs=2, batch_size=11, lr=1e-3, groups_per_step=2),
              seed=0)
    assert {name for name, _ in seen} == {"a/", "b/"}
    assert all(len(set(prefixes)) == 1 and len(prefixes) == 11 for _, prefixes in seen)
    assert len(seen) == 2 * (3 + 2)  # every full group of both sets, each epoch
    assert len(res.val_metrics) == 2 and all("srcc" in m for m in res.val_metrics)
    assert len(res.prompts) == 2 and set(res.prompt_ids[1]) <= set(b.ids)


def _dataset(root: Path, name: str, n: int) -> Path:
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(_photo(i)).save(root / f"{name}{i}.png")
        rows.append(ManifestRow(image=f"{name}{i}.png", score=float(i % 7), group=f"g{i}"))
    return split_and_extract(root, Manifest(DatasetInfo(name, score_range=(0, 6)), tuple(rows)))


def test_a_mixed_run_reports_each_dataset(tmp_path: Path) -> None:
    one, two = _dataset(tmp_path / "one", "one", 30), _dataset(tmp_path / "two", "two", 24)
    args = ["--head", "prompt", "--out", str(tmp_path / "run"), "--epochs", "2",
            "--batch-size", "4", *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])]
    for root in (one, two):
        args += data_args(root)
    res = CliRunner().invoke(train_main, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["protocol"] == "mixed" and metrics["datasets"] == ["one", "two"]
    assert set(metrics["runs"][0]["datasets"]) == {"one", "two"}
    assert {"val", "test"} <= set(metrics["summary"]["two"])
    tables = write_report([tmp_path / "run"], tmp_path / "report", formats=(),
                          baselines=False)
    assert set(tables) == {"one", "two"}  # one table per dataset of the mixed run


def _trained_prompt_head(flip_p: float) -> tuple[PromptHead, TrainData]:
    train, val = vectors(132, 0, "t"), vectors(22, 1, "v")
    cfg = TrainConfig(epochs=40, batch_size=11, lr=1e-3, flip_p=flip_p, scale_p=0.0)
    res = fit("prompt", TINY, train, val, training=cfg, seed=0)
    return res.model, val


def test_a_reversed_prompt_reverses_the_ranking() -> None:
    model, val = _trained_prompt_head(flip_p=0.5)
    forward, _ = make_prompt(model, val, 10)
    backward, _ = make_prompt(model, val, 10, probe="invert")
    feats, valid, _ = val.batch(torch.arange(len(val)))
    with torch.no_grad():
        up = protocols.predict(model, feats, valid, prompt=forward).numpy()
        down = protocols.predict(model, feats, valid, prompt=backward).numpy()
    assert stats.spearmanr(up, val.targets).statistic > 0.5  # measured 0.66
    assert stats.spearmanr(down, val.targets).statistic < -0.3  # measured -0.46


def test_the_ablations_change_what_training_does(monkeypatch) -> None:
    calls = record_augment(monkeypatch)
    train, val = vectors(33, 0, "t"), vectors(22, 1, "v")
    runs = {}
    for name, changes in {"paper": {}, "flip": {"flip_p": 1.0, "scale_p": 0.0},
                          "code": {"scale_mode": "code"}, "size": {"prompt_size": 4},
                          "random": {"prompt_select": "random"}}.items():
        cfg = TrainConfig(epochs=2, batch_size=11, lr=1e-3).replace(**changes)
        runs[name] = fit("prompt", TINY, train, val, training=cfg, seed=0)
        assert calls[-1] == {"scale_p": cfg.scale_p, "flip_p": cfg.flip_p,
                             "scale_mode": cfg.scale_mode}
    assert runs["flip"].history != runs["paper"].history
    assert runs["size"].prompt.shape == (1, 4, 16)
    assert runs["random"].prompt_ids != runs["paper"].prompt_ids
    alone = PromptHead(PromptConfig(in_dim=12, feature="feature", use_prompt=False, **TINY)).eval()
    feats, valid, _ = val.batch(torch.arange(5))
    p1, p2 = torch.randn(1, 3, 16), torch.randn(1, 6, 16)
    with torch.no_grad():
        assert torch.equal(alone.predict(feats, p1, valid), alone.predict(feats, p2, valid))


def _release(tmp_path: Path) -> tuple[Path, PromptHead]:
    torch.manual_seed(0)
    monet = build_monet(random_init=True, **MONET_TINY)
    head = PromptHead(PromptConfig(in_dim=8, **{**TINY, "dim": 8})).eval()
    state = {_reference_key(k): v for k, v in monet.state_dict().items()}
    state.update({f"module.{k}": v for k, v in head.state_dict().items()})
    path = tmp_path / "best_model.pth.tar"
    torch.save({"state_dict": state, "prompt_num": 10}, path)
    return path, head


def _prompt_csv(folder: Path, scores: list[float]) -> Path:
    for i in range(len(scores)):
        Image.fromarray(_photo(20 + i)).save(folder / f"p{i}.png")
    path = folder / "prompt.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "score"])
        writer.writerows((f"p{i}.png", s) for i, s in enumerate(scores))
    return path


def test_the_released_checkpoint_scores_in_the_prompts_scale(tmp_path: Path) -> None:
    path, head = _release(tmp_path)
    loaded = load_release_head(path, heads=2)
    for a, b in zip(loaded.state_dict().values(), head.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert checkpoint_kind(path) == "promptiqa_release"
    scorer = Scorer.from_release(path, monet=MONET_TINY, heads=2)
    prompt_csv = _prompt_csv(tmp_path, [10.0, 35.0, 60.0, 85.0])
    images = []
    for i in range(3):
        Image.fromarray(_photo(40 + i)).save(tmp_path / f"x{i}.png")
        images.append(tmp_path / f"x{i}.png")
    prompt, used = scorer.prompt(prompt_csv)
    assert used == (10.0, 85.0)
    got = scorer.score(images, prompt=prompt, prompt_range=used)
    assert all(10.0 <= g.score <= 85.0 for g in got)  # the prompt's scale, not 0-1
    feats, valid = scorer.features(images)
    with torch.no_grad():
        want = head.predict(feats, prompt, valid).numpy()
    np.testing.assert_allclose([g.score for g in got], 10 + 75 * want, rtol=1e-5)
    wide, _ = scorer.prompt(prompt_csv, (0.0, 100.0))
    assert not torch.allclose(wide, prompt)  # --prompt-range changes the prompt


def test_iqa_score_takes_a_prompt_in_the_users_scale(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", "d", 24)
    run = tmp_path / "run"
    args = ["--head", "prompt", "--features", str(root / "f.zarr"), "--manifest",
            str(root / "manifest.csv"), "--split", str(root / "splits" / "split_00.json"),
            "--out", str(run), "--epochs", "2", "--batch-size", "4",
            *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])]
    assert CliRunner().invoke(train_main, args).exit_code == 0
    prompt_csv = _prompt_csv(tmp_path, [100.0, 300.0, 500.0, 700.0])
    res = CliRunner().invoke(score_main, [str(root / "d1.png"), str(root / "d2.png"),
                                          "--head", str(run / "run_00" / "model.pt"),
                                          "--prompt", str(prompt_csv), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["about"]["scale"] == [100.0, 700.0]
    assert all(100.0 <= s["score"] <= 700.0 for s in out["scores"])  # once: 0-6 of training
    res = CliRunner().invoke(score_main, [str(root / "d1.png"), "--head",
                                          str(run / "run_00" / "model.pt"), "--prompt",
                                          str(prompt_csv), "--prompt-features",
                                          str(root / "f.zarr")])
    assert res.exit_code == 0, res.output
    assert file_sha256(prompt_csv)  # the prompt file is left as it was
