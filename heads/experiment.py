"""One ``iqa-train-head`` experiment: train a head on one or more splits and report.

For each run (one split file and seed) the head trains on the split's train part, is
selected on its val part, and is evaluated once on val and test; the run's folder gets
``model.pt``, ``curves.csv``, ``predictions.csv`` (id, part, target, prediction) and
``metrics.json``. With one run that folder is ``out``; with several (several split files,
or one split with ``repeats`` seeds) each run writes ``out/run_NN/`` and ``out/metrics.json``
adds the per-run metrics and their median / mean / std (``heads.metrics.summarize``; the
papers report the median over repeats) and ``out/predictions.csv`` gathers every run with a
``run`` column. An FR head without ``ref_features`` reads references from the feature
store itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cache.manifest import read_manifest, read_split
from cache.store import FeatureStore, open_store
from heads.data import SplitData, load_split
from heads.evaluate import evaluate
from heads.metrics import summarize
from heads.registry import get_head
from heads.train import FitResult, fit


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything ``iqa-train-head`` was asked to do."""

    head: str
    features: str
    manifest: str
    splits: tuple[str, ...]
    out: str
    ref_features: str | None = None
    repeats: int = 1
    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    written_only: bool = False
    preload: bool | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def plan_runs(spec: ExperimentSpec) -> list[tuple[str, int]]:
    """(split file, seed) of every run: one per split, or ``repeats`` seeds of one split."""
    if not spec.splits:
        raise ValueError("give at least one split file")
    if spec.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {spec.repeats}")
    if len(spec.splits) > 1 and spec.repeats > 1:
        raise ValueError("give several split files or --repeats with one split, not both")
    if len(spec.splits) > 1:
        return [(s, spec.seed) for s in spec.splits]
    return [(spec.splits[0], spec.seed + k) for k in range(spec.repeats)]


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _report(
    res: FitResult, data: SplitData, run_dir: Path, spec: ExperimentSpec
) -> tuple[dict, list]:
    out, preds = {}, []
    for part in (data.train, data.val, data.test):
        ev = evaluate(res.model, part, prompt=res.prompt, device=spec.device)
        out[part.name] = ev["metrics"]
        preds += [
            {"id": i, "part": part.name, "target": float(t), "prediction": float(p)}
            for i, t, p in zip(ev["ids"], ev["target"], ev["pred"], strict=True)
        ]
    _write_predictions(run_dir / "predictions.csv", preds)
    return out, preds


def _one_run(
    spec: ExperimentSpec, stores: tuple, split_path: str, seed: int, run_dir: Path
) -> tuple[dict, list]:
    store, ref_store = stores
    data = load_split(
        store,
        read_manifest(spec.manifest),
        read_split(split_path),
        ref_store=ref_store,
        written_only=spec.written_only,
        preload=spec.preload,
    )
    res = fit(
        spec.head,
        spec.overrides,
        data.train,
        data.val,
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        seed=seed,
        device=spec.device,
        out_dir=run_dir,
        store_fingerprint=data.fingerprint,
        label_norm=data.label_norm,
        resume=spec.resume and (run_dir / "last.pt").is_file(),
        record=_store_record(store),
    )
    metrics, preds = _report(res, data, run_dir, spec)
    record = {
        "split": split_path,
        "seed": seed,
        "best_epoch": res.best_epoch,
        "selection": res.selection,
        "dropped_unwritten": data.dropped,
        "val": metrics["val"],
        "test": metrics["test"],
        "train": metrics["train"],
    }
    _write_json(run_dir / "metrics.json", record)
    return record, preds


def _store_record(store: FeatureStore) -> dict[str, Any]:
    """What a checkpoint keeps of its store so the backbone can be rebuilt and checked."""
    return {
        "store_fields": store.fingerprint_fields,
        "extract_config": store.attrs.get("extract_config"),
        "dataset": store.attrs.get("dataset"),
    }


def _open_stores(spec: ExperimentSpec) -> tuple[FeatureStore, FeatureStore | None]:
    store = open_store(spec.features)
    if not get_head(spec.head).needs_ref:
        return store, None
    return store, open_store(spec.ref_features) if spec.ref_features else store


def run_experiment(spec: ExperimentSpec) -> dict[str, Any]:
    """Train and evaluate every planned run; returns what ``out/metrics.json`` holds."""
    runs = plan_runs(spec)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    stores = _open_stores(spec)
    records, all_preds = [], []
    for k, (split_path, seed) in enumerate(runs):
        run_dir = out if len(runs) == 1 else out / f"run_{k:02d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        record, preds = _one_run(spec, stores, split_path, seed, run_dir)
        records.append(record)
        all_preds += [{"run": k, **p} for p in preds]
    result = {
        "head": spec.head,
        "features": spec.features,
        "fingerprint": stores[0].fingerprint,
        **({k: records[0][k] for k in ("val", "test")} if len(runs) == 1 else {}),
    }
    if len(runs) > 1:
        result["runs"] = records
        done = {p: [r[p] for r in records if r[p]] for p in ("val", "test")}
        result["summary"] = {p: summarize(v) for p, v in done.items() if v}
        _write_predictions(out / "predictions.csv", all_preds)
        _write_json(out / "metrics.json", result)
    else:
        _write_json(out / "metrics.json", {**records[0], **result})
    return result
