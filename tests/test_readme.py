"""The README's demo tour and Python API run as written, on a small demo pipeline.

The pipeline (the project's ``dvc.yaml``, ``params.yaml`` shrunk to toy sizes but keeping
the images the README names) runs once in a temporary git repository; then every command
of the "Command-line tour" block after ``dvc repro`` and the "Python API" block run there
unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_pipeline_dvc import ENV, ROOT, _tiny, new_repo, run

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(heading: str, lang: str, after: str = "") -> str:
    """The first ``lang`` code block under ``## heading`` (after the text ``after``)."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    if after:
        section = section.split(after, 1)[1]
    found = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert found, f"no {lang} block under {heading!r}"
    return found.group(1)


TOUR = _block("Command-line tour", "bash", after="After `dvc repro`, on the demo:")
API = _block("Python API", "python")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    params = _tiny(yaml.safe_load((ROOT / "params.yaml").read_text()))
    # the images the README names: astronaut and coffee references, jpeg up to level 5
    params["demo"].update(distortions="jpeg,gaussian_blur", levels=5)
    params["train"].update(heads=["sfem_fr", "sfem_nr", "prompt"])  # prompt: the probes
    repo = new_repo(tmp_path_factory.mktemp("readme") / "demo", params)
    run(repo, "dvc", "repro")
    return repo


def test_the_tour_block_is_what_this_test_runs() -> None:
    commands = [line for line in TOUR.splitlines() if line.strip()]
    assert len(commands) >= 8 and all(c.split()[0].startswith("iqa-") for c in commands)


@pytest.mark.parametrize("line", [c for c in TOUR.splitlines() if c.strip()])
def test_tour_command_runs(demo: Path, line: str) -> None:
    out = run(demo, *shlex.split(line))
    if "--csv" in line:
        csv = (demo / shlex.split(line)[shlex.split(line).index("--csv") + 1]).read_text()
        assert csv.count("\n") > 10 and "score" in csv.splitlines()[0]
    if line.startswith("iqa-cache verify"):
        assert ": ok;" in out


def test_python_api_block_runs(demo: Path) -> None:
    env = {**os.environ, **ENV}
    done = subprocess.run([sys.executable, "-c", API], cwd=demo, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no-reference" in done.stdout  # the scorer describes what its scores mean
    assert (demo / "runs/api/run_00/model.pt").is_file()
