"""Every command block of README.md and docs/*.md runs as written.

Each ```bash and ```python block is marked ``<!-- test: SCENARIO -->`` on the line before
it (tests/_doc_blocks.py); a block without a marker, or with an unknown scenario, fails
here, so none can dodge. The scenarios, each in a workspace of tests/_doc_workspaces.py:

* ``ci``: every command is one that ``.ci/run`` runs (CI runs them);
* ``demo``: in a small demo repository after ``dvc repro`` (tests/test_readme.py);
* ``live``: in document order, on a tiny LIVE Release 2 in its official layout with real,
  decodable images (tests/_live_release.py), and its numbers checked;
* ``releases``: each block on the synthesised official layouts of tests/_layouts.py at
  the paths it names, every manifest checked against the official counts;
* ``gpu``: on a machine with CUDA and the weights a block names under ``models/``, run as
  written after the live blocks; elsewhere every ``iqa-*`` command is parsed by its click
  command (unknown options, bad choices, missing values fail) and python blocks are
  compiled with their imports resolved, and the test is skipped saying what did not run.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import click
import pytest
import torch
from _doc_blocks import (
    ROOT,
    SCENARIOS,
    SHELLS,
    Block,
    blocks,
    commands,
    console_commands,
    parse_command,
    problems,
    run_bash,
    run_python,
)
from _doc_workspaces import (
    Releases,
    ReleaseWorkspace,
    gpu_workspace,
    live_workspace,
    models_dir,
)

from iqadata.importers import KNOWN
from iqadata.manifest import read_manifest, read_split

BLOCKS = blocks()


def _of(scenario: str, langs: tuple[str, ...] = SHELLS) -> list:
    return [pytest.param(b, id=b.id) for b in BLOCKS if b.scenario == scenario and b.lang in langs]


def _option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


# ---------------------------------------------------------------- markers


def test_every_block_is_marked_with_a_known_scenario() -> None:
    assert problems(BLOCKS) == []
    assert {b.scenario for b in BLOCKS if b.marker} == set(SCENARIOS)


def test_an_unmarked_or_unknown_block_is_reported(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "intro\n```bash\nls\n```\n<!-- test: nope -->\n```python\npass\n```\n"
        "```\nplain\n```\n<!-- test: live data/raw/x -->\n```bash\nls\n```\n"
        "- a list\n\n  ~~~sh\n  ls\n  ~~~\n"
    )
    found = problems(blocks((doc,)))
    assert [p.split(": ", 1)[1][:20] for p in found] == [
        "```bash block withou",
        "unknown scenario 'no",
        "a fence without a la",
        "only gpu blocks name",
        "```sh block without ",
    ]


# ---------------------------------------------------------------- ci


def _normal(words: list[str]) -> tuple[str, ...]:
    """A command as CI and the docs may spell it: no ``python -m``, no quiet flags."""
    if words[:2] in (["python", "-m"], ["python3", "-m"]):
        words = words[2:]
    return tuple(w for w in words if w not in ("-q", "--quiet"))


@pytest.mark.parametrize("block", _of("ci"))
def test_ci_block_is_what_ci_runs(block: Block) -> None:
    ci = {_normal(c) for c in commands((ROOT / ".ci" / "run").read_text())}
    missing = [" ".join(c) for c in commands(block.text) if _normal(c) not in ci]
    assert not missing, f"{block.id}: .ci/run does not run {missing}"


# ---------------------------------------------------------------- releases


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Releases:
    return Releases(tmp_path_factory.mktemp("releases"))


def _check_import(workspace: Path, words: list[str]) -> None:
    """The manifest an import wrote: the official count for a known dataset."""
    manifest = read_manifest(workspace / _option(words, "--out"))
    key = _option(words, "--name") if words[2] in ("csv", "pyiqa") else words[2]
    if key in KNOWN:
        assert len(manifest.rows) == KNOWN[key].expected.images, " ".join(words)
    else:
        assert len(manifest.rows) >= 10 and manifest.ref_ids, " ".join(words)
    if "--splits-out" in words:
        assert list((workspace / _option(words, "--splits-out")).glob("*.json")), words


@pytest.mark.parametrize("block", _of("releases"))
def test_release_block_runs(block: Block, releases: Releases, tmp_path: Path) -> None:
    workspace = ReleaseWorkspace(tmp_path / "ws", releases).prepare(block)
    run_bash(block, workspace)
    for words in commands(block.text):
        if words[:2] == ["iqa-data", "import"]:
            _check_import(workspace, words)
        elif words[:2] == ["iqa-data", "split"]:
            made = sorted((workspace / _option(words, "--out")).glob("split_*.json"))
            assert len(made) == int(_option(words, "--repeats")), " ".join(words)


# ---------------------------------------------------------------- live

LIVE = [b for b in BLOCKS if b.scenario == "live"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The live workspace after every live block ran, in document order."""
    workspace = live_workspace(tmp_path_factory.mktemp("live") / "ws")
    for block in LIVE:
        run_bash(block, workspace)
    return workspace


def _median_srcc(run: Path) -> float:
    metrics = json.loads((run / "metrics.json").read_text())
    return float(metrics["summary"]["test"]["srcc"]["median"])


def test_live_blocks_run_and_their_numbers_hold(live: Path) -> None:
    assert [b.id for b in LIVE] and "iqa-data split" in LIVE[0].text
    manifest = read_manifest(live / "data/live/manifest.csv")
    assert (len(manifest.rows), len(manifest.ref_ids)) == (779, 29)  # the official counts
    splits = sorted((live / "data/live/splits").glob("split_*.json"))
    assert len(splits) == 10 and len(read_split(splits[0]).val) > 0
    audit = json.loads((live / "data/live/audit.json").read_text())
    assert audit["pairs"] == []  # the images are distinct, within and across references
    trained = _median_srcc(live / "runs/live/nss/sfem_fr")
    assert trained > 0.5, f"sfem_fr median test SRCC {trained:.3f} on the tiny LIVE"
    crossed = _median_srcc(live / "runs/cross/live-mine")
    assert crossed > 0.3, f"sfem_fr trained on LIVE, median SRCC {crossed:.3f} on mine"
    table = (live / "reports/live/table.md").read_text()
    assert "## live" in table and "## mine" in table


# ---------------------------------------------------------------- gpu


def _needs(block: Block) -> list[str]:
    """What ``block`` reads and its workspace does not make: the ``models/`` paths it
    names and its marker's; a python block also what the gpu blocks before it need."""
    same = [b for b in BLOCKS if b.doc == block.doc and b.scenario == "gpu"]
    chain = same[: same.index(block) + 1] if block.lang == "python" else [block]
    needs: list[str] = []
    for b in chain:
        words = [w for c in commands(b.text) for w in c] if b.lang in SHELLS else []
        needs += [*b.needs, *(w for w in words if w.startswith("models/"))]
    return list(dict.fromkeys(needs))


def _lacking(block: Block) -> list[str]:
    """CUDA and the needs of ``block`` where this machine does not have them."""
    out = [] if torch.cuda.is_available() else ["CUDA"]
    for need in _needs(block):
        top, _, rest = need.partition("/")
        where = models_dir() / rest if top == "models" else ROOT / need
        if not where.exists():
            out.append(str(where))
    return out


@pytest.fixture(scope="module")
def gpu(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    live_done = request.getfixturevalue("live")
    return gpu_workspace(live_done, tmp_path_factory.mktemp("gpu") / "ws")


def _parse_shell(block: Block) -> list[str]:
    """Parse every iqa-* command of ``block``; the other commands (not run), named."""
    known, others = console_commands(), []
    for words in commands(block.text):
        if words[0] in known:
            try:
                parse_command(words, known)
            except click.ClickException as err:
                pytest.fail(f"{block.id}: {' '.join(words)}\n  {err.format_message()}")
        else:
            others.append(words[0])
    return others


def _parse_python(block: Block) -> None:
    """Compile ``block`` and import what it imports."""
    tree = ast.parse(compile(block.text, block.id, "exec", ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block.id}: {node.module}.{alias.name}"


def test_the_gpu_workspace_holds_what_the_gpu_blocks_read(gpu: Path) -> None:
    """Built here too, so that a machine with CUDA and weights finds it working."""
    read = ("data/live/manifest.csv", "data/live/splits/split_00.json", "my_prompt.csv")
    for path in (*read, "data/raw/mine/dist", "dvc.yaml", "iqadata/importers", ".dvc"):
        assert (gpu / path).exists(), path
    assert (gpu / "models").resolve() == models_dir().resolve()
    prompt = (gpu / "my_prompt.csv").read_text().splitlines()
    assert prompt[0] == "image,score" and len(prompt) == 11
    assert all((gpu / line.split(",")[0]).is_file() for line in prompt[1:])


@pytest.mark.parametrize("block", _of("gpu", (*SHELLS, "python")))
def test_gpu_block(block: Block, request: pytest.FixtureRequest) -> None:
    lacking = _lacking(block)
    if not lacking:
        workspace = request.getfixturevalue("gpu")
        (run_python if block.lang == "python" else run_bash)(block, workspace)
        return
    if block.lang == "python":
        _parse_python(block)
        pytest.skip(f"{block.id} compiled, not run: no {', '.join(lacking)}")
    others = sorted(set(_parse_shell(block)))
    also = f"; {', '.join(others)} not parsed" if others else ""
    pytest.skip(f"{block.id} parsed, not run: no {', '.join(lacking)}{also}")


# ---------------------------------------------------------------- the checks can fail


def _scratch(block: Block, old: str, new: str) -> Block:
    assert old in block.text, f"{block.id} no longer holds {old!r}"
    return Block(block.doc, block.line, block.lang, block.marker, block.text.replace(old, new))


def test_a_broken_option_fails_the_parse() -> None:
    sam = next(b for b in BLOCKS if b.scenario == "gpu" and "sam_vit_h" in b.text)
    for old, new in (("--dtype bf16", "--dtype bf61"), ("--views", "--view")):
        with pytest.raises(pytest.fail.Exception, match=re.escape(new.split()[-1])):
            _parse_shell(_scratch(sam, old, new))


def test_a_broken_block_fails_when_run(tmp_path: Path, releases: Releases) -> None:
    split = next(b for b in BLOCKS if b.scenario == "releases" and "iqa-data split" in b.text)
    broken = _scratch(split, "--ratios 0.6,0.2,0.2", "--ratios 0.6,0.2,0.3")
    workspace = ReleaseWorkspace(tmp_path / "ws", releases).prepare(broken)
    with pytest.raises(AssertionError, match="exited 2"):
        run_bash(broken, workspace)
