"""``iqa-train-head``: train a head from a feature store on one or more splits.

A thin click layer over :func:`heads.experiment.run_experiment`. Head options not covered
by a flag go through ``--set key=value`` (the value parsed as JSON when it can be, e.g.
``--set width=32 --set 'branches=["spatial"]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource

from cache.manifest import ManifestError
from cache.store import IncompleteStoreError, StoreError
from heads.checkpoint import CheckpointError
from heads.data import StoreDataError
from heads.experiment import ExperimentSpec, plan_runs, run_experiment
from heads.registry import HEADS
from heads.specs import HeadConfigError

TRAIN_KEYS = {"epochs": int, "lr": float, "batch_size": int}

EXPECTED = (
    CheckpointError,
    HeadConfigError,
    IncompleteStoreError,
    ManifestError,
    StoreDataError,
    StoreError,
)


def _overrides(values: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _split_files(paths: tuple[str, ...]) -> list[str]:
    """Split files, a folder standing for its sorted ``*.json`` files."""
    out: list[str] = []
    for path in paths:
        if Path(path).is_dir():
            found = sorted(str(p) for p in Path(path).glob("*.json"))
            if not found:
                raise click.BadParameter(f"no split files (*.json) in {path}",
                                         param_hint="--split")
            out += found
        else:
            out.append(path)
    return out


def _params_section(path: str | None, section: str, head: str) -> dict[str, Any]:
    """``<section>.<head>`` of a params YAML file (lists become tuples)."""
    if path is None:
        return {}
    with open(path, encoding="utf-8") as fh:
        table = (yaml.safe_load(fh) or {}).get(section) or {}
    values = table.get(head) or {}
    if not isinstance(values, dict):
        raise click.BadParameter(f"{section}.{head} must be a mapping", param_hint="--params")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _params_training(path: str | None, head: str) -> dict[str, Any]:
    """Training options from ``head_train.<head>`` that the command line left at default."""
    values = _params_section(path, "head_train", head)
    unknown = sorted(set(values) - set(TRAIN_KEYS))
    if unknown:
        raise click.BadParameter(f"head_train.{head}: unknown keys {unknown}; allowed: "
                                 f"{list(TRAIN_KEYS)}", param_hint="--params")
    ctx = click.get_current_context()
    return {
        k: TRAIN_KEYS[k](v) for k, v in values.items()
        if ctx.get_parameter_source(k) is ParameterSource.DEFAULT
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--head", required=True, type=click.Choice(sorted(HEADS)), help="Head to train.")
@click.option("--features", required=True, help="Feature store (path or URL).")
@click.option("--ref-features", default=None, help="Store of the reference images (FR heads).")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="Manifest CSV.")
@click.option(
    "--split",
    "splits",
    required=True,
    multiple=True,
    type=click.Path(exists=True),
    help="Split file, or a folder of split_NN.json files; repeatable.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    help="With several splits: train on the first N (content-disjoint repeats; the papers "
    "report the median). With one split file: N seeds on it. Default: every split given.",
)
@click.option("--epochs", default=100, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Rows (prompt: group) per step.")
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--written-only", is_flag=True, help="Drop images whose rows are not written.")
@click.option("--set", "sets", multiple=True, help="Head config field, key=value (repeatable).")
@click.option(
    "--params",
    "params_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file (e.g. params.yaml): 'head_config.<head>' gives config fields (--set "
    "wins) and 'head_train.<head>' gives epochs, lr and batch_size (options given on the "
    "command line win).",
)
def main(
    sets: tuple[str, ...],
    splits: tuple[str, ...],
    repeats: int | None,
    params_file: str | None,
    **kwargs: Any,
) -> None:
    """Train a head on cached features (never a backbone) and evaluate it.

    Model selection uses the validation part of each split only; the test part is scored
    once at the end. Writes model.pt, metrics.json (val and test SRCC, PLCC, KRCC, RMSE;
    with several splits also per-split results and their median/mean/std), curves.csv and
    predictions.csv under OUT (one run_NN/ folder per split when there are several).

    Example: iqa-train-head --head sfem_fr --features features/kadid10k/sam_vit_h.zarr
    --manifest data/kadid10k/manifest.csv --split data/kadid10k/splits --repeats 10
    --out runs/sfem_fr-kadid10k
    """
    files = _split_files(splits)
    if len(files) > 1:
        if repeats is not None and repeats > len(files):
            raise click.BadParameter(f"--repeats {repeats} but only {len(files)} split files",
                                     param_hint="--repeats")
        files, repeats = files[:repeats] if repeats else files, 1
    kwargs.update(_params_training(params_file, kwargs["head"]))
    overrides = {**_params_section(params_file, "head_config", kwargs["head"]), **_overrides(sets)}
    spec = ExperimentSpec(splits=tuple(files), overrides=overrides, repeats=repeats or 1,
                          **kwargs)
    try:
        plan_runs(spec)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    try:
        result = run_experiment(spec)
    except EXPECTED as err:
        raise click.ClickException(str(err)) from err
    test = result.get("test") or result.get("summary", {}).get("test", {})
    click.echo(f"{spec.head}: wrote {spec.out}; test {json.dumps(test)}")
