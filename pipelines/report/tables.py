"""The numbers of a results table: one table per dataset, method rows, test metrics.

Each head row is one ``iqa-train-head`` folder; its metrics are recomputed from the test
rows of ``predictions.csv`` for every repeat (split and seed) and summarised by
:func:`heads.metrics.summarize` (median, the papers' figure, with mean and std):

* ``srcc``, ``plcc``, ``krcc`` on the normalised targets (rank and linear correlation are
  unchanged by the affine map back to the raw scale, so they equal the raw-scale ones);
* ``plcc_logistic`` when asked for (VQEG 4- or 5-parameter logistic, ``compute_metrics``);
* ``rmse`` on the dataset's own scale only (``predicted_score`` against ``score``), never
  on the normalised targets, and never for a baseline whose values have another unit.

Baseline rows (PSNR, SSIM) exist for full-reference datasets: they are scored on the test
images of the split files the dataset's runs name, found through the manifest each run's
``metrics.json`` records. A per-distortion-type SRCC (median over repeats) is kept for
every row when the test images carry more than one distortion type.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from heads.metrics import compute_metrics, summarize
from pipelines.report.published import Published, lookup, matching_entries, variant_label
from pipelines.report.run_kinds import merge_students
from pipelines.report.runs import LabelScale, Predictions, RunFolder, RunFolderError, find_manifest

MIN_PER_TYPE = 3  # test images of one distortion type needed for its SRCC


@dataclass
class Row:
    """One method of one dataset's table."""

    method: str
    backbone: str | None
    group: str  # "head" or "baseline"
    repeats: list[dict[str, float]]
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    published: Published | None = None
    folder: RunFolder | None = None
    protocol: str = "per_dataset"
    entries: tuple[str, ...] = ()  # every published row this one meets (paper tables)
    variant: str = ""  # the ablation settings that set the row apart (``branches=...``)

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarize(self.repeats) if self.repeats else {}

    @property
    def label(self) -> str:
        """Method, variant, protocol and backbone: one column of the overview tables."""
        return self.name if self.backbone is None else f"{self.name} ({self.backbone})"

    @property
    def name(self) -> str:
        """The method as a table shows it: with its variant and protocol."""
        name = f"{self.method} [{self.variant}]" if self.variant else self.method
        if self.protocol == "cross_dataset" and self.folder is not None:
            return f"{name} (trained on {self.folder.trained_on})"
        return name if self.protocol == "per_dataset" else f"{name} ({self.protocol})"


@dataclass
class DatasetTable:
    """Every row of one dataset, heads first, baselines below."""

    dataset: str
    scale: LabelScale | None
    rows: list[Row]
    logistic: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def distortions(self) -> list[str]:
        return sorted({t for r in self.rows for t in r.per_type})


def _repeat_metrics(p: Predictions, logistic: int | None) -> dict[str, float]:
    m = compute_metrics(p.prediction, p.target, logistic=logistic)
    if p.score is not None and p.predicted_score is not None:
        m["rmse"] = float(np.sqrt(np.mean((p.predicted_score - p.score) ** 2)))
    else:
        m.pop("rmse")
    return m


def _per_repeat(p: Predictions, logistic: int | None, notes: list[str], what: str) -> list:
    out, failed = [], 0
    for run in np.unique(p.run):
        part = p.select(p.run == run)
        if len(part.ids) < 2:
            notes.append(f"{what}: run {run} has {len(part.ids)} test image(s); left out")
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                out.append(_repeat_metrics(part, logistic))
            except ValueError as err:
                raise RunFolderError(f"{what}: run {run}: {err}") from None
        failed += any("logistic fit failed" in str(w.message) for w in caught)
    if failed:
        notes.append(f"{what}: the logistic fit failed in {failed} run(s); linear PLCC used")
    return out


def per_type_srcc(p: Predictions) -> dict[str, dict[str, float]]:
    """Median over repeats of the test SRCC within each distortion type."""
    types = sorted({t for t in p.distortion if t})
    if len(types) < 2:
        return {}
    kinds = np.array(p.distortion)
    out = {}
    for t in types:
        values, counts = [], []
        for run in np.unique(p.run):
            part = p.select((p.run == run) & (kinds == t))
            if len(part.ids) >= MIN_PER_TYPE:
                values.append(compute_metrics(part.prediction, part.target)["srcc"])
                counts.append(len(part.ids))
        if values:
            out[t] = {"srcc": float(np.median(values)), "n": float(np.median(counts)),
                      "runs": float(len(values))}
    return out


def head_row(run: RunFolder, logistic: int | None, notes: list[str]) -> Row:
    """The row of one run folder (metrics.json's own test metrics when no predictions)."""
    pub = lookup(run.head, run.backbone, run.dataset, run.protocol, run.facts)
    meets = matching_entries(run.head, run.backbone, run.dataset, run.protocol, run.facts)
    tags: dict[str, Any] = {
        "published": pub, "folder": run, "protocol": run.protocol, "entries": tuple(meets),
        "variant": variant_label(run.head, run.settings),
    }
    if run.predictions is None:
        notes.append(f"{run.path}: no predictions.csv; metrics.json's test metrics used "
                     "(no RMSE, logistic PLCC or per-distortion SRCC)")
        keys = ("srcc", "plcc", "krcc")
        repeats = [{k: float(r.test[k]) for k in keys if k in r.test}
                   for r in run.repeats if r.test]
        return Row(run.head, run.backbone, "head", repeats, **tags)
    repeats = _per_repeat(run.predictions, logistic, notes, str(run.path))
    return Row(run.head, run.backbone, "head", repeats, per_type_srcc(run.predictions), **tags)


def baseline_rows(runs: Sequence[RunFolder], data_dir: str | None, logistic: int | None,
                  notes: list[str]) -> list[Row]:
    """PSNR and SSIM rows of one dataset (empty for no-reference data)."""
    from pipelines.report.baselines import baseline_predictions

    first = runs[0]
    manifest, why = find_manifest(first.manifest, first.dataset, data_dir,
                                  first.manifest_sha256)
    if manifest is None:
        notes.append(f"PSNR/SSIM left out: {why}")
        return []
    if not manifest.is_fr:
        return []
    scale = first.scale or LabelScale(*manifest.info.score_range, manifest.info.lower_better,
                                      manifest.info.score_kind)
    scale = dataclasses.replace(scale, flip=None)  # baselines are quality: DMOS reversed
    splits = list(dict.fromkeys(r.split for run in runs for r in run.repeats if r.split))
    if len({frozenset(r.split for r in run.repeats) for run in runs}) > 1:
        notes.append(f"the runs use different split files; PSNR/SSIM are over the test "
                     f"parts of all {len(splits)} of them")
    rows = []
    for name, preds in baseline_predictions(manifest, splits, scale).items():
        repeats = _per_repeat(preds, logistic, notes, name)
        rows.append(Row(name, None, "baseline", repeats, per_type_srcc(preds),
                        lookup(name, None, first.dataset)))
    return rows


def build_tables(
    runs: Sequence[RunFolder],
    *,
    logistic: int | None = None,
    baselines: bool = True,
    data_dir: str | None = None,
) -> dict[str, DatasetTable]:
    """One :class:`DatasetTable` per dataset, in the order the runs first name them."""
    by_dataset: dict[str, list[RunFolder]] = {}
    for run in merge_students(runs):
        by_dataset.setdefault(run.dataset, []).append(run)
    tables = {}
    for dataset, members in by_dataset.items():
        notes: list[str] = []
        rows = [head_row(run, logistic, notes) for run in members]
        if baselines:
            rows += baseline_rows(members, data_dir, logistic, notes)
        scales = {dataclasses.replace(r.scale, flip=None) for r in members if r.scale}
        if len(scales) > 1:
            notes.append("the runs disagree on the label scale; RMSE columns are not comparable")
        tables[dataset] = DatasetTable(dataset, members[0].scale, rows, logistic, notes)
    return tables


def published_only(table: DatasetTable) -> list[dict[str, Any]]:
    """The strongest baselines the matched papers list, one per (paper table, method)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in table.rows:
        pub = row.published
        if pub is None or pub.baseline is None or pub.baseline_score is None:
            continue
        out.setdefault((pub.source, pub.baseline), {
            "method": pub.baseline, "srcc": pub.baseline_score.srcc,
            "plcc": pub.baseline_score.plcc, "source": pub.source, "published": pub,
        })
    return list(out.values())
