"""Results tables as Markdown, LaTeX (booktabs), JSON and a flat DVC metrics file.

Layout of the papers: one table per dataset, one row per method, SRCC and PLCC columns
(median over repeats; Markdown adds the std), heads first and the classical baselines
below. When a paper reports a row's method on that dataset, ``paper SRCC`` / ``paper PLCC``
and the source (paper, table, page) stand beside ours, and the strongest baseline that
paper lists follows in a last group. Correlations have 3 decimals, as the papers print
them; RMSE 4 significant digits on the dataset's own scale. Tables are drawn by
``tabulate``.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from pipelines.report.published import Published
from pipelines.report.tables import DatasetTable, Row, published_only

DASH = "-"


def _corr(summary: dict[str, dict[str, float]], key: str, std: bool) -> str:
    cell = summary.get(key)
    if not cell:
        return DASH
    text = f"{cell['median']:.3f}"
    return f"{text} ± {cell['std']:.3f}" if std and cell["n"] > 1 else text


def _rmse(summary: dict[str, dict[str, float]]) -> str:
    cell = summary.get("rmse")
    return DASH if not cell else f"{cell['median']:.4g}"


def _has_published(table: DatasetTable) -> bool:
    return any(r.published is not None for r in table.rows)


def headers(table: DatasetTable) -> list[str]:
    """Column names of a dataset's main table."""
    cols = ["method", "backbone", "SRCC", "PLCC"]
    if table.logistic:
        cols.append(f"PLCC ({table.logistic}-p. logistic)")
    scale = f" ({table.scale.score_kind} {table.scale.low:g}-{table.scale.high:g})" \
        if table.scale else ""
    cols += [f"RMSE{scale}", "runs"]
    if _has_published(table):
        cols += ["paper SRCC", "paper PLCC", "paper source"]
    return cols


def _paper_cells(pub: Published | None) -> list[str]:
    if pub is None:
        return ["", "", ""]
    return [pub.fmt(pub.score.srcc), pub.fmt(pub.score.plcc), pub.source]


def _row_cells(table: DatasetTable, row: Row, std: bool) -> list[str]:
    s = row.summary
    cells = [row.name, row.backbone or DASH, _corr(s, "srcc", std), _corr(s, "plcc", std)]
    if table.logistic:
        cells.append(_corr(s, "plcc_logistic", std))
    cells += [_rmse(s), str(len(row.repeats))]
    if _has_published(table):
        cells += _paper_cells(row.published)
    return cells


def _published_cells(table: DatasetTable, item: dict[str, Any]) -> list[str]:
    pub: Published = item["published"]
    blank = len(headers(table)) - 5
    return [item["method"], DASH] + [""] * blank + [
        pub.fmt(item["srcc"]), pub.fmt(item["plcc"]), item["source"]]


def groups(table: DatasetTable, std: bool) -> list[tuple[str, list[list[str]]]]:
    """(group title, rows of cells): heads, baselines, published-only."""
    out = []
    for group, title in (("head", "heads"), ("baseline", "baselines")):
        rows = [_row_cells(table, r, std) for r in table.rows if r.group == group]
        if rows:
            out.append((title, rows))
    extra = [_published_cells(table, item) for item in published_only(table)]
    if extra:
        out.append(("best baseline in the paper", extra))
    return out


def _caption(table: DatasetTable, std: bool) -> str:
    n = sorted({len(r.repeats) for r in table.rows if r.group == "head"})
    runs = "/".join(str(k) for k in n) or "0"
    return f"Test SRCC / PLCC on {table.dataset}: median{' ± std' if std else ''} over {runs} runs"


def markdown_table(table: DatasetTable) -> str:
    """The dataset's main table, its per-distortion table and notes, in Markdown."""
    rows: list[list[str]] = []
    ncol = len(headers(table))
    for k, (title, cells) in enumerate(groups(table, std=True)):
        if k:
            rows.append([f"*{title}*"] + [""] * (ncol - 1))
        rows += cells
    parts = [f"## {table.dataset}\n", _caption(table, std=True) + ".\n",
             tabulate(rows, headers(table), tablefmt="github", disable_numparse=True)]
    if table.scale:
        parts.append(f"\nScores: {table.scale.label}.")
    quoted = sources(table)
    if quoted:
        parts += ["\nPaper figures:\n"] + [f"- {line}" for line in quoted]
    if table.distortions:
        parts += ["\n### SRCC per distortion type\n",
                  tabulate(*distortion_cells(table), tablefmt="github", disable_numparse=True)]
    parts += [f"\n- {note}" for note in table.notes]
    return "\n".join(parts) + "\n"


def sources(table: DatasetTable) -> list[str]:
    """One line per paper table row quoted in ``table``: where, and what it was run on."""
    seen: dict[str, Published] = {}
    for row in table.rows:
        if row.published is not None:
            seen.setdefault(row.published.entry, row.published)
    out = []
    for p in seen.values():
        on = f" Paper backbone: {p.paper_backbone}." if p.paper_backbone else ""
        best = f" Best baseline: {p.baseline_rule}." if p.baseline else ""
        out.append(f"{p.source}: {p.where}.{on}{best}{' ' + p.note if p.note else ''}")
    return out


def distortion_cells(table: DatasetTable) -> tuple[list[list[str]], list[str]]:
    """(rows, headers) of the per-distortion-type SRCC table: types x methods."""
    methods = [r for r in table.rows if r.per_type]
    cols = ["distortion", "n"] + [r.label for r in methods]
    rows = []
    for t in table.distortions:
        n = next((r.per_type[t]["n"] for r in methods if t in r.per_type), 0)
        rows.append([t, f"{n:g}"] + [f"{r.per_type[t]['srcc']:.3f}" if t in r.per_type
                                     else DASH for r in methods])
    return rows, cols


def _with_midrules(latex: str, sizes: list[int]) -> str:
    """Insert ``\\midrule`` between row groups of a tabulate booktabs table."""
    lines = latex.splitlines()
    start = lines.index(r"\midrule") + 1
    at, cuts = start, []
    for size in sizes[:-1]:
        at += size
        cuts.append(at)
    for cut in reversed(cuts):
        lines.insert(cut, r"\midrule")
    return "\n".join(lines)


_TEX = str.maketrans({c: "\\" + c for c in "&%$#_{}"} | {"\\": r"\textbackslash{}"})


def _tex_escape(text: str) -> str:
    return text.translate(_TEX)


def latex_table(table: DatasetTable) -> str:
    """A booktabs ``table`` environment with the dataset's main table (medians)."""
    grouped = groups(table, std=False)
    body = [cells for _, rows in grouped for cells in rows]
    cols = headers(table)
    align = ["left", "left"] + ["center"] * (len(cols) - 2 - _has_published(table)) + \
        ["left"] * _has_published(table)
    tabular = tabulate(body, cols, tablefmt="latex_booktabs", disable_numparse=True,
                       colalign=align)
    tabular = _with_midrules(tabular, [len(rows) for _, rows in grouped])
    label = "".join(c if c.isalnum() else "-" for c in table.dataset)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{_tex_escape(_caption(table, std=False))}.}}",
             rf"\label{{tab:iqa-{label}}}", tabular]
    cited = list(dict.fromkeys(r.published.source for r in table.rows if r.published))
    if cited:
        lines.append(r"\par\smallskip\footnotesize Paper figures: " +
                     _tex_escape("; ".join(cited)) + ".")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def latex_distortion_table(table: DatasetTable) -> str:
    """The per-distortion-type SRCC table as a booktabs ``table`` (empty if none)."""
    if not table.distortions:
        return ""
    rows, cols = distortion_cells(table)
    label = "".join(c if c.isalnum() else "-" for c in table.dataset)
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{Test SRCC per distortion type on {_tex_escape(table.dataset)} "
        r"(median over runs).}",
        rf"\label{{tab:iqa-{label}-types}}",
        tabulate(rows, cols, tablefmt="latex_booktabs", disable_numparse=True),
        r"\end{table}",
    ]) + "\n"


def overview_cells(tables: dict[str, DatasetTable]) -> tuple[list[list[str]], list[str], list]:
    """(rows, headers, group sizes): methods x datasets, median SRCC / PLCC side by side,
    the layout of SAM-IQA's Table 1 (heads first, baselines below)."""
    order: dict[tuple[str, str], None] = {}
    for group in ("head", "baseline"):
        for t in tables.values():
            order.update({(group, r.label): None for r in t.rows if r.group == group})
    cols = ["method"] + [f"{d} {m}" for d in tables for m in ("SRCC", "PLCC")]
    rows = []
    for _, label in order:
        cells = [label]
        for t in tables.values():
            row = next((r for r in t.rows if r.label == label), None)
            s = row.summary if row else {}
            cells += [_corr(s, "srcc", False), _corr(s, "plcc", False)]
        rows.append(cells)
    sizes = [sum(1 for g, _ in order if g == group) for group in ("head", "baseline")]
    return rows, cols, [n for n in sizes if n]


def markdown_overview(tables: dict[str, DatasetTable]) -> str:
    """The all-datasets table in Markdown ("" for a single dataset)."""
    if len(tables) < 2:
        return ""
    rows, cols, _ = overview_cells(tables)
    return ("## All datasets\n\nTest SRCC / PLCC, median over runs.\n\n"
            + tabulate(rows, cols, tablefmt="github", disable_numparse=True) + "\n")


def latex_overview(tables: dict[str, DatasetTable]) -> str:
    """The all-datasets table as a booktabs ``table*`` ("" for a single dataset)."""
    if len(tables) < 2:
        return ""
    rows, cols, sizes = overview_cells(tables)
    tabular = tabulate(rows, cols, tablefmt="latex_booktabs", disable_numparse=True,
                       colalign=["left"] + ["center"] * (len(cols) - 1))
    return "\n".join([
        r"\begin{table*}[t]", r"\centering", r"\small",
        r"\caption{Test SRCC / PLCC, median over runs.}", r"\label{tab:iqa-overview}",
        _with_midrules(tabular, sizes), r"\end{table*}",
    ]) + "\n"
