"""The ``demo`` blocks of README.md and docs/*.md run as written, on a small demo pipeline.

The pipeline (the project's ``dvc.yaml``, ``params.yaml`` shrunk to toy sizes but keeping
the images the README names) runs once in a temporary git repository; then every block
marked ``<!-- test: demo -->`` (tests/_doc_blocks.py: the quick start's ``dvc repro``, the
command-line tour, the Python API, docs/REPORTS.md's commands) runs unchanged in its own
copy of that repository, as a bash script or with this interpreter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from _doc_blocks import SHELLS, Block, blocks, run_bash, run_python
from test_pipeline_dvc import ROOT, _tiny, new_repo, run

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")

DEMO = [pytest.param(b, id=b.id) for b in blocks() if b.scenario == "demo"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = _tiny(yaml.safe_load((ROOT / "params.yaml").read_text()))
    # the images the README names: astronaut and coffee references, jpeg up to level 5
    params["demo"].update(distortions="jpeg,gaussian_blur", levels=5)
    params["train"].update(heads=["sfem_fr", "sfem_nr", "prompt"])  # prompt: the probes
    repo = new_repo(tmp_path_factory.mktemp("readme") / "demo", params)
    run(repo, "dvc", "repro")
    return repo


def _check(block: Block, copy: Path, out: str) -> None:
    """What the blocks' commands promise, beyond exiting 0."""
    if "dvc repro" in block.text:
        assert "Running stage" not in out, out  # a repository after dvc repro is up to date
    if "--csv try/scores.csv" in block.text:
        csv = (copy / "try/scores.csv").read_text()
        assert csv.count("\n") > 10 and "score" in csv.splitlines()[0]
    if "iqa-cache verify" in block.text:
        assert ": ok;" in out
    if "jq '.datasets.demo.rows[0]'" in block.text:
        assert '"srcc"' in out and '"method": "sfem_fr"' in out, out[-2000:]
    if "from cache import open_store" in block.text:
        assert "no-reference" in out  # the scorer describes what its scores mean
        assert (copy / "try/api/run_00/model.pt").is_file()
    if block.text.startswith("iqa-"):  # the tour writes under try/ only: the pipeline is as it was
        status = run(copy, "dvc", "status")
        assert "up to date" in status, status


@pytest.mark.parametrize("block", DEMO)
def test_demo_block_runs(demo: Path, block: Block, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(demo, copy, symlinks=True)
    out = run_bash(block, copy) if block.lang in SHELLS else run_python(block, copy)
    _check(block, copy, out)


def test_the_checked_demo_blocks_are_there() -> None:
    texts = [p.values[0].text for p in DEMO]
    assert any("dvc repro" in t for t in texts) and any("iqa-cache verify" in t for t in texts)
    assert sum("from cache import open_store" in t for t in texts) == 1
