"""Training loop: improvement, determinism, validation-only selection, checkpoints, resume."""

from __future__ import annotations

import csv
import inspect

import pytest
import torch
from _tiny import PROMPT_TINY as PROMPT
from _tiny import vectors

import heads.train as train_mod
from heads.checkpoint import CheckpointError, load_head, read_checkpoint, save_atomic
from heads.evaluate import evaluate, make_prompt
from heads.optim import TrainConfig, TrainConfigError
from heads.part_tensors import TrainData, TrainDataError
from heads.registry import build_head
from heads.train import FitOptions, fit

SFEM = {"width": 8, "scales": (1, 2), "pool_size": 4}


# Small models on 2 shared cores: one thread avoids oversubscription.
pytestmark = pytest.mark.usefixtures("one_thread")


def _maps(n: int, seed: int, name: str, *, views: int = 1, refs: bool = False) -> TrainData:
    """Maps (4, 8, 8): quality = amplitude of a zero-mean checkerboard in channel 0, plus noise.

    Some rows are padded (valid 6 x 8).
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=gen)
    x = torch.randn(n, views, 4, 8, 8, generator=gen)
    checker = (torch.arange(8).view(8, 1) + torch.arange(8)) % 2 * 2.0 - 1  # (8, 8) of +-1
    x[:, :, 0] += 2 * y.view(n, 1, 1, 1) * checker
    valid = torch.tensor([[8, 8] if i % 3 else [6, 8] for i in range(n)])
    ref = {"embed": 0.3 * torch.randn(n, views, 4, 8, 8, generator=gen)} if refs else None
    ids = [f"{name}/{i:03d}.png" for i in range(n)]
    return TrainData({"embed": x}, y, ids, valid, ref, name=name)


def _vectors(n: int, seed: int, name: str) -> TrainData:
    return vectors(n, seed, name, views=2, noise=0.3)


def test_fit_improves_val_srcc_and_writes_curves(tmp_path) -> None:
    train, val = _maps(48, 0, "train"), _maps(16, 1, "val")
    torch.manual_seed(0)
    before = evaluate(build_head("sfem_nr", train.feature_specs, **SFEM), val)["metrics"]["srcc"]
    res = fit("sfem_nr", SFEM, train, val, training=TrainConfig(epochs=6, batch_size=8, lr=3e-3),
              seed=0, options=FitOptions(out_dir=tmp_path))
    srccs = [row["val_srcc"] for row in res.history]
    assert res.val_metrics[0]["srcc"] == pytest.approx(max(srccs))
    assert res.val_metrics[0]["srcc"] > max(before, 0.0) + 0.3  # 0.14 untrained -> 0.78
    assert res.val_metrics[0]["srcc"] > 0.7
    assert res.best_epoch == srccs.index(max(srccs))
    assert "validation" in res.selection
    with open(tmp_path / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "train_loss", "val_srcc", "val_plcc", "lr"]
    assert [int(r["epoch"]) for r in rows] == list(range(6))


def test_selection_never_sees_test(monkeypatch) -> None:
    assert not any("test" in p for p in inspect.signature(fit).parameters)
    seen = []
    real = train_mod.evaluate

    def spy(model, data, **kw):
        seen.append(data.name)
        return real(model, data, **kw)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    fit(
        "sfem_nr",
        SFEM,
        _maps(16, 0, "train"),
        _maps(8, 1, "val"),
        training=TrainConfig(epochs=2, batch_size=8, lr=1e-3),
        seed=0,
    )
    assert seen and set(seen) == {"val"}


def test_deterministic_for_a_seed() -> None:
    train, val = _maps(16, 0, "train", views=2), _maps(8, 1, "val", views=2)
    kw = {"training": TrainConfig(epochs=2, batch_size=4, lr=1e-3)}
    a = fit("sfem_nr", SFEM, train, val, seed=3, **kw)
    b = fit("sfem_nr", SFEM, train, val, seed=3, **kw)
    c = fit("sfem_nr", SFEM, train, val, seed=4, **kw)
    assert a.history == b.history
    assert a.history != c.history


def test_empty_validation_keeps_the_last_epoch() -> None:
    empty = TrainData({"embed": torch.zeros(0, 1, 4, 8, 8)}, torch.zeros(0), [], name="val")
    res = fit("sfem_nr", SFEM, _maps(16, 0, "train"), empty,
              training=TrainConfig(epochs=2, batch_size=8, lr=1e-3), seed=0)
    assert res.best_epoch == 1 and "last epoch" in res.selection and res.val_metrics == [{}]


def test_checkpoint_round_trip_and_fingerprint_refusal(tmp_path) -> None:
    train, val = _maps(16, 0, "train", refs=True), _maps(8, 1, "val", refs=True)
    res = fit(
        "sfem_fr",
        SFEM,
        train,
        val,
        training=TrainConfig(epochs=2, batch_size=8, lr=1e-3),
        seed=0,
        options=FitOptions(
            out_dir=tmp_path, store_fingerprint="abc123", label_norm={"low": 1, "high": 5}
        ),
    )
    model, ckpt = load_head(tmp_path / "model.pt", store_fingerprint="abc123")
    assert ckpt["head"] == "sfem_fr" and ckpt["label_norm"] == {"low": 1, "high": 5}
    assert ckpt["epoch"] == res.best_epoch and ckpt["feature_specs"] == {"embed": [4, 8, 8]}
    assert read_checkpoint(tmp_path / "last.pt")["optimizer"] is not None
    same = evaluate(model, val)["pred"]
    assert torch.allclose(
        torch.from_numpy(same), torch.from_numpy(evaluate(res.model, val)["pred"])
    )
    with pytest.raises(CheckpointError, match="'abc123'.*'zzz999'"):
        load_head(tmp_path / "model.pt", store_fingerprint="zzz999")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_checkpoint(tmp_path / "junk.pt")


def test_a_checkpoint_s_bytes_depend_on_its_content_only(tmp_path) -> None:
    """Not on its file name or the process: a rerun DVC stage keeps its output hash."""
    payload = {"head": "sfem_fr", "state_dict": {"w": torch.arange(6.0).view(2, 3)}}
    a, b = save_atomic(tmp_path / "model.pt", payload), save_atomic(tmp_path / "last.pt", payload)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model.pt"]


def test_resume_continues_exactly(tmp_path) -> None:
    train, val = _maps(16, 0, "train", views=2), _maps(8, 1, "val")
    three, two = (TrainConfig(epochs=n, batch_size=4, lr=1e-3) for n in (3, 2))

    def out(name: str, **kw) -> FitOptions:
        return FitOptions(out_dir=tmp_path / name, **{"store_fingerprint": "fp", **kw})

    straight = fit("sfem_nr", SFEM, train, val, training=three, seed=1, options=out("a"))
    fit("sfem_nr", SFEM, train, val, training=two, seed=1, options=out("b"))
    resumed = fit("sfem_nr", SFEM, train, val, training=three, seed=1,
                  options=out("b", resume=True))
    assert resumed.history == straight.history
    with pytest.raises(CheckpointError, match="fingerprint"):
        fit(
            "sfem_nr",
            SFEM,
            train,
            val,
            training=three,
            seed=1,
            options=out("b", resume=True, store_fingerprint="other"),
        )


def test_prompt_head_trains_in_groups_and_evaluates_with_a_prompt() -> None:
    train, val = _vectors(40, 0, "train"), _vectors(16, 1, "val")
    cfg = TrainConfig(epochs=4, batch_size=10, lr=1e-3, prompt_size=6)
    res = fit("prompt", PROMPT, train, val, training=cfg, seed=0)
    assert res.prompt is not None and res.prompt.shape == (1, 6, 16)
    assert len(res.prompt_ids[0]) == 6 and set(res.prompt_ids[0]) <= set(train.ids)
    prompt, _ = make_prompt(res.model, train, 6)
    assert evaluate(res.model, val, prompt=prompt)["metrics"]["srcc"] == pytest.approx(
        res.val_metrics[0]["srcc"]
    )
    with pytest.raises(ValueError, match="prompt"):
        evaluate(res.model, val)


def test_qfd_and_fr_need_the_right_data() -> None:
    data = _maps(8, 0, "train")
    res = fit(
        "qfd",
        {"width": 8, "se_reduction": 4, "reduce": (2,), "hidden": 8},
        data,
        data,
        training=TrainConfig(epochs=1, batch_size=4, lr=1e-3),
        seed=0,
    )
    assert len(res.history) == 1
    with pytest.raises(ValueError, match="no reference features"):
        fit("sfem_fr", SFEM, data, data, training=TrainConfig(epochs=1, batch_size=4, lr=1e-3),
            seed=0)


def test_train_data_validation() -> None:
    with pytest.raises(TrainDataError, match="targets"):
        TrainData({"f": torch.zeros(3, 1, 2)}, torch.zeros(2), ["a", "b", "c"])
    with pytest.raises(TrainDataError, match="'f'"):
        TrainData({"f": torch.zeros(3)}, torch.zeros(3), ["a", "b", "c"])
    with pytest.raises(TrainDataError, match="view count"):
        TrainData(
            {"f": torch.zeros(2, 1, 2), "g": torch.zeros(2, 2, 2)}, torch.zeros(2), ["a", "b"]
        )


def test_a_weight_average_is_what_is_validated_selected_saved_and_resumed(tmp_path) -> None:
    """``ema``: the moving average of the weights is validated and saved as model.pt (the
    raw weights, with the average, go to last.pt), and a resumed run continues it exactly."""
    train, val = _maps(24, 0, "train", views=2), _maps(8, 1, "val")
    three, two = (TrainConfig(epochs=n, batch_size=4, lr=1e-3, ema=0.9) for n in (3, 2))

    def out(name: str, resume: bool = False) -> FitOptions:
        return FitOptions(out_dir=tmp_path / name, store_fingerprint="fp", resume=resume)

    plain = fit("sfem_nr", SFEM, train, val, training=TrainConfig(epochs=3, batch_size=4,
                lr=1e-3), seed=1, options=out("plain"))
    straight = fit("sfem_nr", SFEM, train, val, training=three, seed=1, options=out("a"))
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in plain.history]
    assert [r["val_srcc"] for r in straight.history] != [r["val_srcc"] for r in plain.history]
    saved, _ = load_head(tmp_path / "a" / "model.pt", store_fingerprint="fp")
    assert evaluate(saved, val)["metrics"]["srcc"] == pytest.approx(
        straight.history[straight.best_epoch]["val_srcc"])
    raw = read_checkpoint(tmp_path / "a" / "last.pt")
    averaged = read_checkpoint(tmp_path / "a" / "model.pt")["model"]
    assert raw["extra"]["ema"] is not None
    assert not torch.equal(raw["model"]["sfem.stem.0.weight"], averaged["sfem.stem.0.weight"])
    fit("sfem_nr", SFEM, train, val, training=two, seed=1, options=out("b"))
    resumed = fit("sfem_nr", SFEM, train, val, training=three, seed=1,
                  options=out("b", resume=True))
    assert resumed.history == straight.history
    best_a, best_b = (read_checkpoint(tmp_path / d / "model.pt") for d in ("a", "b"))
    assert best_a["extra"]["best_epoch"] == best_b["extra"]["best_epoch"]
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])
    with pytest.raises(TrainConfigError, match="ema"):
        TrainConfig(ema=1.0)


def test_the_weight_average_warms_up_so_a_short_run_averages_its_recent_weights() -> None:
    """With ``ema`` 0.99 and a plain average, the weights of the first step keep 0.99**n of
    the average after n steps (41 % after the 90 steps of a 6-epoch run on 467 images):
    a short run saved mostly its untrained start. Warmed up, the decay after n updates is
    ``min(0.99, (1 + n) / (10 + n))``."""
    model = torch.nn.Linear(1, 1, bias=False)
    average = train_mod._average(model, TrainConfig(ema=0.99))
    assert average is not None
    with torch.no_grad():
        model.weight.fill_(0.0)
        average.update_parameters(model)  # the first update copies the weights
        expected = 0.0
        for n in range(1, 91):
            model.weight.fill_(1.0)  # a trained weight, far from the start
            average.update_parameters(model)
            decay = min(0.99, (1 + n) / (10 + n))
            expected = decay * expected + (1 - decay) * 1.0
    got = float(average.module.weight)
    assert got == pytest.approx(expected, rel=1e-5)
    assert got > 0.95  # the plain average: 1 - 0.99**90 = 0.59
    assert train_mod.ema_decay(0.99, 1) == pytest.approx(2 / 11)
    assert train_mod.ema_decay(0.99, 10_000) == 0.99
