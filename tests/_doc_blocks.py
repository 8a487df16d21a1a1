"""The command blocks of README.md and docs/*.md, their test markers, and how to run them.

Every fenced block in ``bash`` (or ``sh``, ``shell``, ``console``) or ``python`` carries a
marker on the line right before it, ``<!-- test: SCENARIO [NEED ...] -->``, that says
where ``tests/test_doc_blocks.py`` and ``tests/test_readme.py`` run it. Any other fenced
block names its language (``text``, ``yaml``); a bare fence is a problem too, so that no
command hides in one. ``NEED`` words (``gpu`` blocks only) are paths, relative to the
scenario's workspace, that the block reads without making them.

Bash blocks run as scripts (``bash -euo pipefail``) in the scenario's workspace with the
test interpreter's ``bin`` first on ``PATH``; commands of blocks that cannot run here are
parsed through their click command instead (:func:`parse_command`).
"""

from __future__ import annotations

import configparser
import importlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SCENARIOS = ("ci", "demo", "live", "releases", "gpu")
SHELLS = ("bash", "sh", "shell", "console")
MARKED = (*SHELLS, "python")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")  # any indentation, ``` or ~~~
_MARKER = re.compile(r"^\s*<!-- test: (.*?) -->\s*$")
_OPERATORS = {"&&", "||", "|", ";", "&"}
# The environment a block runs in, besides PATH: no hub, no analytics, no progress bars,
# one OpenMP thread per process (the suite runs on shared cores; the commands' own
# --threads/--jobs options still apply).
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "TQDM_DISABLE": "1",
    "OMP_NUM_THREADS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its marker and its text."""

    doc: str  # path relative to the repository root
    line: int  # line of the opening fence (1-based)
    lang: str
    marker: str | None  # the marker's text, None without one
    text: str

    @property
    def scenario(self) -> str | None:
        return self.marker.split()[0] if self.marker else None

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(self.marker.split()[1:]) if self.marker else ()

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(paths: tuple[Path, ...] = DOCS) -> list[Block]:
    """Every fenced block of ``paths``, in document order."""
    found = []
    for path in paths:
        doc = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        k = 0
        while k < len(lines):
            fence = _FENCE.match(lines[k])
            if fence is None:
                k += 1
                continue
            close = fence.group(1)
            end = next(
                (j for j in range(k + 1, len(lines)) if lines[j].strip().startswith(close)),
                len(lines),
            )
            marker = _MARKER.match(lines[k - 1]) if k else None
            text = textwrap.dedent("\n".join(lines[k + 1 : end]) + "\n")
            note = marker.group(1).strip() if marker else None
            found.append(Block(doc, k + 1, fence.group(2), note, text))
            k = end + 1
    return found


def problems(found: list[Block]) -> list[str]:
    """Blocks that no test would run: unmarked, an unknown scenario, no language."""
    out = []
    for b in found:
        if not b.lang:
            out.append(f"{b.id}: a fence without a language (use ```text for illustration)")
        elif b.lang in MARKED and b.marker is None:
            out.append(f"{b.id}: ```{b.lang} block without a '<!-- test: SCENARIO -->' line")
        elif b.lang in MARKED and b.scenario not in SCENARIOS:
            out.append(f"{b.id}: unknown scenario {b.scenario!r} (one of {', '.join(SCENARIOS)})")
        elif b.lang not in MARKED and b.marker is not None:
            out.append(f"{b.id}: a test marker on a ```{b.lang} block, which no test runs")
        elif b.needs and b.scenario != "gpu":
            out.append(f"{b.id}: only gpu blocks name what they need ({' '.join(b.needs)})")
    return out


def commands(text: str) -> Iterator[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped,
    split at ``&&``, ``||``, ``|``, ``;`` and ``&``."""
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in lexer:
            if token in _OPERATORS:
                yield from [words] if words else []
                words = []
            else:
                words.append(token)
        yield from [words] if words else []


def block_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a block: this interpreter's scripts first on PATH, this
    checkout's packages first on PYTHONPATH."""
    env = {**os.environ, **ENV, **(extra or {})}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_bash(block: Block, cwd: Path, timeout: float = 600) -> str:
    """Run ``block`` as a bash script in ``cwd``; its output, or a failed assertion that
    names the block and shows the end of the trace."""
    script = ["bash", "-euo", "pipefail", "-x", "-c", block.text]
    done = subprocess.run(
        script, cwd=cwd, env=block_env(), capture_output=True, text=True, timeout=timeout
    )
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"{block.id} exited {done.returncode} in {cwd}:\n{tail}"
    return done.stdout + done.stderr


def run_python(block: Block, cwd: Path, timeout: float = 600) -> str:
    """Run a python block with this interpreter in ``cwd``; its standard output."""
    script = [sys.executable, "-c", block.text]
    done = subprocess.run(
        script, cwd=cwd, env=block_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{block.id} failed in {cwd}:\n{done.stderr[-4000:]}"
    return done.stdout


# ---------------------------------------------------------------- parsing without running


def console_commands() -> dict[str, click.Command]:
    """The project's console scripts (setup.cfg's entry points) -> their click commands."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options.entry_points"]["console_scripts"].split("\n"):
        if "=" in line:
            name, target = (part.strip() for part in line.split("=", 1))
            module, attr = target.split(":")
            out[name] = getattr(importlib.import_module(module), attr)
    return out


def _convert(ctx: click.Context, cmd: click.Command, values: dict) -> None:
    """Required parameters present; values of non-path types converted (choices,
    ranges, numbers); paths are not looked up, since nothing was made."""
    for param in cmd.params:
        value = values.get(param.name)  # type: ignore[arg-type]
        if value is None or value == ():
            if param.required:
                raise click.MissingParameter(ctx=ctx, param=param)
            continue
        if not isinstance(param.type, click.Path | click.File):
            param.type_cast_value(ctx, value)


def parse_command(words: list[str], known: dict[str, click.Command]) -> None:
    """Parse ``words`` (an ``iqa-*`` command line) as its click command would, without
    running it: unknown options, bad choices, missing values and required options, and
    extra arguments raise ``click.UsageError``."""
    cmd, args, name = known[words[0]], list(words[1:]), words[0]
    while True:
        ctx = click.Context(cmd, info_name=name)
        values, rest, _ = cmd.make_parser(ctx).parse_args(args)
        _convert(ctx, cmd, values)
        if not isinstance(cmd, click.Group):
            if rest:
                raise click.UsageError(f"unexpected extra argument(s) {rest}", ctx)
            return
        if not rest:
            raise click.UsageError("no subcommand", ctx)
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise click.UsageError(f"no such command {rest[0]!r}", ctx)
        cmd, args, name = sub, rest[1:], f"{name} {rest[0]}"
