"""``iqa-data preset`` and ``iqa-data check``: a paper's protocol as params.yaml, and what a
run of it still lacks (see :mod:`iqadata.presets`)."""

from __future__ import annotations

import dataclasses
import json

import click

from cache.console import Command, DataProblem


@click.command("preset", cls=Command)
@click.argument("name", required=False)
@click.option("--list", "show", is_flag=True, help="List the presets and what each reproduces.")
@click.option("--out", default="params.yaml", show_default=True,
              help="Params file to write (new, or an iqa params file; nothing else).")
@click.option("--data-root", help="Folder holding the datasets' releases (default: data/raw/).")
@click.option("--models", help="Folder holding the checkpoints (default: models/).")
def preset_cmd(name: str | None, show: bool, out: str, data_root: str | None,
               models: str | None) -> None:
    """Write preset NAME (a paper table's protocol) as the pipeline's params file.

    Then 'iqa-data check' lists what is missing and 'dvc repro' runs the protocol;
    'iqa-data preset demo' restores the shipped demo.
    """
    from iqadata.presets import describe, names, write_preset

    if show or name is None:
        for preset in names():
            click.echo(f"{preset}\n    {describe(preset)}")
        return
    path = write_preset(name, out, data_root=data_root, models=models)
    click.echo(f"wrote {path} (preset {name}); next: iqa-data check --params {path}")


@click.command("check", cls=Command)
@click.option("--params", "params_file", default="params.yaml", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="The params file to check.")
@click.option("--json", "as_json", is_flag=True, help="Print what is missing as JSON.")
def check_cmd(params_file: str, as_json: bool) -> None:
    """List what a run of PARAMS lacks: dataset folders, label files, backbone weights.

    Weights whose official file name carries its hash prefix are hashed and compared.
    Exits 1 when something is missing.
    """
    from iqadata.presets import check

    problems = check(params_file)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(p) for p in problems], indent=1))
    else:
        for problem in problems:
            click.echo(f"missing: {problem.line()}")
    if problems:
        raise DataProblem(f"{len(problems)} thing(s) missing for {params_file}; see above")
    if not as_json:
        click.echo(f"{params_file}: every dataset and checkpoint is in place")
