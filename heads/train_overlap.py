"""Which tested images share content with the training images of a head.

A cross-dataset test (:mod:`heads.crosstest`) means little when the test set holds the
head's own training content: a picture both datasets include, a copy under another name,
or the same dataset under another split. For every repeat of a training run, the images it
trained on are read back from the run's ``predictions.csv`` (rows of part ``train``) and
its manifests from ``metrics.json``. A tested image shares content with them when

* its file, or its reference's, has the sha256 of a training image or reference (the
  manifests' ``sha256`` / ``ref_sha256`` columns), or
* a content audit (``iqa-data audit``, :mod:`iqadata.overlap`) pairs it, exactly or as a
  near duplicate, with a training image.

What cannot be checked (a manifest without hashes, a moved training manifest, no audit)
is said in ``notes``, never silently taken as clean.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iqadata.manifest import Manifest, ManifestError, file_sha256, read_manifest
from iqadata.overlap import Audit


@dataclass
class TrainingSet:
    """The images each repeat of a run trained on, per manifest (by its sha256)."""

    manifests: dict[str, Manifest | None]  # sha256 -> manifest (None: not readable)
    runs: dict[int, dict[str, set[str]]]  # run -> manifest sha256 -> train image ids
    notes: list[str] = field(default_factory=list)


def _train_ids(run: Path, names: dict[str, str]) -> dict[int, dict[str, set[str]]]:
    out: dict[int, dict[str, set[str]]] = {}
    with open(run / "predictions.csv", newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            if rec.get("part") == "train" and rec.get("dataset") in names:
                sha = names[rec["dataset"]]
                out.setdefault(int(rec["run"]), {}).setdefault(sha, set()).add(rec["id"])
    return out


def training_set(run: str | Path) -> TrainingSet:
    """The training images of every repeat of an ``iqa-train-head`` output folder."""
    run = Path(run)
    found = TrainingSet({}, {})
    try:
        record = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found.notes.append(f"{run}/metrics.json is missing or unreadable")
        return found
    sources = record.get("sources") or []
    if not sources:
        found.notes.append(f"{run}/metrics.json names no training manifests (an older run)")
    for s in sources:
        found.manifests[s["manifest_sha256"]] = _manifest(
            s["manifest"], s["manifest_sha256"], found.notes
        )
    if not (run / "predictions.csv").is_file():
        found.notes.append(f"{run}/predictions.csv is missing: the training images are unknown")
        return found
    found.runs = _train_ids(run, {s["dataset"]: s["manifest_sha256"] for s in sources})
    return found


def _manifest(path: str, sha: str, notes: list[str]) -> Manifest | None:
    try:
        manifest = read_manifest(path)
    except ManifestError:
        notes.append(f"training manifest {path} not found or unreadable: hashes not compared")
        return None
    if file_sha256(path) != sha:
        notes.append(f"training manifest {path} changed since training: hashes not compared")
        return None
    return manifest


def _hashes(manifest: Manifest, ids: Sequence[str] | set[str]) -> dict[str, set[str]]:
    """image id -> the sha256 of its file and of its reference's file (those recorded)."""
    by_id = manifest.by_id()
    out = {}
    for i in ids:
        row = by_id[i]
        out[i] = {h for h in (row.extra.get("sha256"), row.extra.get("ref_sha256")) if h}
    return out


def shared_with_training(
    training: TrainingSet, target: Manifest, ids: Sequence[str], audit: Audit | None
) -> dict[str, Any]:
    """The tested ``ids`` of ``target`` that share content with each run's training images.

    Returns:
        ``{"ids": [...], "exact": [...], "audit": [...], "runs": [{"run", "shared"}],
        "notes": [...]}``: every id shared with some run, those found by hash and those
        found by the audit.
    """
    notes = list(training.notes)
    target_sha = target.sha256()
    tested = _hashes(target, ids)
    if not any(tested.values()):
        notes.append(f"{target.path} records no file hashes: exact copies not compared")
    if audit is not None:
        uncovered = [target_sha, *training.manifests]
        for sha in dict.fromkeys(s for s in uncovered if s not in audit.manifests):
            what = target.path if sha == target_sha else f"training manifest {sha[:12]}..."
            notes.append(f"{audit.path} does not cover {what}: its pairs not compared")
    exact: set[str] = set()
    linked: set[str] = set()
    runs = []
    for k, per in sorted(training.runs.items()):
        shared: set[str] = set()
        for sha, train_ids in per.items():
            manifest = training.manifests.get(sha)
            if manifest is not None:
                seen = set().union(*_hashes(manifest, train_ids).values())
                hits = {i for i, hs in tested.items() if hs & seen}
                exact |= hits
                shared |= hits
            if audit is not None:
                hits = {i for i, _ in audit.links(target_sha, ids, sha, train_ids)}
                linked |= hits
                shared |= hits
        runs.append({"run": k, "shared": len(shared)})
    return {
        "ids": sorted(exact | linked),
        "exact": sorted(exact),
        "audit": sorted(linked),
        "runs": runs,
        "notes": notes,
    }
