"""``iqa-data``: import label files into manifests, make splits, build the demo set.

A thin click layer: each command parses its options and calls one library function
(:func:`pipelines.importers.import_to`, :func:`pipelines.importers.import_csv`,
:func:`pipelines.splits.make_splits`, :func:`pipelines.demo.build_demo`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from cache.manifest import SCORE_KINDS, Manifest, ManifestError, read_manifest, write_manifest
from pipelines.demo import DISTORTIONS, REFERENCES, build_demo
from pipelines.importers import IMPORTERS, import_csv, import_to
from pipelines.importers.generic import MAPPABLE
from pipelines.splits import make_splits, normalize_ratios, write_splits

# parameter name -> option, for the options that only 'import csv' takes
CSV_OPTIONS = {
    "labels": "--labels",
    "columns": "--map",
    "dataset": "--name",
    "kind": "--kind",
    "lower_better": "--lower-better",
    "score_range": "--range",
}


def _numbers(cast: Callable[[str], Any], count: tuple[int, ...]) -> Callable[..., Any]:
    """A click callback parsing ``a,b[,c]`` into a tuple of ``cast`` values."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            values = tuple(cast(v) for v in value.split(","))
        except ValueError:
            raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
        if len(values) not in count:
            raise click.BadParameter(
                f"expected {' or '.join(map(str, count))} values, got {value!r}"
            )
        return values

    return parse


def _ratios(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    values = _numbers(float, (2, 3))(ctx, param, value)
    try:
        normalize_ratios(values)
    except ManifestError as err:
        raise click.BadParameter(str(err)) from None
    return values


def _score_range(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    values = _numbers(float, (2,))(ctx, param, value)
    if values is not None and not values[0] < values[1]:
        raise click.BadParameter(f"expected LOW,HIGH with LOW < HIGH, got {value!r}")
    return values


def _mapping(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    pairs = [item.partition("=") for item in value.split(",")]
    bad = [k for k, sep, v in pairs if not sep or not v or k not in MAPPABLE]
    if bad:
        raise click.BadParameter(
            f"expected FIELD=COLUMN pairs with FIELD in {list(MAPPABLE)}, got {bad}"
        )
    return {k: v for k, _, v in pairs}


def _fail(err: Exception) -> click.ClickException:
    return click.ClickException(str(err))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Dataset side of the IQA feature-cache pipeline: manifests, splits, demo set."""


@main.command("import")
@click.argument("name", type=click.Choice([*IMPORTERS, "csv"]))
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset folder in its official download layout (default for csv: the CSV's folder).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Manifest CSV to write (only after every check passed).",
)
@click.option(
    "--no-count-check",
    is_flag=True,
    help="Skip the official image/reference counts (partial or extended copies).",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="csv only: the label CSV to import.",
)
@click.option(
    "--map",
    "columns",
    callback=_mapping,
    help="csv only: FIELD=COLUMN pairs, e.g. image=dist_name,ref=ref_name,score=dmos.",
)
@click.option("--name", "dataset", help="csv only: dataset key recorded in the manifest.")
@click.option(
    "--kind",
    type=click.Choice(SCORE_KINDS),
    default="MOS",
    show_default=True,
    help="csv only: label kind.",
)
@click.option("--lower-better", is_flag=True, help="csv only: a lower score means better quality.")
@click.option(
    "--range",
    "score_range",
    callback=_score_range,
    metavar="LOW,HIGH",
    help="csv only: nominal score range (default: the data's min,max).",
)
def import_cmd(
    name: str, root: Path | None, out: Path, no_count_check: bool, **csv_opts: Any
) -> None:
    """Import dataset NAME (or a mapped CSV with NAME=csv) into a manifest CSV."""
    try:
        manifest = _run_import(name, root, out, no_count_check, **csv_opts)
    except ManifestError as err:
        raise _fail(err) from err
    click.echo(f"wrote {out}: {len(manifest.rows)} images, {len(manifest.ref_ids)} references")


def _run_import(
    name: str, root: Path | None, out: Path, no_count_check: bool, **opts: Any
) -> Manifest:
    extra = {"expected": None} if no_count_check else {}
    if name != "csv":
        given = [CSV_OPTIONS[k] for k, v in opts.items() if v not in (None, False, "MOS")]
        if given:
            raise click.UsageError(f"{', '.join(given)}: only for 'import csv'")
        if root is None:
            raise click.MissingParameter(param_hint="'--root'", param_type="option")
        return import_to(name, root, out, **extra)
    for key in ("labels", "columns", "dataset"):
        if opts[key] is None:
            raise click.MissingParameter(param_hint=f"'{CSV_OPTIONS[key]}'", param_type="option")
    manifest = import_csv(
        opts["labels"],
        name=opts["dataset"],
        columns=opts["columns"],
        root=root,
        score_kind=opts["kind"],
        lower_better=opts["lower_better"],
        score_range=opts["score_range"],
    )
    write_manifest(manifest, out)
    return manifest


@main.command("split")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--ratios",
    default="0.6,0.2,0.2",
    show_default=True,
    callback=_ratios,
    help="train,val,test (or train,test) fractions of the images.",
)
@click.option(
    "--repeats",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of random splits.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Base random seed.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for split_00.json, split_01.json, ...",
)
def split_cmd(
    manifest: Path, ratios: tuple[float, ...], repeats: int, seed: int, out: Path
) -> None:
    """Write content-disjoint random splits of MANIFEST (no group spans two parts)."""
    try:
        paths = write_splits(make_splits(read_manifest(manifest), ratios, repeats, seed), out)
    except ManifestError as err:
        raise _fail(err) from err
    click.echo(f"wrote {len(paths)} split files to {out}")


@main.command("demo")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (refs/, images/, manifest.csv, splits/).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for noise and splits.")
@click.option(
    "--n-refs",
    default=len(REFERENCES),
    show_default=True,
    type=click.IntRange(1, len(REFERENCES)),
    help="Number of reference photographs.",
)
@click.option(
    "--levels",
    default=5,
    show_default=True,
    type=click.IntRange(1, 5),
    help="Distortion levels per type.",
)
@click.option(
    "--size",
    default="192,256",
    show_default=True,
    callback=_numbers(int, (2,)),
    metavar="H,W",
    help="Image size in pixels.",
)
@click.option(
    "--distortions",
    default=",".join(DISTORTIONS),
    show_default=True,
    help="Comma-separated distortion types.",
)
@click.option(
    "--splits",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Number of split files (0: none).",
)
@click.option(
    "--ratios",
    default="0.6,0.2,0.2",
    show_default=True,
    callback=_ratios,
    help="Split ratios, train,val,test or train,test.",
)
def demo_cmd(out: Path, distortions: str, **opts: Any) -> None:
    """Build the synthetic demo set (SSIM pseudo-MOS labels) from scikit-image photos."""
    names = [d for d in distortions.split(",") if d]
    unknown = [d for d in names if d not in DISTORTIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {unknown}; known: {list(DISTORTIONS)}", param_hint="'--distortions'"
        )
    manifest = build_demo(out, distortions=names, progress=True, **opts)
    click.echo(f"wrote {out}: {len(manifest.rows)} images, {len(manifest.ref_ids)} references")


def _describe(manifest: Manifest) -> list[str]:
    info, scores = manifest.info, np.array(manifest.scores())
    kinds: dict[str, int] = {}
    for row in manifest.rows:
        kinds[row.distortion or "-"] = kinds.get(row.distortion or "-", 0) + 1
    low, high = info.score_range
    return [
        f"name: {info.name}",
        f"labels: {info.score_kind}, range {low:g}..{high:g}, "
        + ("lower is better" if info.lower_better else "higher is better"),
        f"root: {manifest.root}",
        f"images: {len(manifest.rows)}  references: {len(manifest.ref_ids)}  "
        f"groups: {len({r.group for r in manifest.rows})}",
        f"scores: min {scores.min():.4g}  median {np.median(scores):.4g}  "
        f"mean {scores.mean():.4g}  std {scores.std():.4g}  max {scores.max():.4g}",
        "distortions: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
    ]


@main.command("info")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info_cmd(manifest: Path) -> None:
    """Print counts, groups and score statistics of MANIFEST."""
    try:
        loaded = read_manifest(manifest)
    except ManifestError as err:
        raise _fail(err) from err
    if not loaded.rows:
        raise click.ClickException(f"{manifest}: the manifest has no rows")
    click.echo("\n".join(_describe(loaded)))


if __name__ == "__main__":
    main()
