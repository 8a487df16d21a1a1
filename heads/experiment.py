"""One ``iqa-train-head`` experiment: train a head on one or more splits and report.

Everything is checked before anything is written (stores, manifests, split files against
their manifest, the head against the store's arrays, the training settings), so a
rejected request leaves nothing behind. Then every run (one split file and seed) trains
on the split's train part, is selected on its val part, and is evaluated once on val and
test. The output always has the same tree and ``metrics.json`` schema, whatever the
number of runs::

    OUT/.iqa-output.json             {"kind": "train-run"}
    OUT/metrics.json                 head, dataset, backbone, store, manifest, label_norm,
                                     training settings, "runs": [...], "summary"
    OUT/predictions.csv              run,id,part,distortion,score,target,prediction,
                                     predicted_score (every run)
    OUT/run_NN/model.pt, last.pt, curves.csv, predictions.csv, metrics.json

``summary`` holds the median / mean / std over runs (``heads.metrics.summarize``; papers
report the median over repeats). ``score``/``predicted_score`` are on the dataset's own
scale and orientation; ``target``/``prediction`` are normalised with the run's label map
(``label_norm``, whose ``flip`` says whether a DMOS set was reversed: higher is better for
every head, the dataset's own orientation for the prompt head by default, see
``heads.split_data``). ``training`` holds the settings the head really trained with (after its
``adjust_training``), ``label_orientation`` and ``target_norm`` how scores became targets,
and ``preset`` the params file's preset and paper table, which reports match on.

Several datasets (``Source`` each: store, manifest, splits) train one model together
(PromptIQA's mixed training): run ``k`` uses the ``k``-th split of every dataset, and
metrics, predictions and summaries are kept per dataset.

``metrics.json`` records the training settings as run: a one-dataset run takes its
dataset's entry of ``milestones_by_dataset`` (a mixed run keeps ``milestones``), and
``loss`` names the loss trained with and its term weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cache.kernels import cpu_kernels
from cache.outputs import check_output_dir, prepare_output_dir
from cache.store import FeatureStore, open_store
from heads import protocols
from heads.checkpoint import update_extra
from heads.evaluate import evaluate
from heads.optim import TrainConfig
from heads.registry import head_class, make_config
from heads.run_record import header, store_record, summary, write_json, write_predictions
from heads.split_data import SplitData, StoreDataError, denormalise, load_split
from heads.store_reader import select_rows
from heads.train import (
    FitOptions,
    FitResult,
    TrainError,
    adjusted_training,
    check_orientation,
    check_trainable,
    fit,
)
from heads.workers import in_processes
from iqadata.manifest import PARTS, Manifest, Split, file_sha256, read_manifest, read_split
from iqadata.overlap import read_audit


@dataclass(frozen=True)
class Source:
    """One dataset of an experiment: its feature store, manifest and split files."""

    features: str
    manifest: str
    splits: tuple[str, ...]
    ref_features: str | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything ``iqa-train-head`` was asked to do.

    Attributes:
        sources: one per dataset (several: mixed training of one model).
        seeds: runs per split file, with seeds ``seed, seed + 1, ...``.
        preset: ``{"name", "paper"}`` of the params file the settings came from (recorded,
            so a report puts the run in its own paper table); empty when none.
        exclude_overlap: a content audit (``iqa-data audit``): the images it pairs with
            content outside their group are left out of every train and val part.
        cpu_kernels: ``portable`` (the same bits on every x86-64 CPU) or ``native``
            (``cache.kernels``); recorded in ``metrics.json``.
        jobs: runs trained at once, each in its own process with this process's number of
            torch threads; the outputs are the same bytes as one at a time.
    """

    head: str
    sources: tuple[Source, ...]
    out: str
    training: TrainConfig = field(default_factory=TrainConfig)
    seeds: int = 1
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    written_only: bool = False
    preload: bool | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: dict[str, str] = field(default_factory=dict)
    exclude_overlap: str | None = None
    cpu_kernels: str = "portable"
    jobs: int = 1


@dataclass
class _Dataset:
    """A source, opened and checked (``left_out``: per split, images excluded by an audit)."""

    source: Source
    store: FeatureStore
    ref_store: FeatureStore | None
    manifest: Manifest
    splits: list[Split]
    left_out: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.store.provenance.get("dataset") or self.manifest.info.name)


def plan_runs(spec: ExperimentSpec) -> list[tuple[int, int]]:
    """(split index, seed) of every run: each split file times ``seeds`` seeds."""
    counts = {len(s.splits) for s in spec.sources}
    if not spec.sources or 0 in counts:
        raise TrainError("give at least one split file")
    if len(counts) > 1:
        raise TrainError(f"mixed training needs as many split files per dataset, got {counts}")
    if spec.seeds < 1:
        raise TrainError(f"seeds must be >= 1, got {spec.seeds}")
    return [(k, spec.seed + s) for k in range(counts.pop()) for s in range(spec.seeds)]


def _open(spec: ExperimentSpec, source: Source) -> _Dataset:
    manifest = read_manifest(source.manifest)
    splits = [read_split(p) for p in source.splits]
    for path, split in zip(source.splits, splits, strict=True):
        split.check_against(manifest, where=path)  # its hash, its ids, no content leak
    store = open_store(source.features, verify=True)
    ref_store = None
    if protocols.needs_ref(head_class(spec.head)):
        ref_store = open_store(source.ref_features, verify=True) if source.ref_features else store
    return _Dataset(source, store, ref_store, manifest, splits)


def prepare(spec: ExperimentSpec) -> list[_Dataset]:
    """Open and check everything a run needs; nothing is written.

    Raises:
        The project's errors naming what is wrong (stores, manifests, splits, the head).
    """
    plan_runs(spec)
    check_orientation(spec.head, spec.training)
    check_output_dir(spec.out, "train-run")
    datasets = _open_all(spec)
    specs = {n: a.shape for n, a in datasets[0].store.arrays.items()}
    for d in datasets[1:]:
        other = {n: a.shape for n, a in d.store.arrays.items()}
        if other != specs:
            raise TrainError(f"mixed training needs stores of one layout: {specs} vs {other}")
    make_config(spec.head, specs, **spec.overrides)  # the head fits the store's arrays
    if protocols.needs_ref(head_class(spec.head)):
        for d in datasets:
            if not d.manifest.is_fr:
                raise TrainError(f"{spec.head} is full-reference but {d.source.manifest} lists "
                                 "no reference images")
    for d in datasets:
        _check_rows(spec, d)
    return datasets


def _open_all(spec: ExperimentSpec) -> list[_Dataset]:
    """Every source opened, with the audit's images left out of train and val."""
    datasets = [_open(spec, s) for s in spec.sources]
    if spec.exclude_overlap:
        audit = read_audit(spec.exclude_overlap)
        for d in datasets:
            _exclude(d, audit.excluded(file_sha256(d.source.manifest), d.source.manifest))
    return datasets


def _exclude(d: _Dataset, ids: frozenset[str]) -> None:
    """Leave ``ids`` out of the train and val parts of every split (test keeps them)."""
    kept = []
    for split in d.splits:
        train = tuple(i for i in split.train if i not in ids)
        val = tuple(i for i in split.val if i not in ids)
        d.left_out.append(len(split.train) + len(split.val) - len(train) - len(val))
        kept.append(replace(split, train=train, val=val))
    d.splits = kept


def _check_rows(spec: ExperimentSpec, d: _Dataset) -> None:
    """Every split's rows exist (and are written, or ``written_only``) and can train."""
    by_id = d.manifest.by_id()
    grouped = protocols.is_grouped(head_class(spec.head))
    need = spec.training.batch_size if grouped else 2
    for path, split in zip(d.source.splits, d.splits, strict=True):
        for part in PARTS:
            try:
                sel = select_rows(d.store, split.part(part), ref_store=d.ref_store,
                                  ref_of=lambda i: by_id[i].ref, written_only=spec.written_only,
                                  what=part)
            except KeyError as err:
                raise StoreDataError(f"{path} ({part}): {err.args[0]}") from None
            if part == "train" and len(sel) < need:
                raise TrainError(
                    f"{path}: the train part has {len(sel)} usable images, too few to train "
                    f"{spec.head} (need {need}); use a larger split or a smaller batch size"
                )


def _load(spec: ExperimentSpec, d: _Dataset, k: int) -> SplitData:
    return load_split(d.store, d.manifest, d.splits[k], ref_store=d.ref_store,
                      written_only=spec.written_only, preload=spec.preload,
                      label_norm=spec.training.label_norm,
                      orientation=spec.training.label_orientation)


def _predictions(
    res: FitResult, data: SplitData, d: _Dataset, i: int, run: int, device: str
) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    metrics, rows = {}, []
    by_id = d.manifest.by_id()
    for part in (data.train, data.val, data.test):
        ev = evaluate(res.model, part, prompt=res.prompts[i], device=device)
        metrics[part.name] = ev["metrics"]
        for image, target, pred in zip(ev["ids"], ev["target"], ev["pred"], strict=True):
            rows.append({
                "run": run, "dataset": d.name, "id": image, "part": part.name,
                "distortion": by_id[image].distortion, "score": by_id[image].score,
                "target": float(target), "prediction": float(pred),
                "predicted_score": denormalise(float(pred), data.label_norm),
            })
    return metrics, rows


def _one_run(
    spec: ExperimentSpec, datasets: list[_Dataset], k: int, seed: int, run: int, run_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parts = [_load(spec, d, k) for d in datasets]
    check_trainable(spec.head, [p.train for p in parts], [p.val for p in parts], spec.training)
    first = datasets[0]
    res = fit(
        spec.head, spec.overrides, [p.train for p in parts], [p.val for p in parts],
        training=spec.training, seed=seed, device=spec.device,
        options=FitOptions(
            out_dir=run_dir, store_fingerprint=parts[0].fingerprint,
            label_norm=parts[0].label_norm,
            resume=spec.resume and (run_dir / "last.pt").is_file(),
            record=store_record(first.store), desc=f"{spec.head} run {run}",
        ),
    )
    per_dataset, preds = {}, []
    for i, (d, data) in enumerate(zip(datasets, parts, strict=True)):
        metrics, rows = _predictions(res, data, d, i, run, spec.device)
        per_dataset[d.name] = {**metrics, "dropped_unwritten": data.dropped,
                               "split": d.source.splits[k], "label_norm": data.label_norm,
                               "excluded_overlap": d.left_out[k] if d.left_out else 0}
        preds += rows
    _record_prompts(res, datasets, parts, run_dir)
    record = {
        "run": run, "dir": run_dir.name, "split": first.source.splits[k], "seed": seed,
        "best_epoch": res.best_epoch, "epochs_run": len(res.history),
        "selection": res.selection, "prompt_ids": res.prompt_ids[0] if res.prompt_ids else [],
        "dropped_unwritten": parts[0].n_dropped,
        "excluded_overlap": per_dataset[first.name]["excluded_overlap"],
        **{p: per_dataset[first.name][p] for p in ("train", "val", "test")},
    }
    if len(datasets) > 1:
        record["datasets"] = per_dataset
    write_json(run_dir / "metrics.json", record)
    write_predictions(run_dir / "predictions.csv", preds)
    return record, preds


def _record_prompts(
    res: FitResult, datasets: list[_Dataset], parts: list[SplitData], run_dir: Path
) -> None:
    """Keep each evaluation prompt (ids, embedding, the dataset's label map) in the
    selected checkpoint."""
    if res.prompt is None or not (run_dir / "model.pt").is_file():
        return
    prompts = [
        {"dataset": d.name, "ids": ids, "embedding": p.detach().cpu(), "label_norm": s.label_norm}
        for d, s, ids, p in zip(datasets, parts, res.prompt_ids, res.prompts, strict=True)
        if p is not None
    ]
    update_extra(run_dir / "model.pt", prompts=prompts)


def _worker_run(
    spec: ExperimentSpec, k: int, seed: int, run: int, run_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One run in a worker process (``heads.workers``): it opens the stores itself."""
    with cpu_kernels(spec.cpu_kernels, spec.device):
        return _one_run(spec, _open_all(spec), k, seed, run, run_dir)


def _for_datasets(spec: ExperimentSpec, datasets: list[_Dataset]) -> ExperimentSpec:
    """A one-dataset run takes its dataset's milestones (``milestones_by_dataset``)."""
    if len(datasets) != 1:
        return spec
    return dataclasses.replace(spec, training=spec.training.for_dataset(datasets[0].name))


def run_experiment(spec: ExperimentSpec) -> dict[str, Any]:
    """Check, train and evaluate every planned run; returns what ``OUT/metrics.json`` holds."""
    datasets = prepare(spec)
    specs = {n: a.shape for n, a in datasets[0].store.arrays.items()}
    config = make_config(spec.head, specs, **spec.overrides)
    spec = replace(spec, training=adjusted_training(spec.head, config, spec.training))
    spec = _for_datasets(spec, datasets)
    runs = plan_runs(spec)
    out = prepare_output_dir(spec.out, "train-run")
    result = header(spec, datasets)
    for run in range(len(runs)):
        (out / f"run_{run:02d}").mkdir(parents=True, exist_ok=True)
    with cpu_kernels(spec.cpu_kernels, spec.device) as used:
        if spec.jobs > 1 and len(runs) > 1:
            calls = [(spec, k, seed, run, out / f"run_{run:02d}")
                     for run, (k, seed) in enumerate(runs)]
            done = in_processes(_worker_run, calls, jobs=spec.jobs, head=spec.head)
        else:
            done = [_one_run(spec, datasets, k, seed, run, out / f"run_{run:02d}")
                    for run, (k, seed) in enumerate(runs)]
    records = [record for record, _ in done]
    all_preds = [row for _, preds in done for row in preds]
    result["cpu_kernels"] = used
    result["runs"] = records
    result["summary"] = summary(records, datasets)
    write_predictions(out / "predictions.csv", all_preds)
    write_json(out / "metrics.json", result)
    return result
