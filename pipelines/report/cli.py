"""``iqa-eval``: paper-style tables, figures and DVC metrics from training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cache.console import Command

FORMATS = ("png", "svg", "pdf")


def _logistic(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    return None if value == "none" else int(value)


def _formats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise click.BadParameter(f"expected a comma-separated list of {', '.join(FORMATS)}, "
                                 f"got {value!r}")
    return names


@click.command(cls=Command)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Report folder (new, empty, or an earlier report).")
@click.option("--logistic", type=click.Choice(["none", "4", "5"]), default="none",
              show_default=True, callback=_logistic,
              help="Add the PLCC after a 4- or 5-parameter logistic fit (VQEG).")
@click.option("--plot-format", "formats", default="png", show_default=True,
              callback=_formats, help="Figure formats, comma-separated: png, svg, pdf.")
@click.option("--no-baselines", is_flag=True, help="Leave out the PSNR and SSIM rows.")
@click.option("--no-plots", is_flag=True, help="Tables only: no scatter plots or curves.")
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Fallback for manifests that moved: DATA_DIR/<dataset>/manifest.csv is "
                   "used when the path a run recorded does not exist.")
@click.option("--paper", default="",
              help="Lay the results out like a paper table too (a preset's 'paper', e.g. "
                   "sam_iqa_table1): its rows and datasets, ours beside the published figures.")
@click.option("--json", "as_json", is_flag=True, help="Print table.json instead of Markdown.")
def main(runs: tuple[str, ...], out: str, formats: tuple[str, ...], no_baselines: bool,
         no_plots: bool, paper: str, as_json: bool, **report: Any) -> None:
    """Tabulate the test SRCC/PLCC of iqa-train-head RUNS, one table per dataset.

    A row per run folder (median over its repeats, with the std), then PSNR and SSIM on
    full-reference datasets, scored on the same test images through the manifest and split
    files the runs recorded; RMSE on the dataset's own scale; the published figures of the
    matching paper table beside ours; SRCC per distortion type. Writes OUT/table.md,
    table.tex, table.json, metrics.json (for 'dvc metrics show'), and per run a scatter
    plot and training curves (PNG/SVG/PDF with CSV data for 'dvc plots show').
    """
    from pipelines.report.table_format import markdown_table
    from pipelines.report.write import table_json, write_report

    # report: --logistic and --data-dir, passed on as they are
    tables = write_report(runs, out, baselines=not no_baselines,
                          formats=() if no_plots else formats, paper=paper or None, **report)
    if as_json:
        click.echo(json.dumps(table_json(tables), indent=1))
        return
    click.echo("\n".join(markdown_table(t) for t in tables.values()), nl=False)
    names = ", ".join(str(Path(out) / n) for n in ("table.md", "table.tex", "table.json",
                                                    "metrics.json", "scatter/", "curves/"))
    click.echo(f"written: {names}", err=True)


if __name__ == "__main__":
    main()
