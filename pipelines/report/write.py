"""The report of ``iqa-eval``: tables, figures and DVC metrics from training run folders.

``write_report(run_dirs, out)`` writes::

    OUT/table.md          all datasets side by side (when several); per dataset: the main
                          table, the per-distortion SRCC, notes
    OUT/table.tex         the same tables as booktabs ``table`` environments
    OUT/table.json        every number (median, mean, std, n per metric; per-run values)
    OUT/metrics.json      {dataset: {method: {srcc, plcc}}} medians, for `dvc metrics show`
    OUT/scatter/<dataset>-<backbone>-<head>.png|csv       (pipelines.report.plots)
    OUT/curves/<dataset>-<backbone>-<head>.png, .../run_NN.csv

Everything is computed and drawn in a staging folder beside ``OUT`` and moved in only when
all of it succeeded, so an error leaves ``OUT`` as it was. ``OUT`` is guarded by
``cache.outputs`` (new, empty, or an earlier report).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cache.outputs import check_output_dir, prepare_output_dir
from pipelines.report import plots
from pipelines.report.paper_table import PAPER_TABLES, paper_json, paper_markdown
from pipelines.report.runs import RunFolder, read_runs
from pipelines.report.table_format import (
    latex_distortion_table,
    latex_overview,
    latex_table,
    markdown_overview,
    markdown_table,
)
from pipelines.report.tables import DatasetTable, Row, build_tables, published_only

KIND = "report"
JSON_SCHEMA = 1


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def _published_json(row: Row) -> dict[str, Any] | None:
    pub = row.published
    if pub is None:
        return None
    return {"srcc": pub.score.srcc, "plcc": pub.score.plcc, "paper": pub.paper,
            "table": pub.table, "page": pub.page, "where": pub.where, "entry": pub.entry}


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "method": row.method, "backbone": row.backbone, "group": row.group,
        "variant": row.variant, "protocol": row.protocol, "paper_rows": list(row.entries),
        "runs": len(row.repeats), "test": row.summary, "per_run": row.repeats,
        "srcc_per_distortion": row.per_type, "published": _published_json(row),
        "run_dir": str(row.folder.path) if row.folder else None,
    }


def table_json(tables: dict[str, DatasetTable]) -> dict[str, Any]:
    """Everything the tables show, and the per-run values behind them."""
    out: dict[str, Any] = {"schema": JSON_SCHEMA, "datasets": {}}
    for name, t in tables.items():
        scale = t.scale
        out["datasets"][name] = {
            "scale": None if scale is None else {"low": scale.low, "high": scale.high,
                                                 "lower_better": scale.lower_better,
                                                 "score_kind": scale.score_kind},
            "logistic": t.logistic,
            "rows": [_row_json(r) for r in t.rows],
            "published_baselines": [{k: v for k, v in item.items() if k != "published"}
                                    for item in published_only(t)],
            "notes": t.notes,
        }
    return _round(out)


def _metric_base(row: Row) -> str:
    """The method name, with variant and training set where they set the row apart."""
    plain = not row.variant and row.protocol != "cross_dataset"
    return row.method if plain else row.name


def _metric_key(row: Row, rows: Sequence[Row]) -> str:
    base = _metric_base(row)
    same = [r for r in rows if _metric_base(r) == base]
    return base if len(same) == 1 or row.backbone is None else f"{base}@{row.backbone}"


def flat_metrics(tables: dict[str, DatasetTable]) -> dict[str, Any]:
    """``{dataset: {method: {"srcc", "plcc"}}}`` medians (``method@backbone`` if needed)."""
    out: dict[str, Any] = {}
    for name, t in tables.items():
        cells = {}
        for row in t.rows:
            s = row.summary
            if "srcc" in s and "plcc" in s:
                cells[_metric_key(row, t.rows)] = {"srcc": s["srcc"]["median"],
                                                   "plcc": s["plcc"]["median"]}
        out[name] = cells
    return _round(out)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _write_files(stage: Path, runs: list[RunFolder], tables: dict[str, DatasetTable],
                 formats: Sequence[str], kind: int, paper: str | None = None) -> None:
    head = paper_markdown(paper, tables) + "\n" if paper else ""
    _write_text(stage / "table.md", "# Results\n\n" + head + markdown_overview(tables) +
                "\n".join(markdown_table(t) for t in tables.values()))
    if paper:
        _write_text(stage / "paper.json", json.dumps(paper_json(paper, tables), indent=1) + "\n")
    _write_text(stage / "table.tex", "% booktabs tables: \\usepackage{booktabs}\n\n" +
                latex_overview(tables) + "\n".join(
                    latex_table(t) + latex_distortion_table(t) for t in tables.values()))
    _write_text(stage / "table.json", json.dumps(table_json(tables), indent=1) + "\n")
    _write_text(stage / "metrics.json", json.dumps(flat_metrics(tables), indent=1) + "\n")
    for run in runs if formats else []:
        plots.write_scatter(run, stage / "scatter", formats, kind)
        plots.write_curves(run, stage / "curves", formats)


def _move_in(stage: Path, out: Path) -> None:
    """Move every staged file into ``out`` (replacing the same names of an earlier report)."""
    prepare_output_dir(out, KIND)
    for path in sorted(stage.rglob("*")):
        if path.is_file():
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    logistic: int | None = None,
    baselines: bool = True,
    data_dir: str | None = None,
    formats: Sequence[str] = ("png",),
    paper: str | None = None,
) -> dict[str, DatasetTable]:
    """Read the runs, build the tables and write the report (see the module docstring).

    Args:
        run_dirs: ``iqa-train-head --out`` folders.
        out_dir: the report folder.
        logistic: 4 or 5 to add the logistic-fitted PLCC; None for none.
        baselines: add PSNR / SSIM rows on full-reference datasets.
        data_dir: where to look for ``<dataset>/manifest.csv`` when a run's recorded
            manifest path does not exist (e.g. the runs were moved).
        formats: figure formats (``png``, ``svg``, ``pdf``); none for tables only.
        paper: a paper table (``pipelines.report.paper_table.PAPER_TABLES``) to lay the results out
            like, with the published figures beside ours, first in ``table.md``.
    """
    out = check_output_dir(out_dir, KIND)
    if paper and paper not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {paper!r}; known: {', '.join(PAPER_TABLES)}")
    bad = sorted(set(formats) - set(plots.FORMATS))
    if bad:
        raise ValueError(f"figure format(s) {bad} not supported; use {', '.join(plots.FORMATS)}")
    runs = [run for d in run_dirs for run in read_runs(d, data_dir)]
    tables = build_tables(runs, logistic=logistic, baselines=baselines, data_dir=data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_files(stage, runs, tables, formats, logistic or 4, paper)
        _move_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return tables
