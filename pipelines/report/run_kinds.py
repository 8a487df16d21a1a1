"""Report readers for run folders other than ``iqa-train-head``'s: cross tests, students.

``iqa-eval`` reads them beside training runs, so their rows meet the published figures
they reproduce:

* an ``iqa-test-head`` folder (kind ``cross-test``) is a ``cross_dataset`` row of the
  tested dataset, trained on ``trained_on`` (DP-IQA Table V), with the training run's
  backbone and settings; every image it scored is a test row;
* an ``iqa-distill train`` folder (kind ``dpiqa-student``) is a ``student`` row whose
  backbone is the student's trunk (DP-IQA Table IV "Ours (student)", and Table XI "w/o
  distillation loss" for ``--map-weight 0``). One folder holds one split: folders of the
  same dataset, trunk and settings are merged into one row by :func:`merge_students`, so
  the row is the median over their splits, as the papers report.

Folders written before these fields existed lack the backbone or dataset; they are read
with ``unknown`` in their place and match no published row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cache.outputs import MARKER
from pipelines.report.runs import (
    Predictions,
    Repeat,
    RunFolder,
    RunFolderError,
    find_manifest,
    label_scale,
    read_predictions,
    run_settings,
)

CROSS_KIND = "cross-test"
STUDENT_KIND = "dpiqa-student"
STUDENT = "student"  # the method name of a student row (published.yaml `methods`)


def _kind(path: Path) -> str | None:
    try:
        return str(json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def _metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path}: no readable metrics.json ({err})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}/metrics.json: not a JSON object")
    return data


def read_other(path: Path, data_dir: str | Path | None = None) -> RunFolder | None:
    """The folder as a report row when it is a cross test or a student run, else None."""
    kind = _kind(path)
    if kind == CROSS_KIND:
        return read_cross_test(path, data_dir)
    if kind == STUDENT_KIND:
        return read_student(path, data_dir)
    return None


def _manifest_and_scale(
    metrics: dict[str, Any], dataset: str, data_dir: str | Path | None
) -> tuple[Any, Any]:
    sha = str(metrics.get("manifest_sha256", ""))
    manifest, _ = find_manifest(metrics.get("manifest"), dataset, data_dir, sha)
    return manifest, label_scale(metrics, manifest)


def read_cross_test(path: Path, data_dir: str | Path | None = None) -> RunFolder:
    """An ``iqa-test-head`` folder as a ``cross_dataset`` row of the tested dataset."""
    metrics = _metrics(path)
    dataset = str(metrics.get("tested_on") or "unknown")
    manifest, scale = _manifest_and_scale(metrics, dataset, data_dir)
    split = str(metrics.get("split") or "")
    repeats = [
        Repeat(int(r.get("run", k)), split, None, None, "trained elsewhere",
               dict(r.get("test") or {}), None)
        for k, r in enumerate(metrics.get("runs") or [])
    ]
    head = str(metrics.get("head", "unknown"))
    return RunFolder(
        path=path, head=head, backbone=str(metrics.get("backbone") or "unknown"),
        dataset=dataset, manifest=metrics.get("manifest"),
        manifest_sha256=str(metrics.get("manifest_sha256", "")), scale=scale,
        protocol="cross_dataset", repeats=repeats,
        predictions=read_predictions(path / "predictions.csv", scale, manifest, part=None),
        training=dict(metrics.get("training") or {}), settings=run_settings(head, metrics),
        trained_on=metrics.get("trained_on"),
    )


def _student_predictions(path: Path, scale: Any) -> Predictions | None:
    """The test rows of a student's ``predictions.csv`` (the student's own column)."""
    import csv

    if not (path / "predictions.csv").is_file():
        return None
    with open(path / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("part") == "test"]
    if not rows:
        raise RunFolderError(f"{path}/predictions.csv: no test rows")
    target = np.array([float(r["target"]) for r in rows])
    prediction = np.array([float(r["student"]) for r in rows])
    return Predictions(
        run=np.zeros(len(rows), dtype=int), ids=[r["id"] for r in rows],
        distortion=[""] * len(rows), target=target, prediction=prediction,
        score=None if scale is None else scale.to_raw(target),
        predicted_score=None if scale is None else scale.to_raw(prediction),
    )


def read_student(path: Path, data_dir: str | Path | None = None) -> RunFolder:
    """An ``iqa-distill train`` folder as a ``student`` row (one repeat: its split)."""
    metrics = _metrics(path)
    dataset = str(metrics.get("dataset") or "unknown")
    _, scale = _manifest_and_scale(metrics, dataset, data_dir)
    test = dict((metrics.get("student") or {}).get("test") or {})
    curves = path / "curves.csv"
    repeat = Repeat(0, str(metrics.get("split", "")), None, metrics.get("best_epoch"),
                    str(metrics.get("selection", "")), test,
                    curves if curves.is_file() else None)
    return RunFolder(
        path=path, head=STUDENT, backbone=str(metrics.get("trunk") or "unknown"),
        dataset=dataset, manifest=metrics.get("manifest"),
        manifest_sha256=str(metrics.get("manifest_sha256", "")), scale=scale,
        protocol="per_dataset", repeats=[repeat],
        predictions=_student_predictions(path, scale),
        training=dict(metrics.get("training") or {}), settings=run_settings(STUDENT, metrics),
    )


# settings that differ between the splits of one protocol (not between protocols)
PER_SPLIT = {"training.split", "training.split_sha256", "training.seed", "training.device",
             "training.workers", "training.preload"}


def _protocol_settings(run: RunFolder) -> dict[str, Any]:
    return {k: v for k, v in run.settings.items() if k not in PER_SPLIT}


def _same_student(a: RunFolder, b: RunFolder) -> bool:
    same_data = (a.dataset, a.backbone) == (b.dataset, b.backbone)
    return same_data and _protocol_settings(a) == _protocol_settings(b)


def _merge(group: list[RunFolder]) -> RunFolder:
    repeats = [replace(r, index=k) for k, run in enumerate(group) for r in run.repeats]
    parts = [run.predictions for run in group if run.predictions is not None]
    if len(parts) < len(group):
        return replace(group[0], repeats=repeats, predictions=None)
    return replace(group[0], repeats=repeats, predictions=_concat(parts))


def _concat(parts: list[Predictions]) -> Predictions:
    def column(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return Predictions(
        run=np.concatenate([np.full(len(p.ids), k) for k, p in enumerate(parts)]),
        ids=[i for p in parts for i in p.ids],
        distortion=[d for p in parts for d in p.distortion],
        target=np.concatenate([p.target for p in parts]),
        prediction=np.concatenate([p.prediction for p in parts]),
        score=column("score"), predicted_score=column("predicted_score"),
    )


def merge_students(runs: Sequence[RunFolder]) -> list[RunFolder]:
    """Student folders of one dataset, trunk and settings as one row (a repeat each)."""
    out: list[RunFolder] = []
    groups: list[list[RunFolder]] = []
    for run in runs:
        if run.head != STUDENT:
            out.append(run)
            continue
        for group in groups:
            if _same_student(group[0], run):
                group.append(run)
                break
        else:
            groups.append([run])
            out.append(run)
    merged = {id(g[0]): _merge(g) for g in groups}
    return [merged.get(id(run), run) for run in out]
