"""``iqa-eval``: a paper-style results table and scatter plots from training runs."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.report import markdown_table, read_run, write_report


def _manifests(pairs: tuple[str, ...], data_dir: str, datasets: set[str]) -> dict[str, str]:
    out = {}
    for name in datasets:
        default = Path(data_dir) / name / "manifest.csv"
        if default.is_file():
            out[name] = str(default)
    for item in pairs:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise click.BadParameter(f"expected DATASET=MANIFEST.csv, got {item!r}",
                                     param_hint="--manifest")
        out[name] = path
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default="reports", show_default=True, type=click.Path(file_okay=False),
              help="Folder for table.md, table.json and scatter/<run>.png|csv.")
@click.option("--manifest", "manifests", multiple=True, metavar="DATASET=PATH",
              help="Manifest of a dataset (for the PSNR/SSIM baselines); by default "
                   "DATA_DIR/<dataset>/manifest.csv.")
@click.option("--data-dir", default="data", show_default=True,
              help="Where the pipeline keeps data/<dataset>/manifest.csv.")
@click.option("--no-baselines", is_flag=True, help="Skip the PSNR and SSIM rows.")
def main(runs: tuple[str, ...], out: str, manifests: tuple[str, ...], data_dir: str,
         no_baselines: bool) -> None:
    """Tabulate the test SRCC/PLCC (median over splits) of iqa-train-head RUNS.

    One row per head and backbone, plus PSNR and SSIM (scikit-image) on full-reference
    datasets, computed on the same test images; one column per dataset. Also writes a
    scatter plot of predicted vs ground-truth test scores per run (PNG, and CSV for
    'dvc plots show').
    """
    try:
        datasets = {read_run(r).dataset for r in runs}
        table = write_report(runs, out, _manifests(manifests, data_dir, datasets),
                             baselines=not no_baselines)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(markdown_table(table), nl=False)
    click.echo(f"written: {Path(out) / 'table.md'}, {Path(out) / 'table.json'}, "
               f"{Path(out) / 'scatter'}/")

if __name__ == "__main__":
    main()
