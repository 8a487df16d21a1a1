"""DP-IQA distillation: teacher maps into a store, then the student from images + maps.

Follows DP-IQA (arXiv 2405.19996, §III-D, §IV-B, Table I) and ``RomGai/DP-IQA``
``train_student.py``: loss ``MSE(map, teacher map) + MSE(score, ground truth)`` (1 : 1),
Adam 1e-4, batch 24, 30 epochs, ``MultiStepLR`` gamma 0.2 stepped per epoch at the paper's
per-dataset milestones (``pipelines.distill.train``).

1. ``write_teacher_maps`` (``pipelines.distill.teacher_maps``): a trained ``qfd`` head and the SD
   1.5 store it was trained on give a store of the teacher's QFD maps and scores.
2. ``train_student`` (here): the student trains on a split's train part from image files
   (``pipelines.distill.data``) and the stored teacher maps.

Deviations: the checkpoint is selected by validation SRCC (the reference selects on the
test split); test is evaluated once, after training, with the teacher's scores of the same
images beside it; evaluation runs after every epoch and, with ``eval_every``, every that
many steps (the paper's "validation step" 50 / 250); training resumes from ``last.pt``.
The run folder holds ``model.pt`` (selected), ``last.pt``, ``curves.csv``,
``predictions.csv`` and ``metrics.json`` (with the dataset, manifest, split and training
settings, so ``iqa-eval`` puts the student beside the paper's Table IV and XI rows).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cache.console import DataProblem, UsageProblem, progress
from cache.outputs import check_output_dir, prepare_output_dir
from cache.store import FeatureStore, open_store
from extract.weights import load_weights
from iqadata.manifest import Manifest, file_sha256, read_manifest, read_split
from pipelines.distill.data import (
    DistillDataset,
    DistillPart,
    ViewSampler,
    make_loader,
    split_parts,
)
from pipelines.distill.preprocess import student_preprocessing
from pipelines.distill.student import (
    DPIQAStudent,
    StudentConfig,
    StudentLoss,
    build_student,
    read_student,
)
from pipelines.distill.teacher_maps import KIND as MAPS_KIND
from pipelines.distill.teacher_maps import TeacherMapsConfig, write_teacher_maps
from pipelines.distill.train import DistillConfig, StudentRun, metrics_of, milestones_for

OUTPUT_KIND = "dpiqa-student"

__all__ = [
    "DistillConfig",
    "DistillResult",
    "TeacherMapsConfig",
    "train_student",
    "write_teacher_maps",
]


@dataclass
class DistillResult:
    """What ``train_student`` produced."""

    checkpoint: Path
    selection: str
    best_epoch: int
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def torchvision_trunk_key(key: str) -> str | None:
    """Checkpoint key -> trunk key: ``features.`` stripped, the classifier dropped."""
    if key.startswith("classifier."):
        return None
    return key.removeprefix("features.")


def _open_maps(url: str) -> FeatureStore:
    maps = open_store(url)
    if maps.fingerprint_fields.get("kind") != MAPS_KIND:
        raise DataProblem(f"{url} is not a teacher-map store (iqa-distill teacher-maps makes one)")
    report = maps.verify()
    if not report.ok:
        raise DataProblem(f"teacher-map store failed verification: {report.summary()}")
    return maps


def _build(cfg: DistillConfig, maps: FeatureStore) -> tuple[DPIQAStudent, str]:
    channels, side = maps.arrays["map"].shape[0], maps.arrays["map"].shape[-1]
    torch.manual_seed(cfg.seed)
    model = build_student(StudentConfig(cfg.trunk, map_channels=channels, map_size=side))
    init = "random-init"
    if cfg.trunk_checkpoint:
        load_weights(model.trunk, cfg.trunk_checkpoint, key_map=torchvision_trunk_key)
        init = file_sha256(cfg.trunk_checkpoint)
    return model.to(cfg.device), init


def _record(maps: FeatureStore, cfg: DistillConfig, pre: dict, init: str, split: str) -> dict:
    fields = maps.fingerprint_fields
    train = dataclasses.asdict(cfg) | {"split": split, "split_sha256": file_sha256(split)}
    return {
        "preprocessing": pre,
        "label_norm": dict(maps.provenance.get("label_norm") or {}),
        "teacher": {
            "maps_fingerprint": maps.fingerprint,
            "teacher_sha256": fields["teacher"]["sha256"],
            "source_fingerprint": fields["source_fingerprint"],
            "dataset": maps.provenance.get("dataset"),
        },
        "train": train | {"trunk_init": init},
    }


def _start(
    maps: FeatureStore, cfg: DistillConfig, out: Path, split: str, milestones: tuple[int, ...]
) -> StudentRun:
    source_pre = maps.provenance.get("source_fields", {}).get("preprocessing") or {}
    pre = student_preprocessing(source_pre, cfg.input_size)
    model, init = _build(cfg, maps)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), cfg.gamma)
    record = _record(maps, cfg, pre, init, split)
    record["train"]["milestones"] = list(milestones)
    loss = StudentLoss(cfg.map_weight, cfg.score_weight)
    return StudentRun(model, optimizer, scheduler, loss, cfg, record, out)


def _loaders(
    run: StudentRun, parts: dict[str, DistillPart], maps: FeatureStore
) -> tuple[Any, ViewSampler, dict[str, Any]]:
    cfg, pre = run.cfg, run.record["preprocessing"]

    def make(name: str, train: bool) -> tuple[Any, ViewSampler]:
        data = DistillDataset(parts[name], maps, pre, cfg.preload)
        augment = train and cfg.augment
        sampler = ViewSampler(len(data), maps.n_views, shuffle=train, augment=augment,
                              seed=cfg.seed)
        return make_loader(data, cfg.batch_size, sampler, cfg.workers, cfg.device), sampler

    train, sampler = make("train", True)
    evals = {name: make(name, False)[0] for name in ("val", "test") if len(parts[name])}
    return train, sampler, evals


def _write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        fields = ["id", "part", "target", "student", "teacher"]
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _final_metrics(run: StudentRun, evals: dict[str, Any], parts: dict[str, DistillPart]) -> dict:
    """Student and teacher metrics of the selected model on val and test (evaluated once)."""
    run.model.load_state_dict(read_student(run.out / "model.pt")["model"])
    out: dict[str, Any] = {"student": {}, "teacher": {}}
    rows = []
    for name, loader in evals.items():
        got = run.predict(loader)
        out["student"][name] = metrics_of(got["pred"], got["target"])
        out["teacher"][name] = metrics_of(got["teacher"], got["target"])
        for i, target, pred, teacher in zip(
            got["index"], got["target"], got["pred"], got["teacher"], strict=True
        ):
            image = parts[name].ids[int(i)]
            rows.append({"id": image, "part": name, "target": float(target),
                         "student": float(pred), "teacher": float(teacher)})
    _write_predictions(run.out / "predictions.csv", rows)
    return out


def _selection(run: StudentRun, has_val: bool) -> str:
    if has_val:
        return f"epoch {run.best_epoch} by validation SRCC ({run.best_srcc:.4f})"
    return f"last epoch ({run.best_epoch}): empty validation split, no model selection"


def _output(cfg: DistillConfig, maps: FeatureStore, out: Path, resume: bool) -> Path:
    """The run folder, checked (``cache.outputs``) and marked, once the request is sound."""
    if cfg.augment and maps.n_views < 2:
        raise UsageProblem(
            "augment needs flip views in the SD 1.5 store (iqa-extract --views "
            "identity,hflip); this store has only 'identity'"
        )
    check_output_dir(out, OUTPUT_KIND)
    if not resume and (out / "last.pt").exists():
        raise UsageProblem(f"{out} holds a student run; pass --resume or choose a new --out")
    return prepare_output_dir(out, OUTPUT_KIND)


def _train(run: StudentRun, parts: dict[str, DistillPart], maps: FeatureStore, start: int,
           show_progress: bool) -> dict[str, Any]:
    train, sampler, evals = _loaders(run, parts, maps)
    left = max(run.cfg.epochs - start, 0) * len(parts["train"])
    with progress(left, "distill", "img", enabled=show_progress) as bar:
        for epoch in range(start, run.cfg.epochs):
            sampler.set_epoch(epoch)
            losses = run.run_epoch(train, evals.get("val"), epoch, bar)
            run.evaluate(evals.get("val"), epoch, losses)
            run.end_epoch(epoch)
    return _final_metrics(run, evals, parts) | {"selection": _selection(run, "val" in evals)}


def _report_fields(run: StudentRun, manifest: Manifest, manifest_path: str) -> dict[str, Any]:
    """What ``iqa-eval`` needs to put the student beside the papers' rows."""
    return {
        "dataset": manifest.info.name,
        "trunk": run.cfg.trunk,
        "manifest": manifest_path,
        "manifest_sha256": file_sha256(manifest_path),
        "score_kind": manifest.info.score_kind,
        "label_norm": run.record["label_norm"],
        "split": run.record["train"]["split"],
        "training": run.record["train"],
    }


def train_student(
    maps_url: str,
    manifest_path: str | Path,
    split_path: str | Path,
    out: str | Path,
    cfg: DistillConfig | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
) -> DistillResult:
    """Train the student on a split's train part; select by validation SRCC; test once.

    Args:
        maps_url: the teacher-map store (``iqa-distill teacher-maps``); verified first.
        manifest_path: the dataset manifest (images and labels).
        split_path: the split file; use the split the teacher was trained on, so that no
            validation or test image was seen by the teacher.
        out: the run folder (new, empty, or an earlier student run to resume).
        cfg: the training settings (defaults: the paper's preset).
        resume: continue from ``out/last.pt``.
        show_progress: print progress (``cache.console.progress``).
    """
    cfg = cfg or DistillConfig()
    maps = _open_maps(maps_url)
    manifest = read_manifest(manifest_path)
    parts = split_parts(maps, manifest, read_split(split_path))
    folder = _output(cfg, maps, Path(out), resume)
    run = _start(maps, cfg, folder, str(split_path), milestones_for(cfg, manifest.info.name))
    start = run.resume() if resume and (folder / "last.pt").exists() else 0
    metrics = _train(run, parts, maps, start, show_progress)
    metrics |= {
        "best_epoch": run.best_epoch,
        "milestones": run.record["train"]["milestones"],
        "dropped": {k: p.dropped for k, p in parts.items()},
        "maps_fingerprint": maps.fingerprint,
        **_report_fields(run, manifest, str(manifest_path)),
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return DistillResult(
        folder / "model.pt", metrics["selection"], run.best_epoch, metrics, run.history
    )
