"""Paper-style results tables and scatter plots from ``iqa-train-head`` run folders.

A run folder holds ``metrics.json`` (one run, or several with a ``summary``) and
``predictions.csv``. The table has one row per method (head and backbone, plus the PSNR
and SSIM baselines on full-reference datasets) and one column per dataset; a cell is the
median test ``SRCC/PLCC`` over the runs, the papers' protocol. Baselines are scored on the
same test images as the heads, through the split files the runs name, with the same label
orientation (higher is better after ``lower_better`` is applied).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.manifest import Manifest, read_manifest, read_split
from cache.store import open_store
from heads.metrics import compute_metrics, summarize
from pipelines.baselines import baseline_scores

KEYS = ("srcc", "plcc", "krcc", "rmse")


@dataclass
class RunSummary:
    """One ``iqa-train-head`` output folder, reduced to what the table needs."""

    path: Path
    head: str
    dataset: str
    backbone: str
    splits: list[str]
    test: list[dict[str, float]] = field(default_factory=list)

    @property
    def method(self) -> str:
        return f"{self.head} ({self.backbone})"


def read_run(path: str | Path) -> RunSummary:
    """Read a run folder's ``metrics.json`` and the dataset/backbone of its store."""
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{path}: no metrics.json (is it an iqa-train-head --out?)")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    runs = metrics["runs"]
    store = open_store(metrics["features"])
    return RunSummary(
        path=path,
        head=metrics["head"],
        dataset=str(store.attrs.get("dataset", "unknown")),
        backbone=str(store.fingerprint_fields.get("backbone", "unknown")),
        splits=[r["split"] for r in runs],
        test=[r["test"] for r in runs if r.get("test")],
    )


def _cell(values: list[dict[str, float]]) -> dict[str, Any]:
    summary = summarize(values) if values else {}
    return {**summary, "n_runs": len(values)}


def baseline_cells(manifest: Manifest, splits: Sequence[str]) -> dict[str, dict[str, Any]]:
    """PSNR and SSIM test metrics over ``splits`` (median etc.), for an FR manifest."""
    by_method: dict[str, list[dict[str, float]]] = {"psnr": [], "ssim": []}
    scores = dict(zip(manifest.image_ids, manifest.scores(), strict=True))
    cache: dict[str, dict[str, float]] = {}
    for split_path in splits:
        ids = list(read_split(split_path).test)
        todo = [i for i in ids if i not in cache]
        for name, values in baseline_scores(manifest, todo).items():
            for i, v in zip(todo, values, strict=True):
                cache.setdefault(i, {})[name] = float(v)
        target = np.array([scores[i] for i in ids])
        for name in by_method:
            pred = np.array([cache[i][name] for i in ids])
            pred = np.nan_to_num(pred, posinf=np.nanmax(pred[np.isfinite(pred)], initial=0) + 10)
            by_method[name].append(
                compute_metrics(pred, target, lower_better=manifest.info.lower_better)
            )
    return {name: _cell(values) for name, values in by_method.items()}


def build_table(
    runs: Sequence[RunSummary], manifests: dict[str, Manifest], baselines: bool = True
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {method: {srcc: {median, mean, std}, ..., n_runs}}}``."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        table.setdefault(run.dataset, {})[run.method] = _cell(run.test)
    if baselines:
        for dataset, manifest in manifests.items():
            splits = sorted({s for r in runs if r.dataset == dataset for s in r.splits})
            if manifest.is_fr and splits and dataset in table:
                table[dataset].update(baseline_cells(manifest, splits))
    return table


def markdown_table(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Methods x datasets, cells ``SRCC/PLCC`` (median over runs, test split)."""
    datasets = sorted(table)
    methods = sorted({m for cells in table.values() for m in cells})
    lines = [
        "| method | " + " | ".join(f"{d} (SRCC/PLCC)" for d in datasets) + " |",
        "| --- |" + " --- |" * len(datasets),
    ]
    for method in methods:
        cells = []
        for d in datasets:
            cell = table[d].get(method)
            if not cell or "srcc" not in cell:
                cells.append("-")
                continue
            srcc, plcc = cell["srcc"]["median"], cell["plcc"]["median"]
            cells.append(f"{srcc:.3f}/{plcc:.3f} (n={cell['n_runs']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def held_out_predictions(run: RunSummary) -> tuple[np.ndarray, np.ndarray]:
    """Targets and predictions of the test rows of every run in a folder."""
    with open(run.path / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["part"] == "test"]
    return (np.array([float(r["target"]) for r in rows]),
            np.array([float(r["prediction"]) for r in rows]))


def write_scatter(run: RunSummary, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Scatter of predicted vs ground-truth test scores: a PNG and DVC plot data (CSV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, pred = held_out_predictions(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / f"{name}.csv", out_dir / f"{name}.png"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["target", "prediction"])
        writer.writerows(zip(target.tolist(), pred.tolist(), strict=True))
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.scatter(target, pred, s=8, alpha=0.6)
    ax.set_xlabel("ground truth (normalised, higher is better)")
    ax.set_ylabel("prediction")
    ax.set_title(f"{run.method} on {run.dataset}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return png_path, csv_path


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    manifests: Mapping[str, str | Path],
    *,
    baselines: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Write ``table.md``, ``table.json`` and ``scatter/<run>.{png,csv}`` under ``out_dir``."""
    out = Path(out_dir)
    runs = [read_run(d) for d in run_dirs]
    loaded = {name: read_manifest(path) for name, path in manifests.items()}
    table = build_table(runs, loaded, baselines=baselines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown_table(table), encoding="utf-8")
    (out / "table.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n",
                                    encoding="utf-8")
    for run in runs:
        write_scatter(run, out / "scatter", f"{run.dataset}-{run.backbone}-{run.head}")
    return table
