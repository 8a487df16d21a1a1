"""``iqa-train-head``: train a head from a feature store on one or more splits.

A thin click layer over :func:`heads.experiment.run_experiment`. Head options not covered
by a flag go through ``--set key=value`` (the value parsed as JSON when it can be, e.g.
``--set width=32 --set 'branches=["spatial"]'``).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cache.manifest import ManifestError
from cache.store import IncompleteStoreError, StoreError
from heads.checkpoint import CheckpointError
from heads.data import StoreDataError
from heads.experiment import ExperimentSpec, plan_runs, run_experiment
from heads.registry import HEADS
from heads.specs import HeadConfigError

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
    type=click.Path(dir_okay=False),
    help="Split file; repeat for several splits.",
)
@click.option("--repeats", default=1, show_default=True, help="Seeds to run on a single split.")
@click.option("--epochs", default=100, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Rows (prompt: group) per step.")
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--written-only", is_flag=True, help="Drop images whose rows are not written.")
@click.option("--set", "sets", multiple=True, help="Head config field, key=value (repeatable).")
def main(sets: tuple[str, ...], splits: tuple[str, ...], **kwargs: Any) -> None:
    """Train a head on cached features and write model.pt, metrics.json, curves.csv and
    predictions.csv under OUT."""
    spec = ExperimentSpec(splits=splits, overrides=_overrides(sets), **kwargs)
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
