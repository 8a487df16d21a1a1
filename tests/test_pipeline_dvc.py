"""The DVC pipeline end to end on a tiny demo: nothing recomputed that did not change,
byte-identical extractions, and a team sharing results through remotes and a cache root.

The project's own ``dvc.yaml``, ``.dvcignore`` and ``params.yaml`` (shrunk to toy sizes)
run in a git repository under ``tmp_path`` together with copies of the code folders the
stages depend on; the commands are the installed ``iqa-*`` ones.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE = ("cache", "extract", "heads", "iqadata", "pipelines")
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


# ---------------------------------------------------------------- what a stage depends on

# Modules an extraction or training run imports that do not decide its numbers, and why.
NOT_DECIDING = {
    "cache/console.py": "command-line conventions and messages",
    "cache/outputs.py": "the output markers of commands",
    "iqadata/content.py": "refuses a split that leaks content; selects nothing",
    "cache/claims.py": "which writer computes which shard",
    "cache/root.py": "the cache root: rows copied from stores of the same fingerprint",
    "cache/transfer.py": "copies between backends, verified",
}
NOT_DECIDING_EXTRACTION = {
    **NOT_DECIDING,
    "iqadata/split_file.py": "an extraction reads no split",
    "extract/cli.py": "options and messages; the stage passes every option",
    "extract/fill.py": "which missing shard to compute next, interrupts",
    "extract/job.py": "carries the run's settings and donor rows down the fill path",
    "extract/distributed.py": "where shards are computed (a dask cluster)",
}
NOT_DECIDING_TRAINING = {
    **NOT_DECIDING,
    "cache/shard_writer.py": "writes stores (a training run reads one)",
    "heads/workers.py": "where runs train (worker processes): the same bytes as in one",
}


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imported(path: Path, name: str) -> set[str]:
    """The project modules ``path`` (module ``name``) imports, at its top or in functions."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for full in names:
            while full and full.split(".")[0] in CODE and _module_file(full) is None:
                full = full.rpartition(".")[0]
            if full and full.split(".")[0] in CODE:
                found.add(full)
    return found


def _closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imported(_module_file(name), name)  # type: ignore[arg-type]
    return seen


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.split("/")[0] in CODE]


def _uncovered(roots: list[str], deps: list[str], exempt: dict[str, str]) -> list[str]:
    """Modules in the import closure of ``roots`` that ``deps`` leaves out and ``exempt``
    gives no reason for (a package's ``__init__`` only names things lazily)."""
    out = []
    for name in sorted(_closure(roots)):
        rel = _module_file(name).relative_to(ROOT).as_posix()  # type: ignore[union-attr]
        listed = any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)
        if not (listed or rel in exempt or rel.endswith("/__init__.py")):
            out.append(rel)
    return out


def test_every_module_that_decides_a_stages_numbers_is_its_dependency() -> None:
    from extract.registry import BACKBONES
    from heads.registry import HEADS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    extract = _code_deps(stages["extract"])
    families = sorted({v.partition(":")[0] for v in BACKBONES.values()})
    assert _uncovered(["extract.run", *families], extract, NOT_DECIDING_EXTRACTION) == []
    heads = sorted({v.partition(":")[0] for v in HEADS.values()})
    for name in ("train", "mixed"):
        deps = _code_deps(stages[name] if name == "train" else stages[name]["do"])
        assert _uncovered(["heads.experiment", *heads], deps, NOT_DECIDING_TRAINING) == [], name
    train = _code_deps(stages["train"])
    pairs = ((extract, NOT_DECIDING_EXTRACTION), (train, NOT_DECIDING_TRAINING))
    for deps, exempt in pairs:
        assert [d for d in deps if not (ROOT / d).exists()] == []
        covers = [m for m in exempt if any(m == d or m.startswith(d + "/") for d in deps)]
        assert covers == [], f"a dependency covers modules that decide nothing: {covers}"


def _changed(repo: Path) -> dict[str, list[str]]:
    """Stage -> the dependencies ``dvc status`` reports as changed."""
    status = json.loads(run(repo, "dvc", "status", "--json"))
    out: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict) and "changed deps" in entry:
                out[stage] = sorted(entry["changed deps"])
    return out


def test_an_edit_reruns_only_the_stages_it_decides(repo: Path, tmp_path: Path) -> None:
    """A message module edited: no extraction or training stage changes (with folder
    dependencies on ``cache`` every stage did); a backbone module edited: its extraction."""
    c = tmp_path / "c"
    shutil.copytree(repo, c, symlinks=True)
    assert _changed(c) == {}
    with (c / "cache" / "console.py").open("a") as f:
        f.write("\n# a reworded message\n")
    with (c / "cache" / "outputs.py").open("a") as f:
        f.write("\n# a reworded message\n")
    assert _changed(c) == {}
    with (c / "extract" / "nss.py").open("a") as f:
        f.write("\n# a change to the backbone\n")
    assert _changed(c) == {"extract@nss-demo": ["extract/nss.py"]}
