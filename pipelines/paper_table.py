"""A paper's own table, with our numbers beside the published ones (``iqa-eval --paper``).

Where the per-dataset tables (``pipelines.tables``) show what was run, this shows what a
paper table holds: its rows (method, and its baselines), its datasets as columns, each cell
``ours | published`` SRCC/PLCC, ours empty ("-") for a dataset not run here. A preset names
its table in ``params.yaml`` (``paper``), so a toy run of a preset already renders the
layout the real run fills in.

Our cell of a row comes from a run of the row's method, backbone family and protocol
(``per_dataset`` or ``mixed``, as the run records it) and, when the run records the preset
it was made with (``metrics.json`` ``preset.paper``), of this paper table: a per-dataset
run never fills a mixed-training row, nor a run of another preset this table's. An entry
with no ``methods`` is a published baseline (e.g. MoNet beside PromptIQA): its row shows
the paper's figures only, under its ``label``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from pipelines.published import Published, backbone_family, canonical_dataset, load_published
from pipelines.tables import DatasetTable, Row

# preset / paper-table name -> the published.yaml entries that make up its rows
PAPER_TABLES: dict[str, tuple[str, ...]] = {
    "sam_iqa_table1": ("sam_iqa_fr", "sam_iqa_nr", "sam_iqa_psnr", "sam_iqa_ssim"),
    "sam_iqa_table3": ("sam_iqa_resnet50",),
    "dp_iqa_table13": ("dp_iqa_qfd_only", "dp_iqa_linear_probe"),
    "promptiqa_table2": ("promptiqa_wo_mixed", "promptiqa_monet"),
    "promptiqa_table2_mixed": ("promptiqa_mixed",),
}


def _entries(paper: str) -> list[dict[str, Any]]:
    if paper not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {paper!r}; known: {', '.join(PAPER_TABLES)}")
    by_id = {e["id"]: e for e in load_published()["entries"]}
    return [by_id[i] for i in PAPER_TABLES[paper]]


def _matches(row: Row, entry: dict[str, Any], paper: str) -> bool:
    """Whether a table row is a run of the entry's method, family, protocol and preset."""
    made_for = row.folder.paper if row.folder is not None else ""
    return (
        row.method in entry["methods"]
        and backbone_family(row.backbone) == entry.get("family")
        and row.protocol == entry["protocol"]
        and made_for in ("", paper)
        and bool(row.repeats)
    )


def _ours(
    tables: Mapping[str, DatasetTable], entry: dict[str, Any], dataset: str, paper: str
) -> str:
    """Our median test SRCC/PLCC of the row this entry describes, or "-"."""
    for name, table in tables.items():
        if canonical_dataset(name) != dataset:
            continue
        for row in table.rows:
            if _matches(row, entry, paper):
                test = row.summary
                return f"{test['srcc']['median']:.3f}/{test['plcc']['median']:.3f}"
    return "-"


def _published(entry: dict[str, Any], dataset: str) -> str:
    raw = (entry.get("results") or {}).get(dataset)
    if not raw:
        return "-"
    digits = int(entry.get("digits", 3))
    cells = ["-" if raw.get(k) is None else f"{raw[k]:.{digits}f}" for k in ("srcc", "plcc")]
    return "/".join(cells)


def paper_rows(paper: str, tables: Mapping[str, DatasetTable]) -> tuple[list[str], list[list]]:
    """(datasets, rows): each row the entry's label, then ``ours | paper`` per dataset."""
    entries = _entries(paper)
    datasets = list(dict.fromkeys(d for e in entries for d in e["results"]))
    rows = []
    for entry in entries:
        label = entry.get("label") or f"{', '.join(entry['methods'])} ({entry.get('family')})"
        cells = [f"{_ours(tables, entry, d, paper)} \\| {_published(entry, d)}" for d in datasets]
        rows.append([label, *cells])
    return datasets, rows


def paper_markdown(paper: str, tables: Mapping[str, DatasetTable]) -> str:
    """The paper table in Markdown, with its source and how to read a cell."""
    datasets, rows = paper_rows(paper, tables)
    headers = ["method", *[f"{d} SRCC/PLCC" for d in datasets]]
    body = tabulate(rows, headers=headers, tablefmt="github")
    return (f"## {_sources(paper)}\n\nEach cell: ours (median test over the repeats here) \\| "
            f"published. \"-\": not run here, or not in the paper.\n\n{body}\n")


def _sources(paper: str) -> str:
    """Where the rows of a paper table are printed, in row order, each once."""
    return "; ".join(dict.fromkeys(_build_source(e) for e in _entries(paper)))


def _build_source(entry: dict[str, Any]) -> str:
    paper = load_published()["papers"][entry["paper"]]["short"]
    where = str(entry.get("where") or "").split(";")[0].strip()
    place = f", p. {entry['page']}" if entry.get("page") else (f", {where}" if where else "")
    return f"{paper} {entry['table']}{place}"


def paper_json(paper: str, tables: Mapping[str, DatasetTable]) -> dict[str, Any]:
    datasets, rows = paper_rows(paper, tables)
    return {"paper": paper, "source": _sources(paper), "datasets": datasets,
            "rows": [{"method": r[0], "cells": dict(zip(datasets, r[1:], strict=True))}
                     for r in rows]}  # fmt: skip


__all__ = ["PAPER_TABLES", "Published", "paper_json", "paper_markdown", "paper_rows"]
