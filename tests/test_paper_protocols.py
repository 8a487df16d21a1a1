"""PromptIQA's paper tables, exactly: each report cell from a run of its own protocol and
preset, the per-dataset model beside the paper's own per-dataset row (Table 6), the mixed
model on the paper's 12 datasets, and presets whose every setting names its source."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _tiny import has_key
from test_report import _dataset, _write_run

from heads.optim import TrainConfig, make_scheduler
from heads.prompt import PROMPT_IQA_TRAINING
from iqadata.importers import IMPORTERS
from iqadata.presets import preset_text, write_preset
from pipelines.report.paper_table import PAPER_TABLES, paper_rows
from pipelines.report.published import load_published, lookup
from pipelines.report.runs import read_runs
from pipelines.report.tables import build_tables

PROMPT_PRESETS = ("promptiqa_table2", "promptiqa_table2_mixed")
SOURCES = ("paper:", "reference:", "ours:")


def _run(root: Path, manifest: Path, name: str, protocol: str, paper: str, noise: float) -> Path:
    run = _write_run(root / name, manifest, "prompt", "monet", protocol=protocol, noise=noise)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["preset"] = {"name": paper, "paper": paper}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def _cells(paper: str, runs: list[Path]) -> dict[str, str]:
    tables = build_tables([r for p in runs for r in read_runs(p)], baselines=False)
    datasets, rows = paper_rows(paper, tables)
    return {row[0]: row[1 + datasets.index("tid2013")] for row in rows}


def _ours(runs: list[Path], name: str) -> str:
    table = build_tables(
        [r for p in runs for r in read_runs(p) if p.name == name], baselines=False
    )["tid2013"]
    s = table.rows[0].summary
    return f"{s['srcc']['median']:.3f}/{s['plcc']['median']:.3f}"


@pytest.mark.parametrize("order", [("mixed", "single", "other"), ("other", "single", "mixed")])
def test_each_paper_table_takes_runs_of_its_own_protocol_and_preset(
    tmp_path: Path, order: tuple[str, ...]
) -> None:
    manifest = _dataset(tmp_path / "data" / "tid2013", "tid2013", score_range=(0.0, 9.0))
    made = {
        "mixed": _run(tmp_path, manifest, "mixed", "mixed", "promptiqa_table2_mixed", 0.3),
        "single": _run(tmp_path, manifest, "single", "per_dataset", "promptiqa_table2", 0.02),
        "other": _run(tmp_path, manifest, "other", "per_dataset", "sam_iqa_table1", 0.15),
    }
    runs = [made[k] for k in order]
    single, mixed = _ours(runs, "single"), _ours(runs, "mixed")
    assert single != mixed and _ours(runs, "other") not in (single, mixed)
    per = _cells("promptiqa_table2", runs)
    wo_mixed = next(v for k, v in per.items() if k.startswith("PromptIQA w/o mixed training"))
    assert wo_mixed == f"{single} \\| -/0.8849"  # Table 6 reports PLCC only
    monet = next(v for k, v in per.items() if k.startswith("MoNet"))
    assert monet == "- \\| 0.8738/0.8923"  # a published baseline: no run of ours fills it
    assert list(_cells("promptiqa_table2_mixed", runs).values()) == [f"{mixed} \\| 0.9030/0.9223"]


def test_per_dataset_promptiqa_is_compared_with_its_own_row() -> None:
    entries = {e["id"]: e for e in load_published()["entries"]}
    assert PAPER_TABLES["promptiqa_table2"] == ("promptiqa_wo_mixed", "promptiqa_monet")
    pub = lookup("prompt", "monet", "tid2013", "per_dataset")
    assert (pub.entry, pub.table, pub.page, pub.score.plcc) == (
        "promptiqa_wo_mixed",
        "Table 6",
        14,
        0.8849,
    )
    assert lookup("prompt", "monet", "live", "per_dataset") is None  # not MoNet's figure
    monet = entries["promptiqa_monet"]
    assert monet["methods"] == [] and "baseline" in monet["label"]
    assert monet["results"]["bid"] == {"srcc": 0.9012, "plcc": 0.9152}


def test_the_mixed_row_holds_all_twelve_datasets() -> None:
    mixed = {e["id"]: e for e in load_published()["entries"]}["promptiqa_mixed"]
    assert set(mixed["results"]) == set(IMPORTERS) - {"pipal", "flive"}  # Table 1's 12
    assert mixed["results"]["gfiqa20k"] == {"srcc": 0.9698, "plcc": 0.9702}
    assert mixed["results"]["agiqa3k"] == {"srcc": 0.8509, "plcc": 0.9013}
    assert mixed["results"]["aigciqa2023"] == {"srcc": 0.8508, "plcc": 0.8743}
    assert mixed["results"]["uwiqa"] == {"srcc": 0.8766, "plcc": 0.8839}
    for entry in load_published()["entries"]:
        if entry["paper"] == "promptiqa":
            assert set(entry["results"]) <= set(IMPORTERS), entry["id"]
            assert entry["table"] and entry["page"], entry["id"]


def _preset(name: str) -> dict[str, Any]:
    return yaml.safe_load(preset_text(name))


def test_the_promptiqa_presets_train_the_papers_datasets() -> None:
    per, mixed = _preset("promptiqa_table2"), _preset("promptiqa_table2_mixed")
    assert {"bid", "gfiqa20k", "uwiqa"} <= set(per["datasets"]) and per["train"]["heads"] == [
        "prompt"
    ]
    twelve = set(mixed["datasets"])
    assert twelve == set(IMPORTERS) - {"pipal", "flive"}
    assert set(mixed["mixed"]["promptiqa_mixed"]["datasets"].split()) == twelve
    for params in (per, mixed):
        assert set(params["imports"]) == set(params["datasets"])
        assert all(spec["importer"] in IMPORTERS for spec in params["imports"].values())
        assert params["extract"]["views"] == "identity,hflip"  # the reference's p 0.5 flip
        assert params["arch"]["monet"] == {"resize": "opencv_cubic"}
        prompt = params["head_train"]["prompt"]
        assert (prompt["label_orientation"], prompt["label_norm"]) == ("native", "train_minmax")
        assert PROMPT_IQA_TRAINING.replace(**prompt).schedule == "cosine_restarts"


def _leaves(value: Any, prefix: str) -> list[str]:
    if isinstance(value, dict) and value:
        return [k for key, v in value.items() for k in _leaves(v, f"{prefix}.{key}")]
    return [prefix]


@pytest.mark.parametrize("name", PROMPT_PRESETS)
def test_every_protocol_setting_names_its_source(name: str, tmp_path: Path) -> None:
    params = _preset(name)
    provenance = params["provenance"]
    assert all(isinstance(v, str) and v.startswith(SOURCES) for v in provenance.values())
    assert all(has_key(params, key) for key in provenance), [
        k for k in provenance if not has_key(params, k)
    ]
    protocol = [
        *_leaves(params["head_train"], "head_train"),
        *_leaves(params["train"], "train"),
        *_leaves(params["extract"], "extract"),
        *_leaves(params["arch"], "arch"),
        *[f"imports.{d}.{k}" for d in params["imports"] for k in ("ratios", "repeats", "seed")],
    ]
    assert [k for k in protocol if k not in provenance] == []
    out = write_preset(name, tmp_path / "params.yaml", data_root="/srv/iqa")
    written = yaml.safe_load(out.read_text())
    assert written["provenance"] == provenance and written["imports"]["bid"]["root"] == (
        "/srv/iqa/bid"
    )


def test_the_two_readings_of_cosine_every_50_epochs() -> None:
    """Ours (the preset): warm restarts every 50 of 100 epochs. The reference's: one
    half-cosine over its 50 epochs, ``lr * (1 + cos(pi * epoch / 50)) / 2`` at the start of
    each epoch (PromptIQA/utils/toolkit.py, adjust_learning_rate) = ``cosine`` over 50."""

    def rates(cfg: TrainConfig) -> list[float]:
        opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
        sched = make_scheduler(opt, cfg)
        out = []
        for _ in range(cfg.epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    reference = [1e-5 * 0.5 * (1 + math.cos(math.pi * e / 50)) for e in range(50)]
    assert rates(PROMPT_IQA_TRAINING.replace(schedule="cosine", epochs=50)) == pytest.approx(
        reference, rel=1e-9, abs=1e-15
    )
    restarts = rates(PROMPT_IQA_TRAINING)
    assert len(restarts) == 100 and restarts[:50] == pytest.approx(reference, rel=1e-9)
    assert restarts[50] == pytest.approx(1e-5) and restarts[99] < 1e-7
