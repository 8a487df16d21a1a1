"""Every command the package installs follows the same conventions: ``-h``/``--help``,
``--debug``, one-line errors (``cache.console.Command``), and no heavy import at --help."""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cache.console import Command, Group

ROOT = Path(__file__).resolve().parents[1]


def _scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(p.strip() for p in line.split("=")) for line in lines)  # type: ignore[misc]


def _load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("name", sorted(_scripts()))
def test_every_command_uses_the_shared_conventions(name: str) -> None:
    cmd = _load(_scripts()[name])
    commands = [cmd]
    if isinstance(cmd, click.Group):
        assert isinstance(cmd, Group), name
        commands += list(cmd.commands.values())
    for command in commands:
        assert isinstance(command, Command | Group), f"{name} {command.name}"
        for flag in ("-h", "--help"):
            res = CliRunner().invoke(cmd, [flag] if command is cmd else [command.name, flag])
            assert res.exit_code == 0 and "Usage" in res.output, (name, command.name, flag)
        if isinstance(command, Command):
            assert any("--debug" in p.opts for p in command.params), command.name


def test_help_imports_no_heavy_library() -> None:
    """--help of every command stays fast: torch, zarr and diffusers are imported lazily."""
    code = ("import sys; from click.testing import CliRunner; import importlib\n"
            "for t in sys.argv[1:]:\n"
            "    m, _, a = t.partition(':')\n"
            "    CliRunner().invoke(getattr(importlib.import_module(m), a), ['--help'])\n"
            "heavy = [m for m in ('torch', 'zarr', 'diffusers', 'transformers', 'timm', 'h5py')\n"
            "         if m in sys.modules]\n"
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code, *_scripts().values()],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"--help imported {done.stdout.strip()}"
