"""``iqa-data info``: what a manifest holds (counts, groups, labels, distortion types)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from cache.console import Command
from iqadata.manifest import Manifest, ManifestError, read_manifest


def describe(manifest: Manifest) -> dict[str, Any]:
    """A JSON-able summary of a manifest."""
    info, scores = manifest.info, np.array(manifest.scores())
    kinds: dict[str, int] = {}
    for row in manifest.rows:
        kinds[row.distortion or "-"] = kinds.get(row.distortion or "-", 0) + 1
    return {
        "name": info.name, "score_kind": info.score_kind,
        "score_range": list(info.score_range), "lower_better": info.lower_better,
        "root": str(manifest.root), "images": len(manifest.rows),
        "references": len(manifest.ref_ids), "groups": len({r.group for r in manifest.rows}),
        "scores": {"min": float(scores.min()), "median": float(np.median(scores)),
                   "mean": float(scores.mean()), "std": float(scores.std()),
                   "max": float(scores.max())},
        "distortions": dict(sorted(kinds.items())),
    }


def _lines(d: dict[str, Any]) -> list[str]:
    low, high = d["score_range"]
    s = d["scores"]
    return [
        f"name: {d['name']}",
        f"labels: {d['score_kind']}, range {low:g}..{high:g}, "
        + ("lower is better" if d["lower_better"] else "higher is better"),
        f"root: {d['root']}",
        f"images: {d['images']}  references: {d['references']}  groups: {d['groups']}",
        f"scores: min {s['min']:.4g}  median {s['median']:.4g}  mean {s['mean']:.4g}  "
        f"std {s['std']:.4g}  max {s['max']:.4g}",
        "distortions: " + ", ".join(f"{k} {v}" for k, v in d["distortions"].items()),
    ]


@click.command("info", cls=Command)
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(manifest: Path, as_json: bool) -> None:
    """Print counts, groups and score statistics of MANIFEST."""
    loaded = read_manifest(manifest)
    if not loaded.rows:
        raise ManifestError(f"{manifest}: the manifest has no rows")
    summary = describe(loaded)
    click.echo(json.dumps(summary, indent=1) if as_json else "\n".join(_lines(summary)))
