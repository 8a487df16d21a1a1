"""iqa-eval and pipelines.report.write: tables, published numbers, figures, output safety.

Run folders are written directly in the ``iqa-train-head`` layout (metrics.json schema 2,
predictions.csv with raw-scale columns, run_NN/curves.csv), so these tests need no
training; one end-to-end test trains a real head and reports it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageFilter

from iqadata.manifest import DatasetInfo, Manifest, ManifestRow, Split, write_manifest, write_split
from pipelines.report.cli import main as eval_main
from pipelines.report.published import backbone_family, canonical_dataset, load_published, lookup
from pipelines.report.runs import LabelScale, read_run

NOISES = ("noise", "blur")


def _image(seed: int, kind: str = "", level: int = 0) -> np.ndarray:
    """A smooth test pattern; ``noise`` adds Gaussian noise, ``blur`` a Gaussian blur."""
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([np.sin(xx / (3 + seed)), np.cos(yy / 4), np.sin((xx + yy) / 5)], -1)
    img = img * 90 + 128 + 20 * np.sin(xx * yy / (7 + seed))[..., None]
    if kind == "noise":
        img = img + np.random.default_rng(seed).normal(0, 6 * level, img.shape)
    out = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    if kind == "blur":
        out = out.filter(ImageFilter.GaussianBlur(0.6 * level))
    return np.asarray(out)


def _dataset(root: Path, name: str, lower_better: bool = False,
             score_range: tuple[float, float] = (1.0, 5.0)) -> Path:
    """6 references x 2 types x 4 levels; quality falls with the noise level."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    low, high = score_range
    for r in range(6):
        Image.fromarray(_image(r)).save(root / f"ref{r}.png")
        for kind in NOISES:
            for level in range(1, 5):
                image = f"{kind}{r}_{level}.png"
                Image.fromarray(_image(r, kind, level)).save(root / image)
                quality = 1 - level / 5 + 0.01 * r
                score = high - quality * (high - low) if lower_better else \
                    low + quality * (high - low)
                rows.append(ManifestRow(image=image, ref=f"ref{r}.png", score=score,
                                        group=f"ref{r}", distortion=kind))
    info = DatasetInfo(name, "DMOS" if lower_better else "MOS", lower_better, score_range)
    write_manifest(Manifest(info, tuple(rows)), root / "manifest.csv")
    for k in range(3):  # content-disjoint: test = references 2k, 2k+1
        test = [r.image for r in rows if r.group in (f"ref{2 * k}", f"ref{2 * k + 1}")]
        rest = [r.image for r in rows if r.image not in test]
        write_split(Split(train=tuple(rest[8:]), val=tuple(rest[:8]), test=tuple(test)),
                    root / "splits" / f"split_{k:02d}.json")
    return root / "manifest.csv"


def _write_run(out: Path, manifest_path: Path, head: str, backbone: str, *,
               noise: float = 0.05, constant: float | None = None, repeats: int = 3,
               protocol: str | None = None, with_val: bool = True,
               head_config: dict | None = None) -> Path:
    """A run folder in the iqa-train-head layout, predictions = target + noise."""
    from iqadata.manifest import read_manifest, read_split

    manifest = read_manifest(manifest_path)
    info, rows = manifest.info, manifest.by_id()
    scale = LabelScale(*info.score_range, info.lower_better, info.score_kind)
    rng = np.random.default_rng(len(head) + len(backbone))
    records, preds = [], []
    for k in range(repeats):
        split_path = manifest_path.parent / "splits" / f"split_{k:02d}.json"
        ids = read_split(split_path).test
        target = scale.to_target(np.array([rows[i].score for i in ids]))
        pred = np.full(len(ids), constant) if constant is not None else \
            target + rng.normal(0, noise, len(ids))
        preds += [{"run": k, "id": i, "part": "test", "distortion": rows[i].distortion,
                   "score": rows[i].score, "target": t, "prediction": p,
                   "predicted_score": float(scale.to_raw(np.array(p)))}
                  for i, t, p in zip(ids, target, pred, strict=True)]
        run_dir = out / f"run_{k:02d}"
        run_dir.mkdir(parents=True)
        epochs = np.arange(6)
        with open(run_dir / "curves.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "train_loss", "val_srcc", "val_plcc", "lr"])
            for e in epochs:
                val = f"{0.5 + 0.08 * e - 0.01 * k:.4f}" if with_val else ""
                w.writerow([e, 0.3 / (1 + e), val, val, 1e-3])
        records.append({"run": k, "dir": f"run_{k:02d}", "split": str(split_path), "seed": k,
                        "best_epoch": 4, "selection": "val_srcc", "dropped_unwritten": 0,
                        "test": {"srcc": 0.0, "plcc": 0.0, "krcc": 0.0, "rmse": 0.0}})
    metrics = {
        "schema": 2, "head": head, "backbone": backbone, "dataset": info.name,
        "features": f"features/{info.name}/{backbone}.zarr", "fingerprint": "f" * 16,
        "manifest": str(manifest_path), "manifest_sha256": "", "score_kind": info.score_kind,
        "label_norm": {"method": "score_range", "low": info.score_range[0],
                       "high": info.score_range[1], "lower_better": info.lower_better},
        "training": {"epochs": 6, "lr": 1e-3, "batch_size": 16}, "runs": records,
    }
    if protocol:
        metrics["protocol"] = protocol
    if head_config is not None:
        metrics["head_config"] = head_config
    return _write_outputs(out, "train-run", metrics, preds)


def _write_outputs(out: Path, kind: str, metrics: dict, preds: list[dict]) -> Path:
    """An output folder's metrics.json, kind marker and predictions.csv (``preds``' keys)."""
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / ".iqa-output.json").write_text(json.dumps({"kind": kind}))
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(preds[0]))
        w.writeheader()
        w.writerows(preds)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An FR dataset 'tiny' with a good sfem_fr run and a collapsed prompt run, and the
    report of both (baselines and PNG figures)."""
    root = tmp_path_factory.mktemp("tiny")
    manifest = _dataset(root / "data" / "tiny", "tiny")
    fr = _write_run(root / "runs" / "fr", manifest, "sfem_fr", "nss")
    collapsed = _write_run(root / "runs" / "prompt", manifest, "prompt", "nss", constant=0.75)
    res = _eval([str(fr), str(collapsed), "--out", str(root / "reports")])
    assert res.exit_code == 0, res.output
    return {"manifest": manifest, "fr": fr, "collapsed": collapsed, "report": root / "reports"}


def _eval(args: list[str]) -> Any:
    return CliRunner().invoke(eval_main, args)


def _md_rows(md: str) -> list[list[str]]:
    """Cells of every Markdown table row, stripped (separator rows left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("|") and "---" not in line]


def _table(out: Path, dataset: str) -> dict:
    return json.loads((out / "table.json").read_text())["datasets"][dataset]


def test_table_heads_first_baselines_from_run_records(tiny: dict) -> None:
    out = tiny["report"]
    rows = _table(out, "tiny")["rows"]
    assert [(r["method"], r["group"]) for r in rows] == [
        ("sfem_fr", "head"), ("prompt", "head"), ("psnr", "baseline"), ("ssim", "baseline")]
    # each split's test part: 2 references x 2 types x 4 levels; quality falls with the level
    psnr = rows[2]["test"]
    assert psnr["srcc"]["median"] > 0.5 and psnr["srcc"]["n"] == 3
    assert "rmse" not in psnr  # PSNR is not on the dataset's scale
    md = (out / "table.md").read_text()
    firsts = [r[0] for r in _md_rows(md)]
    assert firsts[:6] == ["method", "sfem_fr", "prompt", "*baselines*", "psnr", "ssim"]
    cells = {r[0]: r for r in _md_rows(md)}
    assert cells["prompt"][2] == "0.000 ± 0.000"  # a collapsed head reads no correlation
    assert cells["sfem_fr"][2].count(".") == 2 and len(cells["sfem_fr"][2]) == 13


def test_metrics_recomputed_from_predictions(tiny: dict) -> None:
    from heads.metrics import compute_metrics

    row = _table(tiny["report"], "tiny")["rows"][0]
    with open(tiny["fr"] / "predictions.csv", newline="") as fh:
        preds = list(csv.DictReader(fh))
    srcc, rmse = [], []
    for k in range(3):
        part = [p for p in preds if p["run"] == str(k)]
        m = compute_metrics([float(p["prediction"]) for p in part],
                            [float(p["target"]) for p in part])
        srcc.append(m["srcc"])
        rmse.append(np.sqrt(np.mean([(float(p["predicted_score"]) - float(p["score"])) ** 2
                                     for p in part])))
    assert row["test"]["srcc"]["median"] == pytest.approx(np.median(srcc), abs=1e-4)
    assert row["test"]["srcc"]["std"] == pytest.approx(np.std(srcc), abs=1e-4)
    # RMSE on the 1-5 scale: 4x the normalised one, not the normalised one
    assert row["test"]["rmse"]["median"] == pytest.approx(np.median(rmse), abs=1e-4)
    assert [round(v["srcc"], 4) for v in row["per_run"]] == [round(v, 4) for v in srcc]


def test_rmse_on_dmos_scale_and_orientation(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data", "dm", lower_better=True, score_range=(0, 100))
    run = _write_run(tmp_path / "run", manifest, "sfem_fr", "nss", noise=0.02)
    two = _write_run(tmp_path / "two", manifest, "sfem_nr", "nss", repeats=2)
    out = tmp_path / "r"
    res = _eval([str(run), str(two), "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    rows = [r for r in _table(out, "dm")["rows"] if r["method"] != "sfem_nr"]
    assert rows[1]["runs"] == 3  # baselines over the union of the runs' split files
    assert any("different split files" in n for n in _table(out, "dm")["notes"])
    assert rows[0]["test"]["srcc"]["median"] > 0.9  # DMOS flipped: still positive
    assert 0.5 < rows[0]["test"]["rmse"]["median"] < 5  # about 2 points on 0-100
    assert rows[1]["srcc_per_distortion"]["noise"]["srcc"] > 0.9  # PSNR, DMOS flipped
    assert "RMSE (DMOS 0-100)" in (out / "table.md").read_text()


def test_logistic_flag_adds_a_column(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = _eval([str(tiny["fr"]), "--out", str(out), "--logistic", "4", "--no-baselines",
                 "--no-plots"])
    assert res.exit_code == 0, res.output
    test = _table(out, "tiny")["rows"][0]["test"]
    assert test["plcc_logistic"]["median"] >= test["plcc"]["median"] - 0.02
    assert "PLCC (4-p. logistic)" in (out / "table.md").read_text()
    bad = _eval([str(tiny["fr"]), "--out", str(tmp_path / "x"), "--logistic", "3"])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


def test_per_distortion_srcc(tiny: dict) -> None:
    out = tiny["report"]
    rows = _table(out, "tiny")["rows"]
    per = rows[0]["srcc_per_distortion"]
    assert set(per) == set(NOISES) and per["noise"]["n"] == 8 and per["noise"]["runs"] == 3
    assert rows[2]["srcc_per_distortion"]["noise"]["srcc"] > 0.8  # psnr within one type
    md = (out / "table.md").read_text()
    types = md.split("### SRCC per distortion type")[1]
    assert [r[:2] for r in _md_rows(types)] == [["distortion", "n"], ["blur", "8"],
                                                ["noise", "8"]]


def test_latex_booktabs_groups_and_escaping(tiny: dict) -> None:
    tex = (tiny["report"] / "table.tex").read_text()
    main = tex.split(r"\end{table}")[0]
    assert r"\begin{tabular}{llcccc}" in main  # names left, numbers centred
    assert main.count(r"\toprule") == 1 and main.count(r"\bottomrule") == 1
    assert main.count(r"\midrule") == 2  # below the header, and heads | baselines
    assert r"sfem\_fr" in main and "sfem_fr" not in main.replace(r"sfem\_fr", "")
    lines = main.splitlines()
    cut = [i for i, line in enumerate(lines) if line == r"\midrule"][1]
    assert lines[cut - 1].lstrip().startswith("prompt") and "psnr" in lines[cut + 1]
    assert r"\label{tab:iqa-tiny-types}" in tex


def test_flat_metrics_for_dvc(tiny: dict) -> None:
    flat = json.loads((tiny["report"] / "metrics.json").read_text())
    assert set(flat) == {"tiny"}
    assert set(flat["tiny"]) == {"sfem_fr", "prompt", "psnr", "ssim"}
    assert set(flat["tiny"]["sfem_fr"]) == {"srcc", "plcc"}
    assert all(len(repr(v).split(".")[-1]) <= 4 for v in flat["tiny"]["sfem_fr"].values())


def test_same_head_two_backbones_keys(tiny: dict, tmp_path: Path) -> None:
    other = _write_run(tmp_path / "other", tiny["manifest"], "sfem_fr", "nss_ml")
    out = tmp_path / "r"
    assert _eval([str(tiny["fr"]), str(other), "--out", str(out), "--no-baselines",
                  "--no-plots"]).exit_code == 0
    assert set(json.loads((out / "metrics.json").read_text())["tiny"]) == {
        "sfem_fr@nss", "sfem_fr@nss_ml"}


def test_published_numbers_beside_ours(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data", "live", lower_better=True, score_range=(0, 100))
    fr = _write_run(tmp_path / "fr", manifest, "sfem_fr", "sam_vit_b")
    mixed = _write_run(tmp_path / "mix", manifest, "prompt", "monet", protocol="mixed")
    out = tmp_path / "r"
    res = _eval([str(fr), str(mixed), "--out", str(out), "--no-plots"])
    assert res.exit_code == 0, res.output
    data = _table(out, "live")
    pubs = {r["method"]: r["published"] for r in data["rows"]}
    assert pubs["sfem_fr"]["srcc"] == 0.996 and pubs["sfem_fr"]["table"] == "Table 1"
    assert pubs["sfem_fr"]["page"] == 5
    assert pubs["prompt"]["srcc"] == 0.9359  # PromptIQA's mixed-training row
    assert pubs["psnr"]["srcc"] == 0.873 and pubs["ssim"]["plcc"] == 0.937
    best = {b["method"]: b for b in data["published_baselines"]}
    assert best["ISPL-FR"]["srcc"] == 0.970
    cells = {r[0]: r[-3:] for r in _md_rows((out / "table.md").read_text())}
    assert cells["sfem_fr"] == ["0.996", "0.997", "SAM-IQA Table 1, p. 5"]
    assert cells["prompt (mixed)"] == ["0.9359", "0.9344", "PromptIQA Table 2, p. 10"]
    assert cells["ISPL-FR"] == ["0.970", "0.978", "SAM-IQA Table 1, p. 5"]  # digits kept
    assert "*best baseline in the paper*" in cells


# figures the issues quote, each checked against the paper text: (paper table row, dataset,
# method, backbone, protocol, srcc, plcc)
QUOTED = [
    ("sfem_fr", "sam_vit_h", "per_dataset", {"live": (0.996, 0.997), "csiq": (0.968, 0.968),
                                              "tid2013": (0.954, 0.960),
                                              "kadid10k": (0.945, 0.947)}),
    ("sfem_nr", "sam_vit_h", "per_dataset", {"live": (0.994, 0.995), "csiq": (0.893, 0.899),
                                              "tid2013": (0.879, 0.893),
                                              "kadid10k": (0.815, 0.814)}),
    ("qfd", "sd15_unet", "per_dataset", {"livec": (0.849, 0.884), "koniq10k": (0.908, 0.929)}),
    ("linear", "sd15_unet", "per_dataset", {"livec": (0.817, 0.869),
                                             "koniq10k": (0.908, 0.929)}),
    # PromptIQA per dataset: Table 6 'w/o mixed training' (PLCC only), not MoNet's Table 2 row
    ("prompt", "monet", "per_dataset", {
        "tid2013": (None, 0.8849), "spaq": (None, 0.9228), "gfiqa20k": (None, 0.9696),
        "uwiqa": (None, 0.8781)}),
    ("prompt", "monet", "mixed", {
        "live": (0.9359, 0.9344), "koniq10k": (0.9287, 0.9430), "gfiqa20k": (0.9698, 0.9702),
        "agiqa3k": (0.8509, 0.9013), "aigciqa2023": (0.8508, 0.8743),
        "uwiqa": (0.8766, 0.8839)}),
]


@pytest.mark.parametrize(("method", "backbone", "protocol", "figures"), QUOTED)
def test_published_file_holds_the_quoted_figures(method: str, backbone: str, protocol: str,
                                                 figures: dict) -> None:
    for dataset, (srcc, plcc) in figures.items():
        pub = lookup(method, backbone, dataset, protocol)
        assert pub is not None, dataset
        assert (pub.score.srcc, pub.score.plcc) == (srcc, plcc), dataset
        assert pub.table and (pub.page or pub.where)


def test_published_lookup_rules() -> None:
    assert backbone_family("sam_vit_h") == backbone_family("sam_vit_b") == "sam"
    assert canonical_dataset("KADID-10k") == "kadid10k" and canonical_dataset("CLIVE") == "livec"
    assert lookup("sfem_fr", "nss", "live") is None  # no paper used nss
    assert lookup("qfd", "sd15_unet", "spaq") is None  # Table XIII has no SPAQ column
    assert lookup("prompt", "monet", "live", "mixed").score.srcc == 0.9359
    entries = load_published()["entries"]
    assert len({e["id"] for e in entries}) == len(entries)


def test_collapsed_scatter_keeps_the_score_range(tiny: dict) -> None:
    from pipelines.report.plots import _pyplot, scatter_figure

    run = read_run(tiny["collapsed"])
    p = run.predictions.select(run.predictions.run == 0)
    fig = scatter_figure(run, p, 1, 3, 4)
    ax = fig.axes[0]
    # the nominal 1-5 range, not a zoom onto the constant 4.0
    assert ax.get_ylim()[0] < 1.0 and ax.get_ylim()[1] > 5.0
    assert ax.get_xlim() == ax.get_ylim()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"blur", "noise"} <= set(labels) and not any("logistic" in x for x in labels)
    assert "n = 16" in ax.get_title() and "SRCC 0.000" in ax.get_title()
    _pyplot().close(fig)


def test_scatter_and_curve_files(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = _eval([str(tiny["fr"]), "--out", str(out), "--no-baselines",
                 "--plot-format", "png,svg,pdf"])
    assert res.exit_code == 0, res.output
    stem = out / "scatter" / "tiny-nss-sfem_fr"
    for ext in ("png", "svg", "pdf"):
        assert stem.with_suffix(f".{ext}").stat().st_size > 1000
        assert (out / "curves" / f"tiny-nss-sfem_fr.{ext}").stat().st_size > 1000
    with open(stem.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and set(rows[0]) == {"score", "predicted_score", "distortion", "id"}
    assert all(1 <= float(r["score"]) <= 5 for r in rows)  # the dataset's own scale
    with open(out / "curves" / "tiny-nss-sfem_fr" / "run_01.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [c["epoch"] for c in curve] == [str(e) for e in range(6)]
    assert float(curve[0]["val_srcc"]) == pytest.approx(0.49)
    again = tmp_path / "again"  # the same runs give the same bytes (DVC sees no change)
    assert _eval([str(tiny["fr"]), "--out", str(again), "--no-baselines",
                  "--plot-format", "svg"]).exit_code == 0
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 11  # marker, 4 table files, 2 SVG, scatter CSV, 3 curve CSVs
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    bad = _eval([str(tiny["fr"]), "--out", str(tmp_path / "x"), "--plot-format", "gif"])
    assert bad.exit_code == 2 and "gif" in bad.output


def test_curves_without_validation(tiny: dict, tmp_path: Path) -> None:
    run = _write_run(tmp_path / "run", tiny["manifest"], "sfem_nr", "nss", with_val=False)
    out = tmp_path / "r"
    assert _eval([str(run), "--out", str(out), "--no-baselines"]).exit_code == 0
    with open(out / "curves" / "tiny-nss-sfem_nr" / "run_00.csv", newline="") as fh:
        assert {r["val_srcc"] for r in csv.DictReader(fh)} == {""}
    assert (out / "curves" / "tiny-nss-sfem_nr.png").is_file()


def test_json_output(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = _eval([str(tiny["fr"]), "--out", str(out), "--json", "--no-baselines", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads((out / "table.json").read_text())


def test_out_guarded_and_nothing_half_written(tiny: dict, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    res = _eval([str(tiny["fr"]), "--out", str(foreign)])
    assert res.exit_code == 2 and "nothing was written" in res.output
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text(json.dumps({"head": "sfem_fr", "backbone": "nss",
                                                     "dataset": "tiny", "runs": []}))
    (broken / "predictions.csv").write_text("run,id,part\n0,a.png,test\n")
    out = tmp_path / "reports"
    res = _eval([str(tiny["fr"]), str(broken), "--out", str(out), "--no-plots"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "no test rows with target and prediction" in res.output
    with open(tiny["fr"] / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[3]["prediction"] = "nan"
    (broken / "predictions.csv").write_text(
        ",".join(rows[0]) + "\n" + "".join(",".join(r.values()) + "\n" for r in rows))
    (broken / "metrics.json").write_text((tiny["fr"] / "metrics.json").read_text())
    res = _eval([str(broken), "--out", str(out), "--no-plots"])
    assert res.exit_code == 1 and f"{broken}: run 0: pred has a non-finite" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "mine"]  # no stage left
    # an earlier report may be rewritten
    for _ in range(2):
        assert _eval([str(tiny["fr"]), "--out", str(out), "--no-baselines",
                      "--no-plots"]).exit_code == 0
    assert json.loads((out / ".iqa-output.json").read_text()) == {"kind": "report"}


def test_reads_a_flat_older_run(tiny: dict, tmp_path: Path) -> None:
    """One split, no ``runs`` list, no label_norm or raw-scale columns: rebuilt from the
    manifest, as training normalised them."""
    new = read_run(tiny["fr"])
    old = tmp_path / "old"
    old.mkdir()
    rec = json.loads((tiny["fr"] / "metrics.json").read_text())
    flat = {"head": "sfem_fr", "backbone": "nss", "dataset": "tiny",
            "manifest": rec["manifest"], **{k: rec["runs"][0][k] for k in ("split", "test")}}
    (old / "metrics.json").write_text(json.dumps(flat))
    with open(tiny["fr"] / "predictions.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["run"] == "0"]
    with open(old / "predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "part", "target", "prediction"])
        w.writeheader()
        w.writerows({k: r[k] for k in ("id", "part", "target", "prediction")} for r in rows)
    run = read_run(old)
    assert len(run.repeats) == 1 and run.scale == new.scale
    first = new.predictions.select(new.predictions.run == 0)
    np.testing.assert_allclose(run.predictions.predicted_score, first.predicted_score)
    assert run.predictions.distortion == first.distortion  # from the manifest


def test_train_then_report_end_to_end(tiny: dict, tmp_path: Path, one_thread: None) -> None:
    """A real nss store and sfem_fr head; iqa-eval finds the PSNR/SSIM baselines through
    the manifest the run records (runs from before it was recorded: --data-dir)."""
    from extract.config import ExtractConfig, arch_overrides
    from extract.run import run_extract
    from heads.experiment import ExperimentSpec, Source, run_experiment
    from heads.optim import TrainConfig

    manifest = tiny["manifest"]
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides({"size": 32, "grid": 8}),
                        shard_size=16)
    store = run_extract(cfg, manifest, out=str(tmp_path / "f.zarr"), progress=False).store
    run = tmp_path / "runs" / "fr"
    source = Source(store, str(manifest), (str(manifest.parent / "splits" / "split_00.json"),))
    run_experiment(ExperimentSpec(
        head="sfem_fr", sources=(source,), out=str(run),
        training=TrainConfig(epochs=2, batch_size=8, lr=1e-3),
        overrides={"width": 4, "scales": (1,), "pool_size": 4},
    ))
    out = tmp_path / "reports"
    metrics = json.loads((run / "metrics.json").read_text())
    extra = [] if "manifest" in metrics else ["--data-dir", str(manifest.parent.parent)]
    res = _eval([str(run), "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in _table(out, "tiny")["rows"]}
    assert {"sfem_fr", "psnr", "ssim"} <= set(rows)
    recorded = metrics["runs"][0]["test"] if "runs" in metrics else metrics["test"]
    assert rows["sfem_fr"]["test"]["srcc"]["median"] == pytest.approx(recorded["srcc"],
                                                                      abs=1e-4)
    assert (out / "scatter" / "tiny-nss-sfem_fr.png").stat().st_size > 0


def test_overview_of_several_datasets(tiny: dict, tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data", "dm", lower_better=True, score_range=(0, 100))
    other = _write_run(tmp_path / "run", manifest, "sfem_fr", "nss")
    out = tmp_path / "r"
    res = _eval([str(tiny["fr"]), str(tiny["collapsed"]), str(other), "--out", str(out),
                 "--no-plots", "--no-baselines"])
    assert res.exit_code == 0, res.output
    md = (out / "table.md").read_text()
    overview = _md_rows(md.split("## All datasets")[1].split("## tiny")[0])
    assert overview[0] == ["method", "tiny SRCC", "tiny PLCC", "dm SRCC", "dm PLCC"]
    tiny_srcc = _table(out, "tiny")["rows"][0]["test"]["srcc"]["median"]
    assert overview[1][:2] == ["sfem_fr (nss)", f"{tiny_srcc:.3f}"]
    assert overview[2][0] == "prompt (nss)" and overview[2][3:] == ["-", "-"]
    assert r"\label{tab:iqa-overview}" in (out / "table.tex").read_text()


def _paper(out: Path) -> dict[str, list[str]]:
    """The rows of a report's paper table: label -> cells."""
    data = json.loads((out / "paper.json").read_text())
    return {r["method"]: [r["cells"][d] for d in data["datasets"]] for r in data["rows"]}


def _papers(tmp_path: Path, runs: list[str], tables: tuple[str, ...]) -> dict[str, dict]:
    """iqa-eval of ``runs`` with each paper table in turn, into ``tmp_path/TABLE``: the rows
    of each table."""
    got = {}
    for table in tables:
        out = tmp_path / table
        res = _eval([*runs, "--out", str(out), "--no-plots", "--no-baselines", "--paper", table])
        assert res.exit_code == 0, res.output
        got[table] = _paper(out)
    return got


def test_ablation_runs_meet_their_own_paper_rows(tmp_path: Path) -> None:
    """SAM-IQA Tables 4 and 5: a one-branch or an L2 run sits beside its ablation row,
    never beside Table 1's full model (which only the full run fills)."""
    manifest = _dataset(tmp_path / "data" / "live", "live", lower_better=True,
                        score_range=(0, 100))
    full = _write_run(tmp_path / "full", manifest, "sfem_fr", "sam_vit_b", noise=0.01)
    spatial = _write_run(tmp_path / "spatial", manifest, "sfem_fr", "sam_vit_b", noise=0.3,
                         head_config={"branches": ["spatial"], "width": 8})
    l2 = _write_run(tmp_path / "l2", manifest, "sfem_fr", "sam_vit_b", noise=0.2,
                    head_config={"distance": "l2"})
    runs = [str(full), str(spatial), str(l2)]
    got = _papers(tmp_path, runs, ("sam_iqa_table1", "sam_iqa_table4", "sam_iqa_table5"))
    rows = {r["variant"]: r for r in _table(tmp_path / "sam_iqa_table4", "live")["rows"]}
    assert set(rows) == {"", "branches=spatial", "distance=l2"}
    assert rows[""]["published"]["table"] == "Table 1"
    assert rows["branches=spatial"]["published"]["entry"] == "sam_iqa_branches_spatial"
    assert rows["distance=l2"]["published"]["entry"] == "sam_iqa_distance_l2"
    ours = {v: f"{r['test']['srcc']['median']:.3f}" for v, r in rows.items()}
    fr = next(c for k, c in got["sam_iqa_table1"].items() if k.startswith("sfem_fr"))
    assert fr[0].startswith(ours[""] + "/") and fr[0].endswith("0.996/0.997")
    t4 = got["sam_iqa_table4"]
    b_only = next(c for k, c in t4.items() if k.startswith("B only"))
    f_only = next(c for k, c in t4.items() if k.startswith("F only"))
    both = next(c for k, c in t4.items() if k.startswith("B + F"))
    assert b_only[0].startswith(ours["branches=spatial"] + "/") and "0.985/-" in b_only[0]
    assert f_only[0].startswith("- \\|") and both[0].startswith(ours[""] + "/")
    t5 = got["sam_iqa_table5"]
    assert next(c for k, c in t5.items() if k.startswith("L2"))[0].startswith(
        ours["distance=l2"] + "/")
    assert next(c for k, c in t5.items() if k.startswith("Sub."))[1] == "- \\| 0.950/0.950"
    md = (tmp_path / "sam_iqa_table4" / "table.md").read_text()
    assert "| sfem_fr [branches=spatial] " in md
    assert "| sfem_fr [distance=l2] (sam_vit_b) " in md  # the per-distortion columns


def test_dp_iqa_rows_for_cross_tests_and_students(tmp_path: Path) -> None:
    """Table V beside an iqa-test-head folder, Tables IV and XI beside student folders
    (one split each, merged into one row); the fine-tuned teacher is shown as n/c."""
    from pipelines.report.published import RunFacts

    livec = _dataset(tmp_path / "data" / "livec", "livec", score_range=(0, 100))
    koniq = _dataset(tmp_path / "data" / "koniq10k", "koniq10k", score_range=(0, 100))
    cross = _cross_folder(tmp_path / "cross", livec, trained_on="koniq10k")
    students = [_student_folder(tmp_path / f"st{k}", koniq, k, map_weight=1.0) for k in range(2)]
    plain = _student_folder(tmp_path / "plain", koniq, 0, map_weight=0.0)
    runs = [str(cross), *map(str, students), str(plain)]
    papers = _papers(tmp_path, runs, ("dp_iqa_table4", "dp_iqa_table5", "dp_iqa_table11"))
    rows = _table(tmp_path / "dp_iqa_table4", "koniq10k")["rows"]
    assert [(r["method"], r["variant"], r["runs"]) for r in rows] == [
        ("student", "", 2), ("student", "map_weight=0.0", 1)]
    assert rows[0]["published"]["entry"] == "dp_iqa_student"
    assert rows[1]["published"]["entry"] == "dp_iqa_student_no_distillation"
    cross_row = _table(tmp_path / "dp_iqa_table5", "livec")["rows"][0]
    assert cross_row["protocol"] == "cross_dataset" and cross_row["runs"] == 3
    assert cross_row["published"]["srcc"] == 0.833  # KonIQ -> CLIVE, 'Ours (teacher)'
    t5 = papers["dp_iqa_table5"]
    from_koniq = [c for k, c in t5.items() if "trained on koniq10k" in k]
    assert from_koniq[0][1].endswith("0.833/-") and not from_koniq[0][1].startswith("-")
    assert from_koniq[1][1].startswith("n/c")  # the student: no cross test here
    t4 = papers["dp_iqa_table4"]
    teacher = next(c for k, c in t4.items() if k.startswith("Ours (teacher)"))
    assert all(c.startswith("n/c") for c in teacher)
    assert "not comparable" in (tmp_path / "dp_iqa_table4" / "table.md").read_text()
    t11 = papers["dp_iqa_table11"]
    assert next(c for k, c in t11.items() if k.startswith("w/o"))[1].endswith("0.841/0.881")
    assert lookup("qfd", "sd15_unet", "livec", "cross_dataset",
                  RunFacts({}, "flive")).score.srcc == 0.770
    assert lookup("qfd", "sd15_unet", "livec", "cross_dataset") is None  # no training set


def _cross_folder(out: Path, manifest_path: Path, trained_on: str) -> Path:
    """A folder in the iqa-test-head layout (heads.crosstest): qfd on SD 1.5 features."""
    from iqadata.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    info = manifest.info
    scale = LabelScale(*info.score_range, info.lower_better, info.score_kind)
    rng = np.random.default_rng(3)
    rows, records = [], []
    for k in range(3):
        target = scale.to_target(np.array([r.score for r in manifest.rows]))
        pred = target + rng.normal(0, 0.1, len(target))
        rows += [{"run": k, "id": r.image, "target": t, "prediction": p,
                  "predicted_score": float(scale.to_raw(np.array(p)))}
                 for r, t, p in zip(manifest.rows, target, pred, strict=True)]
        records.append({"run": k, "checkpoint": f"run_{k:02d}/model.pt",
                        "test": {"srcc": 0.0, "plcc": 0.0}})
    out.mkdir()
    metrics = {"head": "qfd", "trained_on": trained_on, "tested_on": info.name,
               "manifest": str(manifest_path), "label_norm": {
                   "low": info.score_range[0], "high": info.score_range[1],
                   "lower_better": info.lower_better}, "runs": records,
               "protocol": "cross_dataset", "backbone": "sd15_unet", "head_config": {},
               "training": {"epochs": 60}}
    return _write_outputs(out, "cross-test", metrics, rows)


def _student_folder(out: Path, manifest_path: Path, k: int, map_weight: float) -> Path:
    """A folder in the iqa-distill train layout (pipelines.distill.run): one split's student."""
    from iqadata.manifest import read_manifest, read_split

    manifest = read_manifest(manifest_path)
    info, by_id = manifest.info, manifest.by_id()
    scale = LabelScale(*info.score_range, info.lower_better, info.score_kind)
    split = manifest_path.parent / "splits" / f"split_{k:02d}.json"
    ids = read_split(split).test
    target = scale.to_target(np.array([by_id[i].score for i in ids]))
    pred = target + np.random.default_rng(k).normal(0, 0.05 + map_weight / 10, len(ids))
    out.mkdir()
    train = {"trunk": "efficientnet_b7", "map_weight": map_weight, "score_weight": 1.0,
             "epochs": 30, "split": str(split), "seed": k}
    metrics = {"student": {"test": {"srcc": 0.0}}, "dataset": info.name,
               "trunk": "efficientnet_b7", "manifest": str(manifest_path),
               "label_norm": {"low": info.score_range[0], "high": info.score_range[1],
                              "lower_better": info.lower_better},
               "split": str(split), "training": train, "selection": "epoch 3"}
    preds = [{"id": i, "part": "test", "target": t, "student": p, "teacher": t}
             for i, t, p in zip(ids, target, pred, strict=True)]
    return _write_outputs(out, "dpiqa-student", metrics, preds)
