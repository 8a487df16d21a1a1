"""What an experiment writes: ``metrics.json`` and ``predictions.csv`` (``heads.experiment``
documents their schema) and what a checkpoint keeps of its store."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache.outputs import atomic_write_text
from cache.record import record_of
from cache.store import FeatureStore
from heads import protocols
from heads.losses import loss_name
from heads.metrics import summarize
from heads.registry import head_class
from heads.split_data import label_norm_of
from heads.train import loss_for
from iqadata.manifest import file_sha256

if TYPE_CHECKING:
    from heads.experiment import ExperimentSpec, _Dataset

SCHEMA = 2
PRED_FIELDS = ("run", "dataset", "id", "part", "distortion", "score", "target", "prediction",
               "predicted_score")


def store_record(store: FeatureStore) -> dict[str, Any]:
    """What a checkpoint keeps of its store so the backbone can be rebuilt and checked."""
    try:
        extraction = record_of(store.provenance, store.fingerprint_fields).to_dict()
    except ValueError:
        extraction = None  # a store written by other code: scoring images is not possible
    return {
        "store_fields": store.fingerprint_fields,
        "extraction": extraction,
        "dataset": store.provenance.get("dataset"),
    }


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(PRED_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def header(spec: ExperimentSpec, datasets: list[_Dataset]) -> dict[str, Any]:
    """What ``metrics.json`` holds besides the runs and their summary."""
    first = datasets[0]
    orientation = spec.training.label_orientation
    return {
        "schema": SCHEMA,
        "head": spec.head,
        "head_kind": protocols.kind_of(head_class(spec.head)),
        "protocol": "mixed" if len(datasets) > 1 else "per_dataset",
        "sources": [_source_record(d, spec) for d in datasets],
        "dataset": first.name if len(datasets) == 1 else "+".join(d.name for d in datasets),
        "datasets": [d.name for d in datasets],
        "backbone": first.store.backbone or "unknown",
        "features": first.source.features,
        "ref_features": first.source.ref_features,
        "fingerprint": first.store.fingerprint,
        "manifest": first.source.manifest,
        "manifest_sha256": file_sha256(first.source.manifest),
        "score_kind": first.manifest.info.score_kind,
        # the dataset's scale and orientation (for reports); per run: its own records
        "label_norm": label_norm_of(first.manifest, orientation=orientation),
        "target_norm": spec.training.label_norm,
        "label_orientation": orientation,
        "preset": dict(spec.preset),
        "training": spec.training.to_dict(),
        "exclude_overlap": _audit_record(spec),
        "loss": _loss_record(spec),
        "head_config": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in spec.overrides.items()},
    }


def _audit_record(spec: ExperimentSpec) -> dict[str, Any] | None:
    if not spec.exclude_overlap:
        return None
    return {"audit": spec.exclude_overlap, "audit_sha256": file_sha256(spec.exclude_overlap)}


def _loss_record(spec: ExperimentSpec) -> dict[str, Any]:
    """The loss trained with: its name (``heads.losses.LOSSES``) and term weights."""
    loss = loss_for(spec.head, spec.training)
    return {"name": loss_name(loss), **dataclasses.asdict(loss)}



def _source_record(d: _Dataset, spec: ExperimentSpec) -> dict[str, Any]:
    """What a report needs of one dataset of the run (mixed runs have several)."""
    return {
        "dataset": d.name, "features": d.source.features, "manifest": d.source.manifest,
        "manifest_sha256": file_sha256(d.source.manifest),
        "score_kind": d.manifest.info.score_kind,
        "label_norm": label_norm_of(d.manifest, orientation=spec.training.label_orientation),
    }


def summary(records: list[dict[str, Any]], datasets: list[_Dataset]) -> dict[str, Any]:
    """Median / mean / std over the runs (per dataset too in a mixed run)."""
    out: dict[str, Any] = {p: summarize([r[p] for r in records if r[p]]) for p in ("val", "test")
           if any(r[p] for r in records)}
    if len(datasets) > 1:
        for d in datasets:
            per = [r["datasets"][d.name] for r in records]
            out[d.name] = {p: summarize([x[p] for x in per if x[p]]) for p in ("val", "test")
                           if any(x[p] for x in per)}
    return out
