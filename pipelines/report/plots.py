"""Figures for a paper, and the same data for ``dvc plots show``.

* Scatter: predicted against ground-truth test scores of one repeat (the one with the
  median test SRCC), both on the dataset's own scale and orientation, one colour per
  distortion type, the line y = x and the fitted VQEG logistic (prediction -> score, the
  map the logistic PLCC uses) drawn through the points; SRCC, PLCC and n in the title. The
  axes span the dataset's nominal score range (widened only to include points outside it),
  never the data alone, so a collapsed head shows as a flat line instead of an
  auto-zoomed cloud.
* Training curves: training loss and validation SRCC per epoch, one line per repeat, the
  selected epoch marked; the learning rate too when a schedule changed it.

Each figure is written as PNG (and SVG / PDF on request); the plotted numbers go to CSV
files beside them, one per series, for DVC's Vega-Lite templates.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heads.metrics import compute_metrics, fit_logistic
from pipelines.report.runs import Predictions, RunFolder

FORMATS = ("png", "svg", "pdf")
MARKERS = "os^Dv<>p"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "iqa-report"  # stable SVG ids: same bytes each time
    import matplotlib.pyplot as plt

    return plt


def median_repeat(p: Predictions) -> int:
    """The repeat whose test SRCC is the median (the lower one for an even count)."""
    runs = np.unique(p.run)
    srcc = [compute_metrics(p.prediction[p.run == r], p.target[p.run == r])["srcc"]
            for r in runs]
    order = np.argsort(srcc, kind="stable")
    return int(runs[order[(len(runs) - 1) // 2]])


def _axis_values(run: RunFolder, p: Predictions) -> tuple[np.ndarray, np.ndarray, str]:
    if run.scale is not None and p.score is not None and p.predicted_score is not None:
        return p.score, p.predicted_score, run.scale.label
    return p.target, p.prediction, "normalised, higher is better"


def _limits(run: RunFolder, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    low, high = (run.scale.low, run.scale.high) if run.scale is not None else (0.0, 1.0)
    low, high = min(low, float(x.min()), float(y.min())), max(high, float(x.max()),
                                                               float(y.max()))
    pad = 0.04 * (high - low)
    return low - pad, high + pad


def _style(types: list[str]) -> dict[str, tuple[Any, str]]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(types) <= 10 else "tab20")
    size = 10 if len(types) <= 10 else 20
    return {t: (cmap(i % size), MARKERS[(i // size) % len(MARKERS)])
            for i, t in enumerate(types)}


def _draw_fit(ax: Any, x: np.ndarray, y: np.ndarray, kind: int) -> bool:
    """The logistic from prediction (y) to score (x), drawn as x = f(y)."""
    fitted = fit_logistic(y, x, kind)
    if fitted is None:
        return False
    order = np.argsort(y)
    ax.plot(fitted[order], y[order], color="black", lw=1.2, label=f"{kind}-p. logistic fit")
    return True


def _title(run: RunFolder, p: Predictions, k: int, total: int) -> str:
    m = compute_metrics(p.prediction, p.target)
    which = f", run {k} (median SRCC of {total})" if total > 1 else ""
    return (f"{run.head} ({run.backbone}) on {run.dataset}\n"
            f"SRCC {m['srcc']:.3f}, PLCC {m['plcc']:.3f}, n = {len(p.ids)}{which}")


def scatter_figure(run: RunFolder, p: Predictions, k: int, total: int, kind: int) -> Any:
    """The scatter figure of repeat ``k``'s test predictions ``p`` (of ``total``)."""
    plt = _pyplot()
    x, y, scale = _axis_values(run, p)
    fig, ax = plt.subplots(figsize=(4.6, 5.4), dpi=200)
    lim = _limits(run, x, y)
    ax.plot(lim, lim, color="0.6", lw=0.8, ls="--", label="y = x")
    kinds = np.array(p.distortion)
    for t, (colour, marker) in _style(sorted(set(p.distortion))).items():
        pick = kinds == t
        ax.scatter(x[pick], y[pick], s=12, color=colour, marker=marker, alpha=0.8,
                   linewidths=0, label=t or "(no type)")
    if not _draw_fit(ax, x, y, kind):
        ax.text(0.03, 0.97, "constant prediction: no logistic fit", transform=ax.transAxes,
                va="top", fontsize=7, color="crimson")
    ax.set(xlim=lim, ylim=lim, aspect="equal", xlabel=f"ground truth ({scale})",
           ylabel=f"predicted ({scale})")
    ax.set_title(_title(run, p, k, total), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.label.set_size(7.5)
    ax.yaxis.label.set_size(7.5)
    ax.grid(alpha=0.25, lw=0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=6,
              frameon=False, markerscale=1.2)
    fig.tight_layout()
    return fig


def _save(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, bbox_inches="tight", metadata=_metadata(fmt))
        out.append(path)
    _pyplot().close(fig)
    return out


def _metadata(fmt: str) -> dict[str, Any]:
    """No timestamps or version strings, so two reports of the same runs are identical."""
    if fmt == "png":
        return {"Software": None}
    if fmt == "svg":
        return {"Date": None, "Creator": None}
    return {"CreationDate": None, "Producer": None, "Creator": None}


def _write_csv(path: Path, header: Sequence[str], rows: Any) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_scatter(run: RunFolder, out_dir: Path, formats: Sequence[str] = ("png",),
                  kind: int = 4) -> list[Path]:
    """``<name>.<fmt>`` and ``<name>.csv`` (score, predicted_score, distortion, id)."""
    if run.predictions is None:
        return []
    repeats = sorted(set(run.predictions.run.tolist()))
    k = median_repeat(run.predictions)
    p = run.predictions.select(run.predictions.run == k)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / run.name
    x, y, _ = _axis_values(run, p)
    rows = zip(np.round(x, 6).tolist(), np.round(y, 6).tolist(), p.distortion, p.ids,
               strict=True)
    data = _write_csv(stem.with_suffix(".csv"),
                      ["score", "predicted_score", "distortion", "id"], rows)
    fig = scatter_figure(run, p, k, len(repeats), kind)
    return [*_save(fig, stem, formats), data]


def read_curves(path: Path) -> dict[str, np.ndarray]:
    """Columns of a ``curves.csv`` as float arrays (empty cells are NaN)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = list(rows[0]) if rows else []
    return {n: np.array([float(r[n]) if r.get(n) not in (None, "") else np.nan
                         for r in rows]) for n in names}


def _curve_panels(run: RunFolder, curves: list[tuple[int, dict[str, np.ndarray]]]) -> Any:
    plt = _pyplot()
    lr_varies = any("lr" in c and np.nanstd(c["lr"]) > 0 for _, c in curves)
    fig, axes = plt.subplots(1, 3 if lr_varies else 2, figsize=(9 if lr_varies else 7, 2.8),
                             dpi=200)
    for k, c in curves:
        line = axes[0].plot(c["epoch"], c["train_loss"], lw=1, label=f"run {k}")[0]
        if "val_srcc" in c and np.isfinite(c["val_srcc"]).any():
            axes[1].plot(c["epoch"], c["val_srcc"], lw=1, color=line.get_color())
            best = next((r.best_epoch for r in run.repeats if r.index == k), None)
            hit = np.flatnonzero(c["epoch"] == best) if best is not None else np.zeros(0, int)
            if hit.size:
                axes[1].plot(best, c["val_srcc"][hit[0]], "o", ms=3.5, color=line.get_color())
        if lr_varies:
            axes[2].plot(c["epoch"], c["lr"], lw=1, color=line.get_color())
    _label_curves(axes, curves, lr_varies)
    fig.suptitle(f"{run.head} ({run.backbone}) on {run.dataset}: training", fontsize=8)
    fig.tight_layout()
    return fig


def _minor_label(value: float, _: object) -> str:
    lead = round(value / 10 ** np.floor(np.log10(value))) if value > 0 else 0
    return f"{value:g}" if lead in (2, 4, 6) else ""


def _label_curves(axes: Any, curves: list, lr_varies: bool) -> None:
    losses = np.concatenate([c["train_loss"] for _, c in curves])
    if np.all(losses[np.isfinite(losses)] > 0):
        from matplotlib.ticker import FuncFormatter

        axes[0].set_yscale("log")  # ticks as 0.4, not 4 x 10^-1; minor ones at 2, 4, 6
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[0].yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    axes[0].set(xlabel="epoch", ylabel="training loss")
    vals = np.concatenate([c.get("val_srcc", np.array([np.nan])) for _, c in curves])
    low = min(0.0, float(np.nanmin(vals)) - 0.05) if np.isfinite(vals).any() else 0.0
    axes[1].set(xlabel="epoch", ylabel="validation SRCC", ylim=(low, 1.0))
    if not np.isfinite(vals).any():
        axes[1].text(0.5, 0.5, "no validation part", ha="center", transform=axes[1].transAxes)
    if lr_varies:
        axes[2].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    for ax in axes:
        ax.tick_params(which="both", labelsize=7)
        ax.xaxis.label.set_size(7.5)
        ax.yaxis.label.set_size(7.5)
        ax.grid(alpha=0.25, lw=0.5)
    if len(curves) > 1:
        axes[0].legend(fontsize=6, frameon=False)
    if np.isfinite(vals).any():
        axes[1].plot([], [], "o", ms=3.5, color="0.3", label="selected epoch")
        axes[1].legend(fontsize=6, frameon=False, loc="lower right")


def write_curves(run: RunFolder, out_dir: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """``<name>.<fmt>`` and ``<name>/run_NN.csv`` (epoch, train_loss, val_srcc) per repeat."""
    curves = [(r.index, read_curves(r.curves)) for r in run.repeats if r.curves is not None]
    curves = [(k, c) for k, c in curves if "epoch" in c and "train_loss" in c and len(c["epoch"])]
    if not curves:
        return []
    (out_dir / run.name).mkdir(parents=True, exist_ok=True)
    written = []
    for k, c in curves:
        val = c.get("val_srcc", np.full(len(c["epoch"]), np.nan))
        rows = [[int(e), f"{loss:.6g}", "" if np.isnan(v) else f"{v:.6g}"]
                for e, loss, v in zip(c["epoch"], c["train_loss"], val, strict=True)]
        written.append(_write_csv(out_dir / run.name / f"run_{k:02d}.csv",
                                  ["epoch", "train_loss", "val_srcc"], rows))
    return [*_save(_curve_panels(run, curves), out_dir / run.name, formats), *written]
