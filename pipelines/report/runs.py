"""Read ``iqa-train-head`` output folders for reports, defensively.

The current layout (``metrics.json`` schema 2) is::

    OUT/metrics.json      head, backbone, dataset, manifest (+ sha256), score_kind,
                          label_norm, training, runs: [{run, dir, split, seed, test, ...}],
                          summary
    OUT/predictions.csv   run,id,part,distortion,score,target,prediction,predicted_score
    OUT/run_NN/curves.csv epoch,train_loss,val_srcc,val_plcc,lr

``score`` / ``predicted_score`` are on the dataset's own scale and orientation; ``target`` /
``prediction`` are normalised to [0, 1], higher is better, unless the run kept the
dataset's own orientation (``label_norm.flip`` false for a DMOS set: the prompt head).
``preset.paper`` names the paper table the run's preset follows (reports match on it).
Older folders (one flat run, no ``runs`` list, no raw-scale columns, no dataset or
backbone) are read too: what is missing comes from the feature store the run names and from
its manifest (``label_norm`` is then rebuilt from the manifest's score range, as training
built it). ``iqa-test-head`` and ``iqa-distill train`` folders are read by
:mod:`pipelines.report.run_kinds`.

Each folder's ``settings`` (``head_config.*`` with the head's defaults filled in,
``training.*``) decide which published row it is compared with
(:mod:`pipelines.report.published`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqadata.manifest import Manifest, file_sha256, read_manifest
from pipelines.report.published import RunFacts, head_defaults


class RunFolderError(ValueError):
    """A folder given to the report is not a readable ``iqa-train-head`` output."""


@dataclass(frozen=True)
class LabelScale:
    """How a dataset's raw scores map to the normalised [0, 1] higher-is-better targets."""

    low: float
    high: float
    lower_better: bool
    score_kind: str = "MOS"
    flip: bool | None = None  # targets reversed; None: as lower_better (older runs)

    @property
    def flipped(self) -> bool:
        return self.lower_better if self.flip is None else self.flip

    def to_raw(self, t: np.ndarray) -> np.ndarray:
        """Normalised values back on the dataset's scale and orientation."""
        t = 1.0 - t if self.flipped else t
        return self.low + t * (self.high - self.low)

    def to_target(self, score: np.ndarray) -> np.ndarray:
        """Raw scores to normalised targets (higher is better unless kept native)."""
        t = (score - self.low) / (self.high - self.low)
        return 1.0 - t if self.flipped else t

    @property
    def label(self) -> str:
        """``DMOS, 0-100, lower is better`` for axis labels and table headers."""
        way = "lower is better" if self.lower_better else "higher is better"
        return f"{self.score_kind}, {self.low:g}-{self.high:g}, {way}"


@dataclass
class Predictions:
    """Test-part rows of one folder, all repeats (``run`` tells them apart)."""

    run: np.ndarray
    ids: list[str]
    distortion: list[str]
    target: np.ndarray
    prediction: np.ndarray
    score: np.ndarray | None = None
    predicted_score: np.ndarray | None = None
    dataset: list[str] | None = None

    def select(self, mask: np.ndarray) -> Predictions:
        """The rows where ``mask`` is True."""
        pick = np.flatnonzero(mask)
        return Predictions(
            run=self.run[pick], ids=[self.ids[i] for i in pick],
            distortion=[self.distortion[i] for i in pick], target=self.target[pick],
            prediction=self.prediction[pick],
            score=None if self.score is None else self.score[pick],
            predicted_score=None if self.predicted_score is None else self.predicted_score[pick],
            dataset=None if self.dataset is None else [self.dataset[i] for i in pick],
        )


@dataclass
class Repeat:
    """One repeat (split and seed) of a folder."""

    index: int
    split: str
    seed: int | None
    best_epoch: int | None
    selection: str
    test: dict[str, float]
    curves: Path | None


@dataclass
class RunFolder:
    """One ``iqa-train-head`` output folder, reduced to what a report needs."""

    path: Path
    head: str
    backbone: str
    dataset: str
    manifest: str | None
    manifest_sha256: str
    scale: LabelScale | None
    protocol: str
    repeats: list[Repeat]
    predictions: Predictions | None
    training: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    trained_on: str | None = None
    paper: str = ""

    @property
    def facts(self) -> RunFacts:
        """What matches this folder to a published row."""
        return RunFacts(self.settings, self.trained_on)

    @property
    def name(self) -> str:
        """File stem for this folder's plots: ``<dataset>-<backbone>-<head>``."""
        return f"{self.dataset}-{self.backbone}-{self.head}"


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path.parent}: no metrics.json (is it an iqa-train-head --out "
                             "folder?)") from None
    except ValueError as err:
        raise RunFolderError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or "head" not in data:
        raise RunFolderError(f"{path}: not an iqa-train-head metrics.json (no 'head')")
    return data


def _store_facts(metrics: dict[str, Any]) -> tuple[str, str]:
    """(dataset, backbone) of an older metrics.json, read from its feature store."""
    from cache.store import open_store

    try:
        store = open_store(metrics["features"])
    except (KeyError, OSError, ValueError) as err:
        raise RunFolderError(f"metrics.json names no dataset/backbone and its store cannot "
                             f"be opened ({err})") from None
    return (str(store.provenance.get("dataset", "unknown")),
            store.backbone or "unknown")


def _paper_of(metrics: dict[str, Any]) -> str:
    """The paper table of the preset a run was made with ("" when it records none)."""
    return str((metrics.get("preset") or {}).get("paper") or "")


def label_scale(metrics: dict[str, Any], manifest: Manifest | None) -> LabelScale | None:
    norm = metrics.get("label_norm") or {}
    kind = str(metrics.get("score_kind") or (manifest.info.score_kind if manifest else "MOS"))
    if {"low", "high", "lower_better"} <= set(norm):
        lower = bool(norm["lower_better"])
        flip = bool(norm.get("flip", lower))
        return LabelScale(float(norm["low"]), float(norm["high"]), lower, kind, flip)
    if manifest is None:
        return None
    low, high = manifest.info.score_range
    lower = manifest.info.lower_better
    return LabelScale(float(low), float(high), lower, kind, lower)  # as training mapped it


def _repeats(path: Path, metrics: dict[str, Any]) -> list[Repeat]:
    records = metrics.get("runs") or [metrics]
    out = []
    for k, rec in enumerate(records):
        index = int(rec.get("run", k))
        folder = path / str(rec.get("dir") or f"run_{index:02d}")
        places = [folder / "curves.csv"] + ([path / "curves.csv"] if len(records) == 1 else [])
        curves = next((p for p in places if p.is_file()), None)
        out.append(Repeat(
            index=index, split=str(rec.get("split", "")), seed=rec.get("seed"),
            best_epoch=rec.get("best_epoch"), selection=str(rec.get("selection", "")),
            test=dict(rec.get("test") or {}),
            curves=curves,
        ))
    return out


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray | None:
    if not rows or not rows[0].get(name):
        return None
    return np.array([float(r[name]) for r in rows])


def read_predictions(
    path: Path, scale: LabelScale | None, manifest: Manifest | None, part: str | None = "test"
) -> Predictions | None:
    """Test rows (``part``; None: every row) of ``predictions.csv``; raw-scale columns
    rebuilt when absent."""
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if part is None or r.get("part") == part]
    target, prediction = _column(rows, "target"), _column(rows, "prediction")
    if target is None or prediction is None:
        raise RunFolderError(f"{path}: no test rows with target and prediction columns")
    by_id = manifest.by_id() if manifest else {}
    distortion = [r.get("distortion") or getattr(by_id.get(r["id"]), "distortion", "")
                  for r in rows]
    score, predicted = _column(rows, "score"), _column(rows, "predicted_score")
    if scale is not None and score is None:
        score = scale.to_raw(target)
    if scale is not None and predicted is None:
        predicted = scale.to_raw(prediction)
    return Predictions(
        run=np.array([int(r.get("run") or 0) for r in rows]), ids=[r["id"] for r in rows],
        distortion=[d or "" for d in distortion], target=target, prediction=prediction,
        score=score, predicted_score=predicted,
        dataset=[r["dataset"] for r in rows] if rows and "dataset" in rows[0] else None,
    )


def find_manifest(recorded: str | None, dataset: str, data_dir: str | Path | None,
                  sha256: str = "") -> tuple[Manifest | None, str]:
    """The manifest a run was trained on, and a note when it was not found or changed.

    Tried in order: the path ``metrics.json`` records, then ``DATA_DIR/<dataset>/
    manifest.csv``. A file whose sha256 differs from the recorded one is not used.
    """
    candidates = [Path(recorded)] if recorded else []
    if data_dir is not None:
        candidates.append(Path(data_dir) / dataset / "manifest.csv")
    for path in candidates:
        if not path.is_file():
            continue
        if sha256 and file_sha256(path) != sha256:
            return None, f"{path} changed since training (sha256 differs)"
        return read_manifest(path), ""
    if not candidates:
        return None, "the run records no manifest (older runs: give --data-dir)"
    return None, f"manifest not found ({', '.join(str(p) for p in candidates)})"


def run_settings(head: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Dotted settings of a run: ``head_config.*`` (the head's config defaults, then what
    the run recorded) and ``training.*``."""
    out = dict(head_defaults(head))
    out |= {f"head_config.{k}": v for k, v in (metrics.get("head_config") or {}).items()}
    out |= {f"training.{k}": v for k, v in (metrics.get("training") or {}).items()}
    return out


def read_runs(path: str | Path, data_dir: str | Path | None = None) -> list[RunFolder]:
    """The report's view of one run folder: one ``RunFolder``, or one per dataset of a
    mixed run (one model trained on several datasets), each with its own rows; cross
    tests and students through :func:`pipelines.report.run_kinds.read_other`."""
    from pipelines.report.run_kinds import read_other

    other = read_other(Path(path), data_dir)
    if other is not None:
        return [other]
    metrics = _load_json(Path(path) / "metrics.json")
    sources = metrics.get("sources") or []
    if len(sources) < 2:
        return [read_run(path, data_dir)]
    return [_dataset_of_mixed(Path(path), metrics, src, data_dir) for src in sources]


def _dataset_of_mixed(path: Path, metrics: dict[str, Any], src: dict[str, Any],
                      data_dir: str | Path | None) -> RunFolder:
    name = str(src["dataset"])
    manifest, _ = find_manifest(src.get("manifest"), name, data_dir,
                                str(src.get("manifest_sha256", "")))
    scale = label_scale(src, manifest)
    runs = [{**r, **(r.get("datasets") or {}).get(name, {})} for r in metrics["runs"]]
    preds = read_predictions(path / "predictions.csv", scale, manifest)
    if preds is not None and preds.dataset is not None:
        preds = preds.select(np.array([d == name for d in preds.dataset]))
    return RunFolder(
        path=path, head=str(metrics["head"]), backbone=str(metrics.get("backbone")),
        dataset=name, manifest=src.get("manifest"),
        manifest_sha256=str(src.get("manifest_sha256", "")), scale=scale, protocol="mixed",
        repeats=_repeats(path, {"runs": runs}), predictions=preds,
        training=dict(metrics.get("training") or {}), paper=_paper_of(metrics),
        settings=run_settings(str(metrics["head"]), metrics),
    )


def read_run(path: str | Path, data_dir: str | Path | None = None) -> RunFolder:
    """Read one run folder (see the module docstring for the layouts accepted)."""
    path = Path(path)
    metrics = _load_json(path / "metrics.json")
    dataset, backbone = metrics.get("dataset"), metrics.get("backbone")
    if not dataset or not backbone:
        dataset, backbone = _store_facts(metrics)
    manifest, _ = find_manifest(metrics.get("manifest"), str(dataset), data_dir,
                                str(metrics.get("manifest_sha256", "")))
    scale = label_scale(metrics, manifest)
    training = metrics.get("training") or {}
    return RunFolder(
        path=path, head=str(metrics["head"]), backbone=str(backbone), dataset=str(dataset),
        manifest=metrics.get("manifest") or (str(manifest.path) if manifest else None),
        manifest_sha256=str(metrics.get("manifest_sha256", "")), scale=scale,
        protocol=str(metrics.get("protocol") or training.get("protocol") or "per_dataset"),
        repeats=_repeats(path, metrics),
        predictions=read_predictions(path / "predictions.csv", scale, manifest),
        training=dict(training), paper=_paper_of(metrics),
        settings=run_settings(str(metrics["head"]), metrics),
    )
