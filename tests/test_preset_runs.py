"""Every paper preset runs end to end at toy scale: its own params file, shrunk to the demo
set, a tiny random-weight backbone of the right family saved as a real checkpoint, a few
epochs; ``dvc repro`` must finish and the report must lay the results out like the paper's
table with the published figures beside ours. A preset that rots fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from _tiny import PROMPT_TINY
from test_backbones import TINY as BACKBONE_TINY
from test_pipeline_dvc import CODE, ROOT, run, write_params
from test_prompt_use import _release

from extract.sam import build_sam_vit_h
from heads.registry import head_class
from iqadata.presets import names, preset_text
from pipelines.report.paper_table import PAPER_TABLES

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")
PAPERS = {"sam_iqa_table1": "SAM-IQA Table 1", "dp_iqa_table13": "DP-IQA Table XIII",
          "promptiqa_table2": "PromptIQA Table 2", "promptiqa_table2_mixed": "PromptIQA Table 2"}
HEAD_TINY = {"sfem_fr": {"width": 4, "scales": [1, 2], "pool_size": 2},
             "sfem_nr": {"width": 4, "scales": [1, 2], "pool_size": 2},
             "qfd": {"width": 8, "se_reduction": 2, "reduce": [4, 2], "hidden": 8},
             "linear": {}, "prompt": dict(PROMPT_TINY)}
KEEP_ARCH = ("resize",)  # arch keys of a preset that apply at toy scale too


def _weights(backbone: str, folder: Path) -> tuple[str, dict]:
    """A tiny checkpoint of the backbone's family, and the architecture that reads it."""
    arch = {k: list(v) if isinstance(v, tuple) else v
            for k, v in BACKBONE_TINY[backbone].items()}
    if backbone.startswith("sam_"):
        model = build_sam_vit_h(random_init=True, **BACKBONE_TINY[backbone])
        state = {f"image_encoder.{k}": v for k, v in model.image_encoder.state_dict().items()}
        torch.save(state, folder / "sam_tiny.pth")
        return str(folder / "sam_tiny.pth"), arch
    if backbone == "sd15_unet":
        from test_sd15 import BANK, _vocab, make_sd_folder

        sd = make_sd_folder(folder / "sd15")
        return str(sd), {"size": 64, "prompt_bank": BANK, "expected_vocab_size": len(_vocab())}
    if backbone == "monet":
        path, _ = _release(folder)
        arch.pop("tokens", None)
        return str(path), arch
    raise AssertionError(f"no tiny weights for {backbone}")


def _toy(params: dict, folder: Path) -> dict:
    params.update(datasets=["demo"], imports={})
    params["demo"].update(n_refs=3, levels=2, size="48,64", repeats=1,
                          distortions="gaussian_blur,white_noise")
    params["extract"].update(device="cpu", dtype="fp32", batch_size=4)
    for backbone in params["extract"]["backbones"]:
        params["checkpoints"][backbone], tiny = _weights(backbone, folder)
        kept = {k: v for k, v in (params["arch"].get(backbone) or {}).items() if k in KEEP_ARCH}
        params["arch"][backbone] = {**kept, **tiny}  # the preset's preprocessing choices
    heads = set(params["train"]["heads"]) | {m["head"] for m in params["mixed"].values()}
    for head in heads:  # the preset's settings, at toy size
        grouped = head_class(head).kind == "grouped"
        params["head_train"][head] = {**(params["head_train"].get(head) or {}), "epochs": 1,
                                      "lr": 1.0e-3, "batch_size": 4,
                                      **({"groups_per_step": 1} if grouped else {})}
        params["head_config"][head] = dict(HEAD_TINY[head])
    for mix in params["mixed"].values():
        mix["datasets"] = "demo"
    params["train"].update(repeats=1, threads=1)
    return params


@pytest.mark.parametrize("preset", [n for n in names() if n != "demo"])
def test_preset_runs_end_to_end_at_toy_scale(preset: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for folder in CODE:
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = _toy(yaml.safe_load(preset_text(preset)), tmp_path)
    write_params(repo, params)
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    out = run(repo, "dvc", "repro")
    assert "Running stage 'eval'" in out, out
    table = (repo / "reports" / "table.md").read_text()
    assert PAPERS[preset] in table  # the paper's own layout, first
    paper_block = table.split("## ")[1]
    assert "| published" in paper_block and "|" in paper_block
    published = yaml.safe_load((ROOT / "pipelines" / "report" / "published.yaml").read_text())
    first = next(e for e in published["entries"] if e["id"] == PAPER_TABLES[preset][0])
    cell = next(iter(first["results"].values()))
    value = cell["srcc"] if cell["srcc"] is not None else cell["plcc"]  # Table 6: PLCC only
    assert f"{value:.3f}"[:4] in paper_block  # a published figure beside ours
