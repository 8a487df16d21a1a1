"""DP-IQA student: teacher maps into a store, the student, its training, scoring and CLI.

Toy scale: 13 small PNGs, an SD-shaped store (four up-block maps per row, computed here
from the preprocessed pixels so the teacher's map is a function of the image), a tiny QFD
teacher saved as a real head checkpoint, and the tiny EfficientNet trunk.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny import write_labels
from click.testing import CliRunner
from PIL import Image

from cache.console import UsageProblem
from cache.create import create_store
from cache.layout import StoreLayout
from cache.store import ArraySpec, open_store
from extract.loader import VIEWS
from extract.weights import WeightsError
from heads.checkpoint import CheckpointError, TrainedOn, save_checkpoint
from heads.registry import build_head
from heads.split_data import denormalise, label_norm_of, normalise
from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestRow,
)
from pipelines.distill import teacher_maps
from pipelines.distill.cli import main as distill_main
from pipelines.distill.data import DistillDataset, split_parts
from pipelines.distill.preprocess import preprocess
from pipelines.distill.run import DistillConfig, _build, train_student
from pipelines.distill.student import (
    StudentCheckpointError,
    StudentConfig,
    build_student,
    load_student_model,
)
from pipelines.distill.teacher_maps import TeacherMapsConfig, write_teacher_maps
from pipelines.distill.train import milestones_for
from pipelines.score.cli import main as score_main
from pipelines.score.kinds import checkpoint_kind
from pipelines.score.student import load_student

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 64
PRE = {"input_size": [SIDE, SIDE], "resize": "squash_pil_bilinear", "input_range": [0, 1],
       "mean": None, "std": None}
SPECS = {"up0": (6, 2, 2), "up1": (6, 4, 4), "up2": (4, 8, 8), "up3": (4, 8, 8)}
TINY_QFD = {"width": 8, "se_reduction": 4, "reduce": (4, 8), "hidden": 8}
VIEWS_USED = ("identity", "hflip")
N = 13


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_module_fixtures():
    """The module fixtures train and write too: one thread, so bytes repeat exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _score(i: int) -> float:
    """Label of image ``i``: noisier images score lower."""
    return 10.0 - 0.7 * i


def _photo(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:40, 0:48]
    base = np.sin(xx / (3 + i % 4)) * np.cos(yy / 5) * 70 + 128 + 4 * i  # not symmetric
    img = np.stack([base, base * 0.7 + xx, 255 - base], axis=-1)
    img += rng.normal(0, 6 * i, img.shape)  # more noise, lower score
    return np.clip(img, 0, 255).astype(np.uint8)


def _features(x: torch.Tensor) -> dict[str, np.ndarray]:
    """SD-shaped maps of a preprocessed (3, 64, 64) image (a fixed function of the pixels)."""
    x4 = torch.cat([x, x.mean(0, keepdim=True)])[None]  # (1, 4, 64, 64)
    rough = (x4 - F.avg_pool2d(x4, 3, 1, 1)).abs()  # (1, 4, 64, 64)
    six = torch.cat([x4, rough[:, :2]], 1)  # (1, 6, 64, 64)
    out = {"up0": F.adaptive_avg_pool2d(six, 2), "up1": F.adaptive_avg_pool2d(six, 4),
           "up2": F.adaptive_avg_pool2d(rough, 8), "up3": F.adaptive_max_pool2d(x4, 8)}
    return {k: v[0].numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("student")
    ids = [f"img{i}.png" for i in range(N)]
    for i, name in enumerate(ids):
        Image.fromarray(_photo(i)).save(root / name)
    rows = tuple(ManifestRow(image=n, ref="", score=_score(i), group=f"g{i}")
                 for i, n in enumerate(ids))
    manifest = Manifest(DatasetInfo(name="toy", score_range=(0, 10)), rows)
    parts = (tuple(ids[:7]), tuple(ids[7:10]), tuple(ids[10:]))
    write_labels(root, manifest, parts, root / "split.json")
    source = _sd_store(root / "sd.zarr", root, ids)
    torch.manual_seed(0)
    teacher = build_head("qfd", SPECS, **TINY_QFD)
    save_checkpoint(root / "teacher.pt", teacher, head="qfd",
                    trained_on=TrainedOn(SPECS, source.fingerprint, label_norm_of(manifest)),
                    epoch=0)
    return {"root": root, "ids": ids, "source": source.url, "teacher": teacher.eval()}


def _sd_store(url: Path, root: Path, ids: list[str]):
    fields = {"backbone": "sd15_unet", "weights_sha256": "random-init", "preprocessing": PRE,
              "views": list(VIEWS_USED)}
    arrays = [ArraySpec(k, v) for k, v in SPECS.items()]
    store = create_store(str(url), StoreLayout(arrays, ids, VIEWS_USED, shard_size=4),
                         fingerprint_fields=fields, provenance={"dataset": "toy"})
    for k in range(store.n_shards):
        pixels = [VIEWS[VIEWS_USED[r % 2]](np.asarray(Image.open(root / ids[r // 2])))
                  for r in store.shard_rows(k)]
        feats = [_features(preprocess(np.ascontiguousarray(a), PRE)) for a in pixels]
        stacked = {n: np.stack([f[n] for f in feats]) for n in SPECS}
        sizes = np.full((len(pixels), 2), 8)
        failed = {1: "synthetic failure"} if k == 1 else None  # img4, hflip view
        store.writer.write_shard(k, stacked, sizes, sizes * 5, failed)
    return store


@pytest.fixture(scope="module")
def maps(world: dict) -> str:
    out = str(world["root"] / "teacher.zarr")
    write_teacher_maps(world["source"], world["root"] / "teacher.pt", out=out,
                       cfg=TeacherMapsConfig(batch_size=3), show_progress=False)
    return out


def _tiny(**kw: object) -> DistillConfig:
    base: dict = dict(trunk="efficientnet_tiny", epochs=10, batch_size=3, lr=2e-3, workers=0)
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(world: dict, maps: str) -> Path:
    root = world["root"]
    res = train_student(maps, root / "manifest.csv", root / "split.json", root / "run",
                        _tiny(workers=1, augment=True), show_progress=False)
    return res.checkpoint


# ------------------------------------------------------------------ the model


def test_b7_student_has_the_reference_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        model = build_student(StudentConfig())
    assert sum(p.numel() for p in model.parameters()) == 81_012_185
    assert sum(p.numel() for p in model.trunk.parameters()) == 63_786_960


def test_shapes_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_student(StudentConfig("efficientnet_tiny", map_channels=3, map_size=8))
    score, fmap = model(torch.rand(2, 3, 64, 64))
    assert score.shape == (2,) and fmap.shape == (2, 3, 8, 8) and (fmap >= 0).all()
    (score.sum() + fmap.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="did you mean efficientnet_b7"):
        StudentConfig("efficientnet_b8")


def test_trunk_weights_load_strictly_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    donor = build_student(StudentConfig("efficientnet_tiny", map_size=8))
    full = {f"features.{k}": v + 1 for k, v in donor.trunk.state_dict().items()}
    full["classifier.1.weight"] = torch.zeros(3, 32)
    torch.save(full, tmp_path / "tv.pth")
    cfg = DistillConfig(trunk="efficientnet_tiny", trunk_checkpoint=str(tmp_path / "tv.pth"))
    maps = type("Maps", (), {"arrays": {"map": ArraySpec("map", (8, 8, 8))}})()
    model, init = _build(cfg, maps)
    got = model.trunk.state_dict()
    assert all(torch.equal(got[k[9:]], v) for k, v in full.items() if k.startswith("features."))
    assert len(init) == 64
    del full["features.0.0.weight"]
    torch.save(full, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="missing keys: 0.0.weight"):
        _build(DistillConfig(trunk="efficientnet_tiny", trunk_checkpoint=str(tmp_path / "bad.pth")),
               maps)


# ------------------------------------------------------------------ teacher maps


def test_teacher_maps_equal_the_teacher_and_are_verified(world: dict, maps: str) -> None:
    store, source = open_store(maps), open_store(world["source"])
    assert store.image_ids == source.image_ids and store.views == source.views
    assert store.verify().ok and store.arrays["map"].shape == (8, 8, 8)
    rows = [0, 3, 17]
    feats = {k: torch.from_numpy(v) for k, v in source.read(rows).items()}
    with torch.no_grad():
        fmap, score = world["teacher"].feature_map(feats), world["teacher"](feats)
    got = store.read(rows)
    assert np.allclose(got["map"], fmap.numpy(), rtol=2e-3, atol=1e-4)  # stored as float16
    assert np.allclose(got["score"][:, 0], score.numpy(), rtol=1e-5, atol=1e-6)
    fields = store.fingerprint_fields
    assert fields["source_fingerprint"] == source.fingerprint
    assert len(fields["teacher"]["sha256"]) == 64
    assert store.failures == {"img4.png": "no source features: synthetic failure"}


def test_teacher_maps_resume_after_a_kill_fills_only_missing_shards(
    world: dict, maps: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, out = world["root"], str(world["root"] / "partial.zarr")
    args = (world["source"], root / "teacher.pt")
    cfg = TeacherMapsConfig(batch_size=3)  # as the fixture: the same batches, the same bytes
    with pytest.raises(UsageProblem, match="choose another --out"):
        write_teacher_maps(*args, out=maps, show_progress=False)
    real = teacher_maps._write_shard

    def killed_at_shard_1(source, store, k, data):
        if k == 1:
            raise KeyboardInterrupt
        real(source, store, k, data)

    monkeypatch.setattr(teacher_maps, "_write_shard", killed_at_shard_1)
    with pytest.raises(KeyboardInterrupt):
        write_teacher_maps(*args, out=out, cfg=cfg, show_progress=False)
    monkeypatch.undo()
    assert open_store(out).missing_shards() == [1, 2, 3]
    again = write_teacher_maps(*args, out=out, cfg=cfg, resume=True, show_progress=False)
    assert again.computed_shards == 3 and not again.reused
    assert write_teacher_maps(*args, out=out, cfg=cfg, resume=True, show_progress=False).reused
    got, want = open_store(out).read(range(2 * N), allow_unwritten=True), open_store(maps).read(
        range(2 * N), allow_unwritten=True)
    assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in ("map", "score"))


def test_teacher_must_fit_its_store_and_be_a_qfd(world: dict, tmp_path: Path) -> None:
    root = world["root"]
    save_checkpoint(tmp_path / "other.pt", world["teacher"], head="qfd",
                    trained_on=TrainedOn(SPECS, "0" * 64), epoch=0)
    with pytest.raises(CheckpointError, match="trained on store fingerprint"):
        write_teacher_maps(world["source"], tmp_path / "other.pt", out=str(tmp_path / "x.zarr"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UsageProblem, match="never cleared"):
        write_teacher_maps(world["source"], root / "teacher.pt", out=str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------ training


def _curves(run: Path) -> list[dict[str, float]]:
    with open(run / "curves.csv", newline="") as fh:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def test_student_trains_with_both_losses_decreasing(world: dict, trained: Path) -> None:
    curves = _curves(trained.parent)
    assert len(curves) == 10
    for term, factor in (("map_loss", 0.85), ("score_loss", 0.3)):
        late = (curves[-1][term] + curves[-2][term]) / 2
        assert late < factor * curves[0][term], (term, [c[term] for c in curves])
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "dpiqa_student"
    maps = open_store(str(world["root"] / "teacher.zarr"))
    assert ckpt["teacher"]["maps_fingerprint"] == maps.fingerprint
    assert ckpt["teacher"]["source_fingerprint"] == open_store(world["source"]).fingerprint
    assert ckpt["config"]["trunk"] == "efficientnet_tiny" and ckpt["preprocessing"] == PRE
    best = max(range(10), key=lambda e: curves[e]["val_srcc"])
    assert ckpt["epoch"] == best  # selected on validation
    metrics = json.loads((trained.parent / "metrics.json").read_text())
    assert set(metrics["student"]) == {"val", "test"} == set(metrics["teacher"])
    assert metrics["dropped"] == {"train": 1, "val": 0, "test": 0}  # img4 lost a view
    assert metrics["milestones"] == []  # "toy" has no paper preset


def test_the_report_reads_a_student_folder(world: dict, trained: Path) -> None:
    """iqa-eval takes the student's folder as a row: its test metrics, its trunk."""
    from pipelines.report.runs import read_runs
    from pipelines.report.tables import build_tables

    metrics = json.loads((trained.parent / "metrics.json").read_text())
    (run,) = read_runs(trained.parent)
    assert (run.head, run.backbone, run.dataset) == ("student", "efficientnet_tiny", "toy")
    assert run.settings["training.map_weight"] == 1.0
    row = build_tables([run], baselines=False)["toy"].rows[0]
    srcc = row.summary["srcc"]["median"]
    assert srcc == pytest.approx(metrics["student"]["test"]["srcc"], abs=1e-6)
    assert row.published is None  # the paper's rows are for EfficientNet-B7


def test_augmented_items_pair_flipped_pixels_with_the_flipped_teacher_row(
    world: dict, maps: str
) -> None:
    from iqadata.manifest import read_manifest, read_split

    root = world["root"]
    store = open_store(maps)
    manifest = read_manifest(root / "manifest.csv")
    parts = split_parts(store, manifest, read_split(root / "split.json"))
    data = DistillDataset(parts["train"], store, PRE, preload=False)
    plain, flipped = data[(1, 0)], data[(1, 1)]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    row = store.row_of(parts["train"].ids[1], "hflip")
    assert np.array_equal(flipped["map"].numpy(), store.read([row])["map"][0])
    assert not torch.equal(flipped["map"], plain["map"].flip(-1))  # not a flipped map
    want = normalise([_score(1)], label_norm_of(manifest))
    assert float(plain["target"]) == pytest.approx(float(want[0]))


def test_resume_gives_the_same_student_as_one_run(world: dict, maps: str, tmp_path: Path) -> None:
    root = world["root"]
    args = (maps, root / "manifest.csv", root / "split.json")
    whole = train_student(*args, tmp_path / "a", _tiny(epochs=3), show_progress=False)
    train_student(*args, tmp_path / "b", _tiny(epochs=2), show_progress=False)
    with pytest.raises(UsageProblem, match="pass --resume"):
        train_student(*args, tmp_path / "b", _tiny(epochs=3), show_progress=False)
    with pytest.raises(UsageProblem, match="other settings"):
        train_student(*args, tmp_path / "b", _tiny(epochs=3, lr=5e-4), resume=True,
                      show_progress=False)
    resumed = train_student(*args, tmp_path / "b", _tiny(epochs=3), resume=True,
                            show_progress=False)
    a, b = (torch.load(p.parent / "last.pt", weights_only=True)["model"]
            for p in (whole.checkpoint, resumed.checkpoint))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_srcc"] for r in whole.history] == [r["val_srcc"] for r in resumed.history]


# ------------------------------------------------------------------ scoring


def test_scoring_from_a_student_checkpoint(world: dict, trained: Path) -> None:
    paths = [world["root"] / i for i in world["ids"][:5]]
    scorer = load_student(trained)
    got = scorer.score(paths, batch_size=2)
    model, ckpt = load_student_model(trained)
    x = torch.stack([preprocess(np.asarray(Image.open(p).convert("RGB")), PRE) for p in paths])
    with torch.no_grad():
        want = model(x)[0]
    assert [g.image for g in got] == [str(p) for p in paths]
    assert np.allclose([g.quality for g in got], want.numpy(), atol=1e-6)
    assert got[0].score == pytest.approx(denormalise(got[0].quality, ckpt["label_norm"]))
    assert got[0].score == pytest.approx(10 * got[0].quality)
    assert checkpoint_kind(trained) == "dpiqa_student"
    assert checkpoint_kind(world["root"] / "teacher.pt") == "head"
    with pytest.raises(StudentCheckpointError, match="a head checkpoint"):
        load_student(world["root"] / "teacher.pt")


def test_iqa_score_takes_a_student_checkpoint(world: dict, trained: Path) -> None:
    paths = [str(world["root"] / i) for i in world["ids"][:3]]
    args = [*paths, "--head", str(trained), "--batch-size", "2", "--json"]
    res = CliRunner().invoke(score_main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["about"] == {"head": "dpiqa_student", "mode": "no-reference"}
    want = load_student(trained).score(paths, batch_size=2)
    assert [(r["image"], r["score"]) for r in out["scores"]] == [(w.image, w.score) for w in want]


def test_the_papers_milestones_apply_to_the_importers_dataset_names() -> None:
    """Manifests are named by importer key (``livec``, not the reference's ``clive``)."""
    cfg = DistillConfig()
    got = {d: milestones_for(cfg, d) for d in ("livec", "koniq10k", "flive", "spaq", "live")}
    assert got == {"livec": (10, 25), "koniq10k": (5,), "flive": (4,), "spaq": (6,), "live": ()}
    assert milestones_for(cfg, "CLIVE") == (10, 25)  # an alias of published.yaml
    assert milestones_for(DistillConfig(milestones=(3,)), "livec") == (3,)


def test_denormalise_inverts_normalise() -> None:
    norm = {"low": 1.0, "high": 5.0, "lower_better": True}
    q = float(normalise([2.0], norm)[0])
    assert q == pytest.approx(0.75) and denormalise(q, norm) == pytest.approx(2.0)
    assert denormalise(0.3, {}) == 0.3


# ------------------------------------------------------------------ CLI


def test_cli_chain_and_one_line_errors(world: dict, tmp_path: Path) -> None:
    root, runner = world["root"], CliRunner()
    maps = str(tmp_path / "maps.zarr")
    teacher = str(root / "teacher.pt")
    res = runner.invoke(
        distill_main,
        ["teacher-maps", "--features", world["source"], "--teacher", teacher, "--out", maps],
    )
    assert res.exit_code == 0, res.output
    assert f"{2 * N} rows" in res.output and "1 failed, verified" in res.output
    def train(out: Path, *extra: str, trunk: str = "efficientnet_tiny"):
        args = ["train", "--maps", maps, "--manifest", str(root / "manifest.csv"), "--split",
                str(root / "split.json"), "--trunk", trunk, "--epochs", "2", "--batch-size", "4",
                "--workers", "0", "--no-progress", "--out", str(out), *extra]
        return runner.invoke(distill_main, args)

    res = train(tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert checkpoint_kind(tmp_path / "run" / "model.pt") == "dpiqa_student"
    assert '"student"' in res.output
    bad = runner.invoke(distill_main, ["teacher-maps", "--features", world["source"],
                                       "--teacher", str(tmp_path / "run" / "model.pt"),
                                       "--out", str(tmp_path / "m2.zarr")])
    assert bad.exit_code == 1 and "not a head checkpoint" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    bad = train(tmp_path / "r2", trunk="efficientnet_b8")
    assert bad.exit_code == 2 and "did you mean efficientnet_b7" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1
    bad = train(tmp_path / "r3", "--milestones", "x")
    assert bad.exit_code == 2 and "--milestones" in bad.output
    bad = train(root)
    assert bad.exit_code == 2 and "never cleared" in bad.output
