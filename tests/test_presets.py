"""Paper presets: complete params files that dvc.yaml can run, written safely, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.data_cli import main as data_main
from pipelines.presets import check, describe, names, preset_text, write_preset

ROOT = Path(__file__).resolve().parents[1]


def _dvc_params() -> tuple[set[str], set[str]]:
    """Top-level keys and per-item sections dvc.yaml reads from params.yaml."""
    text = (ROOT / "dvc.yaml").read_text()
    top = {k for k in ("datasets", "imports", "cache_root", "demo", "extract", "checkpoints",
                       "arch", "train", "head_train", "head_config", "paper") if k in text}
    return top, {"checkpoints", "arch"}


def test_the_shipped_params_file_is_the_demo_preset() -> None:
    assert (ROOT / "params.yaml").read_text() == preset_text("demo")


@pytest.mark.parametrize("name", names())
def test_every_preset_has_what_the_pipeline_reads(name: str) -> None:
    params = yaml.safe_load(preset_text(name))
    top, _ = _dvc_params()
    assert top <= set(params), top - set(params)
    for backbone in params["extract"]["backbones"]:
        assert backbone in params["checkpoints"] and backbone in params["arch"]
    for head in params["train"]["heads"]:
        assert head in params["head_train"] and head in params["head_config"]
    for dataset in params["datasets"]:
        assert dataset == "demo" or dataset in params["imports"], dataset
    for spec in params["imports"].values():
        assert {"importer", "root", "ratios", "repeats", "seed"} <= set(spec)
    assert describe(name)


def test_paper_settings_are_the_papers() -> None:
    sam = yaml.safe_load(preset_text("sam_iqa_table1"))
    assert sam["head_train"]["sfem_fr"] == {"epochs": 500, "lr": 2.0e-5, "batch_size": 16}
    assert sam["extract"]["views"] == "identity,hflip,vflip,hvflip"
    assert {s["ratios"] for s in sam["imports"].values()} == {"0.6,0.2,0.2"}
    assert {s["repeats"] for s in sam["imports"].values()} == {10}
    prompt = yaml.safe_load(preset_text("promptiqa_table2"))["head_train"]["prompt"]
    assert (prompt["lr"], prompt["weight_decay"], prompt["schedule"], prompt["epochs"]) == (
        1.0e-5, 1.0e-5, "cosine_restarts", 100)  # fmt: skip
    dp = yaml.safe_load(preset_text("dp_iqa_table13"))
    assert {s["repeats"] for s in dp["imports"].values()} == {5}
    assert dp["head_train"]["qfd"]["gamma"] == 0.2


def test_writing_a_preset_never_overwrites_other_files(tmp_path: Path) -> None:
    mine = tmp_path / "notes.yaml"
    mine.write_text("my: notes\n")
    res = CliRunner().invoke(data_main, ["preset", "sam_iqa_table1", "--out", str(mine)])
    assert res.exit_code == 2 and mine.read_text() == "my: notes\n"
    out = tmp_path / "params.yaml"
    write_preset("demo", out)
    write_preset("sam_iqa_table1", out, data_root="/srv/iqa", models="/srv/models")
    params = yaml.safe_load(out.read_text())
    assert params["imports"]["live"]["root"] == "/srv/iqa/live"
    assert params["checkpoints"]["sam_vit_h"] == "/srv/models/sam_vit_h_4b8939.pth"
    res = CliRunner().invoke(data_main, ["preset", "nope", "--out", str(out)])
    assert res.exit_code == 1 and "presets: " in res.output


def test_check_lists_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    write_preset("sam_iqa_table1", out, data_root=str(tmp_path / "raw"),
                 models=str(tmp_path / "models"))  # fmt: skip
    found = [p.what for p in check(out)]
    assert found == ["dataset live", "dataset csiq", "dataset tid2013", "dataset kadid10k",
                     "sam_vit_h weights"]  # fmt: skip
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "sam_vit_h_4b8939.pth").write_bytes(b"not the official file")
    (tmp_path / "raw" / "live").mkdir(parents=True)
    problems = {p.what: p for p in check(out)}
    assert "does not start with 4b8939" in problems["sam_vit_h weights"].fix
    assert "dmos" in problems["dataset live"].fix.lower()  # the importer names its label file
    res = CliRunner().invoke(data_main, ["check", "--params", str(out)])
    assert res.exit_code == 1 and res.output.count("missing: ") == 5
    assert "Traceback" not in res.output
    res = CliRunner().invoke(data_main, ["check", "--params", str(out), "--json"])
    listed = json.loads(res.stdout)
    assert res.exit_code == 1 and len(listed) == 5 and listed[0]["what"] == "dataset live"


def test_the_demo_needs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    write_preset("demo", out)
    assert check(out) == []
