"""A paper's own table, with our numbers beside the published ones (``iqa-eval --paper``).

Where the per-dataset tables (``pipelines.report.tables``) show what was run, this shows what a
paper table holds: its rows (method, and its baselines), its datasets as columns, each cell
``ours | published`` SRCC/PLCC, ours empty ("-") for a dataset not run here. A preset names
its table in ``params.yaml`` (``paper``), so a toy run of a preset already renders the
layout the real run fills in.

A row's "ours" is the run that meets the row's entry (``pipelines.report.published``: method,
backbone family, protocol, training set of a cross test, and the entry's ``match``
settings), so an ablation row shows the ablation run and a per-dataset row never shows a
mixed or cross-dataset run. Entries marked ``comparable: false`` show ``n/c`` and say why
below the table.
A run that records the preset it was made with (``metrics.json`` ``preset.paper``) fills
only the tables of that preset's paper. An entry with no ``methods`` is a published baseline (e.g.
MoNet beside PromptIQA): its row shows the paper's figures only, under its ``label``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tabulate import tabulate

from pipelines.report.published import Published, canonical_dataset, load_published
from pipelines.report.tables import DatasetTable, Row

# preset / paper-table name -> the published.yaml entries that make up its rows
PAPER_TABLES: dict[str, tuple[str, ...]] = {
    "sam_iqa_table1": ("sam_iqa_fr", "sam_iqa_nr", "sam_iqa_psnr", "sam_iqa_ssim"),
    "sam_iqa_table3": ("sam_iqa_resnet50",),
    "sam_iqa_table4": ("sam_iqa_branches_spatial", "sam_iqa_branches_frequency",
                       "sam_iqa_branches_both"),
    "sam_iqa_table5": ("sam_iqa_distance_sub", "sam_iqa_distance_l2", "sam_iqa_distance_cos",
                       "sam_iqa_distance_kl", "sam_iqa_distance_l1"),
    "dp_iqa_table4": ("dp_iqa_student", "dp_iqa_teacher"),
    "dp_iqa_table5": ("dp_iqa_cross_from_flive_teacher", "dp_iqa_cross_from_flive_student",
                      "dp_iqa_cross_from_livec_teacher", "dp_iqa_cross_from_livec_student",
                      "dp_iqa_cross_from_koniq10k_teacher",
                      "dp_iqa_cross_from_koniq10k_student"),
    "dp_iqa_table11": ("dp_iqa_student", "dp_iqa_student_no_distillation"),
    "dp_iqa_table13": ("dp_iqa_qfd_only", "dp_iqa_linear_probe"),
    "promptiqa_table2": ("promptiqa_wo_mixed", "promptiqa_monet"),
    "promptiqa_table2_mixed": ("promptiqa_mixed",),
}


# paper tables that print fewer datasets than their entries hold
PAPER_DATASETS: dict[str, tuple[str, ...]] = {"dp_iqa_table11": ("livec", "koniq10k")}
NOT_COMPARABLE = "n/c"


def _entries(paper: str) -> list[dict[str, Any]]:
    if paper not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {paper!r}; known: {', '.join(PAPER_TABLES)}")
    by_id = {e["id"]: e for e in load_published()["entries"]}
    return [by_id[i] for i in PAPER_TABLES[paper]]


def _papers(table: str) -> set[str]:
    """The papers (``sam_iqa``, ``promptiqa``, ...) a paper table's rows come from."""
    return {e["paper"] for e in _entries(table)} if table in PAPER_TABLES else set()


def _made_for(row: Row, paper: str) -> bool:
    """A run made with a paper's preset fills only that paper's tables (its ablation tables
    too: the SAM-IQA preset's branch and distance runs fill Tables 4 and 5); the row's
    protocol and settings decide which of them (``row.entries``)."""
    made_for = row.folder.paper if row.folder is not None else ""
    return not made_for or made_for == paper or bool(_papers(made_for) & _papers(paper))


def _ours(
    tables: Mapping[str, DatasetTable], entry: dict[str, Any], dataset: str, paper: str
) -> str:
    """Our median test SRCC/PLCC of the run that meets this entry, "-", or "n/c"."""
    if entry.get("comparable", True) is False:
        return NOT_COMPARABLE
    for name, table in tables.items():
        if canonical_dataset(name) != dataset:
            continue
        for row in table.rows:
            if entry["id"] in row.entries and row.repeats and _made_for(row, paper):
                test = row.summary
                plcc = test.get("plcc", {}).get("median")
                return f"{test['srcc']['median']:.3f}/" + ("-" if plcc is None else f"{plcc:.3f}")
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
    datasets = list(PAPER_DATASETS.get(paper) or _all_datasets(entries))
    rows = []
    for entry in entries:
        cells = [f"{_ours(tables, entry, d, paper)} \\| {_published(entry, d)}" for d in datasets]
        rows.append([_label(entry), *cells])
    return datasets, rows


def _all_datasets(entries: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(d for e in entries for d in e["results"]))


def _label(entry: dict[str, Any]) -> str:
    """The paper's row and what of ours stands beside it."""
    if entry.get("label"):
        return str(entry["label"])
    ours = ", ".join(entry["methods"]) or "nothing here"
    label = f"{ours} ({entry.get('family') or 'baseline'})"
    match = entry.get("match") or {}
    if match:
        label += " [" + ", ".join(f"{k.split('.')[-1]}={_value(v)}" for k, v in match.items()) + "]"
    if entry.get("trained_on"):
        label += f", trained on {entry['trained_on']}"
    return f"{entry['row']}: {label}" if entry.get("row") else label


def _value(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def paper_markdown(paper: str, tables: Mapping[str, DatasetTable]) -> str:
    """The paper table in Markdown, with its source and how to read a cell."""
    entries = _entries(paper)
    datasets, rows = paper_rows(paper, tables)
    headers = ["method", *[f"{d} SRCC/PLCC" for d in datasets]]
    body = tabulate(rows, headers=headers, tablefmt="github")
    why = [
        f"- {_label(e)}: not comparable: {' '.join(str(e['why']).split())}"
        for e in entries
        if e.get("comparable", True) is False
    ]
    notes = "\n" + "\n".join(why) + "\n" if why else ""
    return (f"## {_sources(paper)}\n\nEach cell: ours (median test over the repeats here) \\| "
            f"published. \"-\": not run here, or not in the paper; \"{NOT_COMPARABLE}\": "
            f"nothing here can reproduce it (below).\n\n{body}\n{notes}")


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
                     for r in rows]}


__all__ = ["PAPER_DATASETS", "PAPER_TABLES", "Published", "paper_json", "paper_markdown",
           "paper_rows"]
