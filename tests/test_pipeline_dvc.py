"""The DVC pipeline end to end on a tiny demo: nothing recomputed that did not change,
byte-identical extractions, and a team sharing results through remotes and a cache root.

The project's own ``dvc.yaml``, ``.dvcignore`` and ``params.yaml`` (shrunk to toy sizes)
run in a git repository under ``tmp_path`` together with copies of the code folders the
stages depend on; the commands are the installed ``iqa-*`` ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE = ("cache", "extract", "heads", "pipelines")
ENV = {"DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.org"}

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")


def _tiny(params: dict) -> dict:
    params["demo"].update(n_refs=3, levels=2, size="32,48", repeats=2, ratios="0.34,0.33,0.33",
                          distortions="gaussian_blur,white_noise")
    params["extract"]["batch_size"] = 4
    params["arch"]["nss"] = {"size": 32, "grid": 8, "colour": False, "moments": False}
    params["train"].update(heads=["sfem_nr"], repeats=2)
    tiny = {"epochs": 1, "batch_size": 2, "lr": 1.0e-3}
    params["head_train"] = {h: dict(tiny) for h in ("sfem_fr", "sfem_nr", "prompt", "qfd")}
    small = {"width": 4, "scales": [1], "pool_size": 2}
    params["head_config"].update(sfem_fr=dict(small), sfem_nr=dict(small))
    return params


def run(cwd: Path, *args: str) -> str:
    env = {**os.environ, **ENV}  # read now: the S3 fixture sets credentials at run time
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def write_params(repo: Path, params: dict) -> None:
    text = (ROOT / "params.yaml").read_text().split("\n")[0] + "\n"  # keep the header line
    (repo / "params.yaml").write_text(text + yaml.safe_dump(params, sort_keys=False))


def new_repo(path: Path, params: dict) -> Path:
    """A git + DVC repository at ``path`` with the project's pipeline and ``params``."""
    path.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    for folder in CODE:
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(path, params)
    run(path, "git", "init", "-q")
    run(path, "dvc", "init", "-q")
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clone A: the pipeline run once and committed."""
    params = _tiny(yaml.safe_load((ROOT / "params.yaml").read_text()))
    a = new_repo(tmp_path_factory.mktemp("team") / "a", params)
    out = run(a, "dvc", "repro")
    for stage in ("demo", "extract@nss-demo", "train@sfem_nr-nss-demo", "eval"):
        assert f"Running stage '{stage}'" in out, out
    run(a, "git", "add", "-A")
    run(a, "git", "commit", "-qm", "pipeline")
    return a


def test_nothing_changed_after_repro(repo: Path) -> None:
    assert "Data and pipelines are up to date" in run(repo, "dvc", "status")
    out = run(repo, "dvc", "repro")
    assert "Running stage" not in out


def test_adding_a_head_reruns_only_that_heads_stages(repo: Path, tmp_path: Path) -> None:
    c = tmp_path / "c"
    shutil.copytree(repo, c, symlinks=True)
    params = yaml.safe_load((c / "params.yaml").read_text())
    params["train"]["heads"] = ["sfem_nr", "sfem_fr"]
    write_params(c, params)
    status = run(c, "dvc", "status")
    changed = [line.rstrip(":") for line in status.splitlines() if line and line[0] != "\t"]
    assert changed == ["train@sfem_fr-nss-demo"], status
    out = run(c, "dvc", "repro")
    ran = [line for line in out.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'train@sfem_fr-nss-demo':", "Running stage 'eval':"], out


def test_two_extractions_are_byte_identical(repo: Path, tmp_path: Path) -> None:
    args = ["iqa-extract", "--backbone", "nss", "--params", "params.yaml", "--manifest",
            "data/demo/manifest.csv", "--batch-size", "4"]
    for name in ("one", "two"):
        run(repo, *args, "--out", str(tmp_path / f"{name}.zarr"))
    one = {p.relative_to(tmp_path / "one.zarr"): p.read_bytes()
           for p in sorted((tmp_path / "one.zarr").rglob("*")) if p.is_file()}
    two = {p.relative_to(tmp_path / "two.zarr"): p.read_bytes()
           for p in sorted((tmp_path / "two.zarr").rglob("*")) if p.is_file()}
    assert one and one == two


def _clone_and_pull(repo: Path, dest: Path, remote: str) -> str:
    run(dest.parent, "git", "clone", "-q", str(repo), dest.name)
    run(dest, "dvc", "pull", "-r", remote)
    assert "Data and pipelines are up to date" in run(dest, "dvc", "status")
    return run(dest, "dvc", "repro")


def test_a_teammate_pulls_and_recomputes_nothing(repo: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(repo, a, symlinks=True)
    run(a, "dvc", "remote", "add", "shared", str(tmp_path / "remote"))
    run(a, "dvc", "push", "-r", "shared")
    run(a, "git", "commit", "-qam", "remote")
    out = _clone_and_pull(a, tmp_path / "b", "shared")
    assert "Running stage" not in out and "didn't change, skipping" in out


def test_a_teammate_pulls_from_s3(repo: Path, tmp_path: Path, s3_endpoint: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    pytest.importorskip("dvc_s3")
    s3fs.S3FileSystem(endpoint_url=s3_endpoint).mkdir("dvc-remote")
    a = tmp_path / "a"
    shutil.copytree(repo, a, symlinks=True)
    run(a, "dvc", "remote", "add", "s3", "s3://dvc-remote/iqa")
    run(a, "dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint)
    run(a, "dvc", "push", "-r", "s3")
    run(a, "git", "commit", "-qam", "s3 remote")
    out = _clone_and_pull(a, tmp_path / "b", "s3")
    assert "Running stage" not in out


def test_a_teammates_repro_reuses_the_cache_root(repo: Path, tmp_path: Path) -> None:
    a = tmp_path / "a"
    shutil.copytree(repo, a, symlinks=True)
    params = yaml.safe_load((a / "params.yaml").read_text())
    params["cache_root"] = str(tmp_path / "shared-root")
    write_params(a, params)
    out = run(a, "dvc", "repro", "extract")
    assert "computed 60 rows" in out, out  # (12 images + 3 references) x 4 views, filed
    run(a, "git", "commit", "-qam", "cache root")
    e = tmp_path / "e"  # another clone: no DVC cache, no remote, the same cache root
    run(tmp_path, "git", "clone", "-q", str(a), "e")
    out = run(e, "dvc", "repro", "extract")
    assert "computed 0 rows, 60 copied from stores in the cache root" in out, out


def test_the_params_header_example_runs(repo: Path, tmp_path: Path) -> None:
    header = (ROOT / "params.yaml").read_text().splitlines()[:6]
    example = next(line.strip("# ").split() for line in header if "dvc exp run" in line)
    assert example[:4] == ["dvc", "exp", "run", "-S"]
    key, _, _ = example[4].partition("=")
    c = tmp_path / "c"
    shutil.copytree(repo, c, symlinks=True)
    head = key.split(".")[1]
    params = yaml.safe_load((c / "params.yaml").read_text())
    params["train"]["heads"] = [head]
    write_params(c, params)
    run(c, "git", "commit", "-qam", f"train {head}")
    out = run(c, "dvc", "exp", "run", "-S", f"{key}=2")
    assert f"Running stage 'train@{head}-nss-demo'" in out
