"""``iqa-train-head``: train a head from a feature store on one or more splits.

A thin click layer over :func:`heads.experiment.run_experiment`. Heavy imports (torch,
the heads) happen inside the command, so ``--help`` answers at once.

Settings come from, in increasing priority: the head's own defaults (its paper's, declared
on the head class), ``--params`` (``head_train.<head>`` and ``head_config.<head>`` of a
params YAML file, e.g. ``params.yaml``), and the command line (``--epochs``, ``--lr``...,
``--train-set KEY=VALUE`` for any training option, ``--set KEY=VALUE`` for head config).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from cache.console import Command, UsageProblem, cpu_kernels_option, parse_assignments
from heads.registry import HEADS

if TYPE_CHECKING:
    from heads.crosstest import CrossTestOptions

ROOT_ENV = "IQA_CACHE_ROOT"
FLAG_TRAINING = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "schedule",
    "label_norm",
    "label_orientation",
)
PARAMS_MARKER = "# iqa-params: preset "


def _split_files(path: str) -> list[str]:
    """Split files: the file itself, or a folder's sorted split files (markers skipped)."""
    from iqadata.manifest import ManifestError, split_files

    try:
        return [str(p) for p in split_files(path)]
    except ManifestError as err:
        raise click.BadParameter(str(err), param_hint="--split") from None


def _params_section(path: str | None, section: str, head: str) -> dict[str, Any]:
    """``<section>.<head>`` of a params YAML file (lists become tuples)."""
    if path is None:
        return {}
    import yaml

    with open(path, encoding="utf-8") as fh:
        table = (yaml.safe_load(fh) or {}).get(section) or {}
    values = table.get(head) or {}
    if not isinstance(values, dict):
        raise click.BadParameter(f"{section}.{head} must be a mapping", param_hint="--params")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _preset_of(path: str | None) -> dict[str, str]:
    """The preset a params file was written from (its marker line) and its paper table."""
    if path is None:
        return {}
    import yaml

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    first = text.splitlines()[0] if text else ""
    name = first[len(PARAMS_MARKER):].strip() if first.startswith(PARAMS_MARKER) else ""
    paper = (yaml.safe_load(text) or {}).get("paper") or ""
    return {"name": name, "paper": str(paper)} if name or paper else {}


def _training(opts: dict[str, Any]) -> Any:
    """The head's defaults, then ``head_train.<head>``, then the command line."""
    from heads.optim import TrainConfigError
    from heads.registry import head_class

    changes = _params_section(opts["params_file"], "head_train", opts["head"])
    changes.update({k: opts[k] for k in FLAG_TRAINING if opts[k] is not None})
    changes.update(parse_assignments(opts["train_sets"], "--train-set"))
    if "milestones" in changes and "milestones_by_dataset" not in changes:
        changes["milestones_by_dataset"] = {}  # the milestones asked for, on every dataset
    try:
        return head_class(opts["head"]).train_defaults.replace(**changes)
    except TrainConfigError as err:
        raise UsageProblem(f"{err} (from --params, --train-set or the options)") from err


def _sources(opts: dict[str, Any]) -> tuple[Any, ...]:
    """One ``Source`` per --features (aligned --manifest / --split / --ref-features)."""
    from heads.experiment import Source

    feats, manifests, splits = opts["features"], opts["manifests"], opts["splits"]
    if not feats:
        feats = (_from_cache_root(opts),)
    if len(manifests) != len(feats):
        raise click.UsageError(f"give one --manifest per --features ({len(feats)} stores, "
                               f"{len(manifests)} manifests)")
    if len(feats) > 1 and len(splits) != len(feats):
        raise click.UsageError("mixed training: give one --split (file or folder) per store")
    per = [_split_files(s) for s in splits] if len(feats) > 1 else [
        [f for s in splits for f in _split_files(s)]]
    repeats = opts["repeats"]
    if repeats is not None:
        short = [len(p) for p in per if len(p) < repeats]
        if short:
            raise click.BadParameter(f"--repeats {repeats} but only {short[0]} split files",
                                     param_hint="--repeats")
        per = [p[:repeats] for p in per]
    refs = opts["ref_features"] or (None,) * len(feats)
    if len(refs) != len(feats):
        raise click.UsageError("give one --ref-features per --features, or none")
    return tuple(Source(f, m, tuple(p), r)
                 for f, m, p, r in zip(feats, manifests, per, refs, strict=True))


def _from_cache_root(opts: dict[str, Any]) -> str:
    """The store of the manifest's images and ``--backbone`` under the cache root."""
    root = opts["cache_root"] or os.environ.get(ROOT_ENV)
    if not root or not opts["backbone"]:
        raise click.UsageError("give --features, or --backbone with --cache-root "
                               f"(or ${ROOT_ENV}) to find the store")
    from cache.root import CacheRoot
    from iqadata.manifest import read_manifest

    if not opts["manifests"]:
        raise click.UsageError("give --manifest")
    manifest = read_manifest(opts["manifests"][0])
    return CacheRoot(root).find_for(manifest, opts["backbone"], opts["fingerprint"])


@click.command(cls=Command)
@click.option("--head", required=True, type=click.Choice(sorted(HEADS)), help="Head to train.")
@click.option("--features", multiple=True,
              help="Feature store (path or URL). Repeat with --manifest/--split for mixed "
                   "training of one model on several datasets.")
@click.option("--ref-features", multiple=True, help="Store of the reference images (FR heads; "
              "default: the feature store itself).")
@click.option("--manifest", "manifests", multiple=True,
              type=click.Path(dir_okay=False), help="Manifest CSV (one per --features).")
@click.option("--split", "splits", multiple=True, type=click.Path(exists=True),
              help="Split file, or a folder of split_NN.json files; repeatable.")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Use the first N split files (content-disjoint repeats; papers report "
                   "the median). Default: every split given.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per split file, with seeds SEED, SEED+1, ...")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Training epochs (default: the head's paper setting; see --show-config).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Rows per step; the group size for the prompt head.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Adam learning rate.")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="Adam weight decay.")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "cosine_restarts",
                                               "multistep"]), help="Learning-rate schedule.")
@click.option("--train-set", "train_sets", multiple=True, metavar="KEY=VALUE",
              help="Any training option (e.g. milestones=[5,10], patience=10, "
                   "prompt_select=random); repeatable.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Head config field (e.g. width=32, 'scales=[1,2]'); repeatable.")
@click.option("--params", "params_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file (e.g. params.yaml): head_train.<head> and head_config.<head> "
                   "(the command line wins).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads on a CPU (0: torch's default, all cores). Small heads on "
                   "small maps train fastest on 1, and far slower when cores are shared.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs (splits x seeds) trained at once, each in its own process with "
                   "--threads threads; the outputs are the same bytes as with 1.")
@cpu_kernels_option()
@click.option("--out", type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier iqa-train-head output.")
@click.option("--resume", is_flag=True, help="Continue each run from its last.pt.")
@click.option("--label-norm", type=click.Choice(["score_range", "train_minmax"]),
              help="Scores -> targets: the manifest's nominal range, or each split's train "
                   "min/max (PromptIQA's per-dataset min-max, applied to every part). "
                   "Default: head_train.<head>.label_norm, else score_range.")
@click.option("--label-orientation", type=click.Choice(["native", "higher_better"]),
              help="DMOS sets: kept lower-is-better (native: PromptIQA's training, the "
                   "prompt head's default) or reversed so higher is better (every other "
                   "head). Recorded in metrics.json and the checkpoints.")
@click.option("--written-only", is_flag=True,
              help="Leave out images whose rows are not written (they are listed).")
@click.option("--cache-root", help=f"Find the store in a shared cache root (or ${ROOT_ENV}) "
              "by the manifest's images and --backbone.")
@click.option("--backbone", help="With --cache-root: the backbone of the store to use.")
@click.option("--fingerprint", help="With --cache-root: a fingerprint prefix, when several "
              "stores of the backbone hold these images.")
@click.option("--exclude-overlap", type=click.Path(exists=True, dir_okay=False),
              metavar="AUDIT.json", help="A content audit (iqa-data audit): leave the images "
              "it pairs with other content out of every train and val part.")
@click.option("--show-config", is_flag=True,
              help="Print the effective training and head settings, then stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(**opts: Any) -> None:
    """Train a head on cached features (never a backbone) and evaluate it.

    Model selection uses the validation part of each split only (without one, a fixed
    number of epochs and the last); the test part is scored once at the end. Writes
    OUT/metrics.json (every run and the median/mean/std), OUT/predictions.csv and per
    run OUT/run_NN/ (model.pt, curves.csv, predictions.csv, metrics.json).

    \b
    Example:
      iqa-train-head --head sfem_fr --features features/kadid10k/sam_vit_h.zarr \\
        --manifest data/kadid10k/manifest.csv --split data/kadid10k/splits \\
        --repeats 10 --out runs/kadid10k/sam_vit_h/sfem_fr
    """
    import torch

    from heads.experiment import ExperimentSpec, run_experiment

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    training = _training(opts)
    overrides = {**_params_section(opts["params_file"], "head_config", opts["head"]),
                 **parse_assignments(opts["sets"], "--set")}
    if opts["show_config"]:
        config = {**_config_defaults(opts["head"]), **overrides}
        click.echo(json.dumps({"training": training.to_dict(), "head_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}}, indent=1))
        return
    for name, key in (("--manifest", "manifests"), ("--split", "splits"), ("--out", "out")):
        if not opts[key]:
            raise click.UsageError(f"Missing option '{name}'.")
    spec = ExperimentSpec(
        head=opts["head"], sources=_sources(opts), out=opts["out"], training=training,
        seeds=opts["seeds"], seed=opts["seed"], device=opts["device"], resume=opts["resume"],
        written_only=opts["written_only"], overrides=overrides,
        preset=_preset_of(opts["params_file"]),
        exclude_overlap=opts["exclude_overlap"], cpu_kernels=opts["cpu_kernels"],
        jobs=opts["jobs"],
    )
    result = run_experiment(spec)
    _report(result, opts["out"], opts["as_json"])


def _config_defaults(head: str) -> dict[str, Any]:
    """A head's config fields and defaults; fields set from the store's shapes say so."""
    import dataclasses

    from heads.registry import head_class

    out: dict[str, Any] = {}
    for f in dataclasses.fields(head_class(head).config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = "<from the store>"
    return out


def _report(result: dict[str, Any], out: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=True))
        return
    excluded = sum(r.get("excluded_overlap", 0) for r in result["runs"])
    if result.get("exclude_overlap"):
        click.echo(f"left out {excluded} train/val images over {len(result['runs'])} runs that "
                   f"share content ({result['exclude_overlap']['audit']})", err=True)
    dropped = sum(r["dropped_unwritten"] for r in result["runs"])
    if dropped:
        click.echo(f"left out {dropped} images with unwritten rows over "
                   f"{len(result['runs'])} runs (listed in {out}/run_NN/metrics.json)",
                   err=True)
    test = result["summary"].get("test", {})
    line = ", ".join(f"{k} {v['median']:.4f}" for k, v in test.items() if k in ("srcc", "plcc"))
    click.echo(f"{result['head']} on {result['dataset']} ({result['backbone']}): "
               f"{len(result['runs'])} runs, median test {line or 'n/a'}; wrote {out}")


@click.command(cls=Command)
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--features", required=True, help="The tested dataset's store (same backbone).")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The tested dataset's manifest.")
@click.option("--split", "splits", multiple=True, type=click.Path(exists=True),
              help="Test on one part of this split (and prompt from its train part): a "
                   "file for every repeat, or a folder / repeated files, one per repeat "
                   "(a run's own dataset: its own splits). Default: every image.")
@click.option("--part", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@click.option("--probe", type=click.Choice(["none", "invert", "random_scores", "random_images",
                                            "random_images_scores"]),
              default="none", show_default=True,
              help="PromptIQA Table 5: the prompt's scores inverted (1 - s) or random, its "
                   "images random (--random-images), or both; at test time only.")
@click.option("--random-images", help="Store of random images' features (same backbone), for "
              "the random_images probes: iqa-data random-images, then iqa-extract.")
@click.option("--seed", default=0, show_default=True, help="Seed of the probes' random draws.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--audit", type=click.Path(exists=True, dir_okay=False), metavar="AUDIT.json",
              help="A content audit (iqa-data audit): warn about near duplicates too.")
@click.option("--exclude-overlap", type=click.Path(exists=True, dir_okay=False),
              metavar="AUDIT.json", help="As --audit, and leave the tested images that share "
              "content with the head's training images out.")
@cpu_kernels_option()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def test_main(
    run: str, features: str, manifest: str, out: str, as_json: bool, cpu_kernels: str,
    **opts: Any,
) -> None:
    """Test the heads of training RUN (every repeat) on a dataset's store.

    Cross-dataset generalisation (DP-IQA Table V: train on KonIQ-10k, test on LIVE
    Challenge) and PromptIQA's prompt probes (Table 5: --probe on the run's own dataset
    and splits): SRCC, PLCC, KRCC, RMSE per repeat and their median, against the tested
    dataset's labels mapped as the head was trained. Warns when tested images share content
    with the head's training images (equal file hashes; near duplicates with --audit).
    Writes OUT/metrics.json and OUT/predictions.csv.
    """
    from cache.kernels import cpu_kernels as kernels
    from heads.crosstest import cross_test

    options = _cross_test_options(opts)
    with kernels(cpu_kernels, options.device):
        result = cross_test(run, features, manifest, out, options)
    _overlap_lines(result["overlap"], result["n_images"], out)
    if as_json:
        click.echo(json.dumps(result, indent=1, sort_keys=True))
        return
    test = result["summary"]["test"]
    probe = f", probe {result['probe']}" if result["probe"] != "none" else ""
    click.echo(f"{result['head']} trained on {result['trained_on']}, tested on "
               f"{result['tested_on']} ({result['n_images']} images, {len(result['runs'])} "
               f"runs{probe}): median SRCC {test['srcc']['median']:.4f}, PLCC "
               f"{test['plcc']['median']:.4f}; wrote {out}")


def _cross_test_options(opts: dict[str, Any]) -> CrossTestOptions:
    """The ``CrossTestOptions`` of ``iqa-test-head``'s options (all but the run, stores and
    output)."""
    from heads.crosstest import CrossTestOptions

    audit, exclude_overlap = opts.pop("audit"), opts.pop("exclude_overlap")
    if audit and exclude_overlap and audit != exclude_overlap:
        raise UsageProblem("--audit and --exclude-overlap name two audits: give one")
    files = tuple(f for s in opts.pop("splits") for f in _split_files(s))
    return CrossTestOptions(splits=files, audit=exclude_overlap or audit,
                            exclude_overlap=exclude_overlap is not None, **opts)


def _overlap_lines(overlap: dict[str, Any], n_images: int, out: str) -> None:
    """A warning (or a note of what was left out) on shared content; what was not checked."""
    shared = len(overlap["ids"])
    how = f"{len(overlap['exact'])} by file hash, {len(overlap['audit'])} by the audit"
    if shared and overlap["excluded"]:
        line = f"left out {shared} tested images that share content with the head's training"
        click.echo(f"{line} images ({how})", err=True)
    elif shared:
        runs = sum(1 for r in overlap["runs"] if r["shared"])
        line = (
            f"warning: {shared} of the {n_images} tested images share content with the head's"
            f" training images ({how}; {runs} of {len(overlap['runs'])} runs); listed under"
            f" 'overlap' in {out}/metrics.json; --exclude-overlap AUDIT.json leaves them out"
        )
        click.echo(line, err=True)
    for note in overlap["notes"]:
        click.echo(f"note: {note}", err=True)
