"""``iqa-data``: import label files into manifests, make splits, audit content, build the demo set.

A thin click layer: each command parses its options and calls one library function
(:func:`iqadata.importers.get_importer`, :func:`iqadata.importers.import_csv`,
:func:`iqadata.importers.import_pyiqa`, :func:`iqadata.splits.make_splits`,
:func:`iqadata.demo.build_demo`). Outputs are checked first (:mod:`cache.outputs`): a
manifest path must be new or hold a manifest, a split folder new, empty or a split folder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from cache.console import Group, UsageProblem, count_option, out_option, parse_assignments
from cache.outputs import prepare_output_dir
from iqadata.audit_cli import audit_cmd
from iqadata.demo import DISTORTIONS, REFERENCES, DemoSplits, build_demo
from iqadata.importers import (
    IMPORTERS,
    KNOWN,
    check_manifest_output,
    get_importer,
    import_csv,
    import_pyiqa,
    range_note,
    write_with_splits,
)
from iqadata.importers.generic import MAPPABLE, ImageFolders, LabelSpec
from iqadata.importers.known import help_table
from iqadata.importers.pyiqa import column_split
from iqadata.info_cli import info_cmd
from iqadata.manifest import (
    SCORE_KINDS,
    Manifest,
    ManifestError,
    read_manifest,
    with_file_hashes,
    write_manifest,
)
from iqadata.preset_cli import check_cmd, preset_cmd
from iqadata.splits import make_splits, normalize_ratios, write_splits

# parameter -> option, for the options only 'import csv' / 'import pyiqa' take
LIST_OPTIONS = {
    "columns": "--map",
    "dataset": "--name",
    "kind": "--kind",
    "lower_better": "--lower-better/--higher-better",
    "authentic": "--authentic",
    "unusual_orientation": "--unusual-orientation",
    "not_content": "--not-content",
}
NOT_FOR = {
    "csv": {"splits_out": "--splits-out", "sheet": "--sheet"},
    "pyiqa": {"columns": "--map", "authentic": "--authentic", "sheet": "--sheet"},
}
# importer keyword -> option, for the options an official importer may take
LAYOUT_OPTIONS = {
    "label_file": "--label-file",
    "image_dir": "--image-dir",
    "ref_dir": "--ref-dir",
    "score_range": "--range",
    "sheet": "--sheet",
}
MANY_IMAGE_DIRS = ("pipal",)  # datasets whose --image-dir may be repeated
OFFICIAL_SPLIT = "official_split"  # the extra column an official importer keeps its split in


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


def _size_option(default: str) -> Any:
    """``--size H,W``: an image size in pixels."""
    return click.option(
        "--size",
        default=default,
        show_default=True,
        callback=_numbers(int, (2,)),
        metavar="H,W",
        help="Image size in pixels.",
    )


def _ratios(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    values = _numbers(float, (2, 3))(ctx, param, value)
    try:
        normalize_ratios(values)
    except ManifestError as err:
        raise click.BadParameter(str(err)) from None
    return values


def _score_range(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    values = _numbers(float, (2,))(ctx, param, value)
    if values is not None and not (np.all(np.isfinite(values)) and values[0] < values[1]):
        raise click.BadParameter(f"expected finite LOW,HIGH with LOW < HIGH, got {value!r}")
    return values


def _mapping(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    return parse_assignments(value.split(","), "--map", typed=False, keys=tuple(MAPPABLE))


@click.group(cls=Group)
def main() -> None:
    """Dataset side of the IQA feature-cache pipeline: manifests, splits, demo set."""


IMPORT_EPILOG = (
    "Datasets (images[/references] and the release each reads, unmodified; point --root at"
    " its folder):\n\n\b\n" + help_table() + "\n\n"
    "csv: any CSV with a header, mapped with --map (needs --kind, --lower-better or"
    " --higher-better and --range, unless --name is one of the datasets above).\n\n"
    "pyiqa: a pyiqa meta-info CSV (img_name,<label>,... or ref_name,dist_name,<label>,...);"
    " its split columns become split files in --splits-out.\n\n"
    "A release with an official split (koniq10k's sets file, flive's labels640.csv and"
    " labels=640_padded.csv) also gets official_split.json in --splits-out."
)


@main.command("import", epilog=IMPORT_EPILOG)
@click.argument("name", type=click.Choice([*IMPORTERS, "csv", "pyiqa"]), metavar="DATASET")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset folder in its official download layout (default for csv/pyiqa: the CSV's"
    " folder).",
)
@out_option(
    "Manifest CSV to write (only after every check passed; never over another file).",
    folder=False,
)
@click.option(
    "--label-file",
    "--labels",
    "label_file",
    help="The label file: for a dataset, relative to --root (default: its official name); for"
    " csv/pyiqa, the CSV itself.",
)
@click.option(
    "--image-dir",
    multiple=True,
    help="Folder of the (distorted) images, relative to --root (pipal: repeat for several).",
)
@click.option("--ref-dir", help="Folder of the reference images, relative to --root.")
@click.option("--sheet", help="csiq, spaq, bid, uwiqa: the spreadsheet's sheet (any case).")
@click.option("--no-count-check", is_flag=True, help="Skip the official counts (partial copies).")
@click.option(
    "--map",
    "columns",
    callback=_mapping,
    help="csv: FIELD=COLUMN pairs, e.g. image=dist_name,ref=ref_name,score=dmos.",
)
@click.option("--name", "dataset", help="csv/pyiqa: dataset key (a known one supplies labels).")
@click.option("--kind", type=click.Choice(SCORE_KINDS), help="csv/pyiqa: label kind.")
@click.option(
    "--lower-better/--higher-better",
    "lower_better",
    default=None,
    help="csv/pyiqa: which way the scores point (required unless --name is known).",
)
@click.option(
    "--range",
    "score_range",
    callback=_score_range,
    metavar="LOW,HIGH",
    help="csv/pyiqa (and pipal): nominal score range; never taken from the data.",
)
@click.option(
    "--authentic",
    is_flag=True,
    help="csv: no references and every image is distinct content (one group per image).",
)
@click.option(
    "--not-content",
    "not_content",
    multiple=True,
    metavar="COLUMN",
    help="csv/pyiqa: COLUMN looks like a reference or prompt column (ref_img, source, prompt,"
    " ...; see docs/DATASETS.md) but names no content the images share; repeatable.",
)
@click.option(
    "--unusual-orientation",
    is_flag=True,
    help="csv/pyiqa: accept DMOS with higher-is-better or MOS with lower-is-better.",
)
@click.option(
    "--splits-out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the official split files: pyiqa, one per split column (default: 'splits'"
    " beside --out); a dataset with an official split, official_split.json (default:"
    " 'official' beside --out).",
)
def import_cmd(name: str, root: Path | None, out: Path, no_count_check: bool, **opts: Any) -> None:
    """Import DATASET (or a mapped CSV, or a pyiqa meta-info CSV) into a manifest."""
    check_manifest_output(out)
    if name in ("csv", "pyiqa"):
        manifest, note = _import_list(name, root, out, no_count_check, opts)
    else:
        manifest, note = _import_official(name, root, out, no_count_check, opts)
    click.echo(f"wrote {out}: {len(manifest.rows)} images, {len(manifest.ref_ids)} references")
    for line in (note, range_note(manifest)):
        if line:
            click.echo(line)


def _image_dirs(name: str, value: tuple[str, ...]) -> str | tuple[str, ...] | None:
    """The --image-dir value(s): None, one folder, or several (where the dataset takes them)."""
    if len(value) > 1 and name not in MANY_IMAGE_DIRS:
        raise UsageProblem(f"--image-dir: dataset {name!r} takes one folder, not {len(value)}")
    return None if not value else value[0] if len(value) == 1 else value


def _import_official(
    name: str, root: Path | None, out: Path, no_count_check: bool, opts: dict[str, Any]
) -> tuple[Manifest, str]:
    given = [
        LIST_OPTIONS[k] for k, v in opts.items() if k in LIST_OPTIONS and v not in (None, False, ())
    ]
    if given:
        raise UsageProblem(f"{', '.join(given)}: only for 'import csv' or 'import pyiqa'")
    if root is None:
        raise click.MissingParameter(param_hint="'--root'", param_type="option")
    importer = get_importer(name)
    accepted = inspect.signature(importer).parameters
    kwargs: dict[str, Any] = {"expected": None} if no_count_check else {}
    values = {**opts, "image_dir": _image_dirs(name, opts["image_dir"])}
    for key, option in LAYOUT_OPTIONS.items():
        if values[key] is None:
            continue
        if key not in accepted:
            raise UsageProblem(f"{option}: not an option of dataset {name!r}")
        kwargs[key] = values[key]
    manifest = with_file_hashes(importer(root, **kwargs))
    official = any(row.extra.get(OFFICIAL_SPLIT) for row in manifest.rows)
    splits = {OFFICIAL_SPLIT: column_split(manifest, OFFICIAL_SPLIT, name)} if official else {}
    folder = opts["splits_out"] if opts["splits_out"] is not None else out.parent / "official"
    return manifest, write_with_splits(manifest, out, splits, folder)


def _import_list(
    name: str, root: Path | None, out: Path, no_count_check: bool, opts: dict[str, Any]
) -> tuple[Manifest, str]:
    needed = ["label_file", "dataset"] + (["columns"] if name == "csv" else [])
    for key in needed:
        if opts[key] is None:
            option = {"label_file": "--label-file", **LIST_OPTIONS}[key]
            raise click.MissingParameter(param_hint=f"'{option}'", param_type="option")
    given = [opt for key, opt in NOT_FOR[name].items() if opts[key] not in (None, False)]
    if given:
        raise UsageProblem(f"{', '.join(given)}: not an option of 'import {name}'")
    image_dir = _image_dirs(name, opts["image_dir"]) or ""
    assert isinstance(image_dir, str)  # csv and pyiqa take one --image-dir
    common = {
        "name": opts["dataset"],
        "folders": ImageFolders(root, image_dir, opts["ref_dir"] or ""),
        "labels": LabelSpec(opts["kind"], opts["lower_better"], opts["score_range"],
                            opts["unusual_orientation"]),
        "not_content": opts["not_content"],
    }
    if name == "csv":
        manifest = with_file_hashes(import_csv(
            opts["label_file"], columns=opts["columns"], authentic=opts["authentic"], **common
        ))
        write_manifest(manifest, out)
        return manifest, ""
    return _write_pyiqa(opts["label_file"], out, opts["splits_out"], no_count_check, common)


def _write_pyiqa(
    labels: str, out: Path, splits_out: Path | None, no_count_check: bool, common: dict[str, Any]
) -> tuple[Manifest, str]:
    result = import_pyiqa(labels, **common)
    notes = []
    known = KNOWN.get(common["name"])
    if known and not no_count_check and len(result.manifest.rows) != known.expected.images:
        notes.append(
            f"note: {common['name']} officially has {known.expected.images} images; this file"
            f" lists {len(result.manifest.rows)}"
        )
    folder = splits_out if splits_out is not None else out.parent / "splits"
    manifest = with_file_hashes(result.manifest)
    notes.append(write_with_splits(manifest, out, result.splits, folder))
    return manifest, "\n".join(n for n in notes if n)


@main.command("split")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--ratios",
    default="0.6,0.2,0.2",
    show_default=True,
    callback=_ratios,
    help="train,val,test (or train,test) fractions of the images.",
)
@count_option("--repeats", default=10, minimum=1, help="Number of random splits.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base random seed.")
@out_option(
    "Folder for split_00.json, split_01.json, ... (new, empty or a split folder).",
    folder=True,
)
def split_cmd(
    manifest: Path, ratios: tuple[float, ...], repeats: int, seed: int, out: Path
) -> None:
    """Write content-disjoint random splits of MANIFEST (no group spans two parts)."""
    splits = make_splits(read_manifest(manifest), ratios, repeats, seed)
    paths = write_splits(splits, prepare_output_dir(out, "splits"))
    click.echo(f"wrote {len(paths)} split files to {out}")


@main.command("demo")
@out_option("Output folder (refs/, images/, manifest.csv, splits/).", folder=True)
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
@_size_option("192,256")
@click.option(
    "--distortions",
    default=",".join(DISTORTIONS),
    show_default=True,
    help="Comma-separated distortion types.",
)
@count_option("--splits", default=10, minimum=0, help="Number of split files (0: none).")
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
    splits = DemoSplits(opts.pop("splits"), opts.pop("ratios"))
    manifest = build_demo(out, distortions=names, splits=splits, progress=True, **opts)
    click.echo(f"wrote {out}: {len(manifest.rows)} images, {len(manifest.ref_ids)} references")


@main.command("random-images")
@out_option("Output folder (images/, manifest.csv).", folder=True)
@count_option("--count", default=32, minimum=1)
@_size_option("224,224")
@click.option("--seed", default=0, show_default=True, type=int)
def random_images_cmd(out: Path, count: int, size: tuple[int, int], seed: int) -> None:
    """Images of uniform random pixels and their manifest: extract them with the trained
    head's backbone for PromptIQA's "random images" probe (iqa-test-head --probe)."""
    from iqadata.random_images import write_random_images

    if min(size) < 1:
        raise click.BadParameter(f"sizes must be positive, got {size}", param_hint="'--size'")
    manifest = write_random_images(out, count, size, seed)
    click.echo(f"wrote {out}: {len(manifest.rows)} random images; next: iqa-extract "
               f"--manifest {out}/manifest.csv with the head's backbone and arch")


main.add_command(info_cmd)
main.add_command(audit_cmd)
main.add_command(preset_cmd)
main.add_command(check_cmd)

if __name__ == "__main__":
    main()
