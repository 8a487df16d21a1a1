"""Tests of a trained head on a store: another dataset's, or its own under a probed prompt.

The protocol of DP-IQA Table V and PromptIQA's generalisation tests: every repeat of a
training run (``OUT/run_NN/model.pt``) predicts the images of a dataset (all of them, or
one part of a split), and the usual metrics compare predictions with that dataset's own
labels. Targets are mapped as the head was trained: a plain or full-reference head
predicts quality (higher is better), so the labels are mapped higher-is-better (DMOS
reversed) and SRCC is positive for a head that generalises; a prompted head predicts in
its prompt's orientation, so the labels keep the orientation and normalisation its
checkpoint records (``training.label_orientation``, ``training.label_norm``; checkpoints
from before those fields: higher-is-better, the recorded ``label_norm`` method). The
store must have the head's fingerprint (same backbone and preprocessing).

A prompted head predicts under a prompt of the tested dataset's train images when a split
is given (PromptIQA adapts to a dataset through its prompt), else under the prompt its
checkpoint recorded for that dataset. With a split, ``probe`` alters that prompt as in
PromptIQA's Table 5 (``heads.evaluate.PROBES``), at test time only: a trained model is
probed, training and model selection never see it. Split files are given once for every
repeat or one per repeat; a repeat tested on its own dataset with another split than the
one it trained on (whose test part may hold its training images) gets a warning.
``metrics.json`` also records the training run's backbone and settings, so ``iqa-eval``
reads the folder as a ``cross_dataset`` row beside the published cross-dataset figures.

Content shared with the head's training images (:mod:`heads.train_overlap`: equal file
hashes, and the pairs of a content audit) is reported under ``overlap``; with
``exclude_overlap`` those tested images are left out.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cache.fingerprint import describe_diff, diff_fields
from cache.outputs import atomic_write_text, check_output_dir, prepare_output_dir
from cache.store import FeatureStore, open_store
from heads import protocols
from heads.checkpoint import load_head
from heads.evaluate import IMAGE_PROBES, ProbeError, evaluate, make_prompt
from heads.metrics import summarize
from heads.part_tensors import TrainData
from heads.split_data import denormalise, label_norm_of, load_part
from heads.store_reader import load_arrays, select_rows
from heads.train_overlap import shared_with_training, training_set
from iqadata.manifest import Manifest, Split, file_sha256, read_manifest, read_split
from iqadata.overlap import read_audit

KIND = "cross-test"


@dataclass(frozen=True)
class CrossTestOptions:
    """How ``cross_test`` tests a run.

    Attributes:
        splits: split files of the tested dataset: none (every image), one for every
            repeat, or one per repeat (in repeat order).
        part: the part of each split tested (``test``, ``val`` or ``train``).
        device: torch device.
        probe: ``none`` or a Table 5 probe of the prompt (prompted heads, with a split).
        random_images: a store of random images' features (the ``random_images`` probes).
        seed: seeds the probes' random draws.
        audit: a content audit covering the tested manifest and the training manifests.
        exclude_overlap: leave out the tested images that share content with the
            training images (by file hash, and by ``audit`` when given).
    """

    splits: tuple[str, ...] = ()
    part: str = "test"
    device: str = "cpu"
    probe: str = "none"
    random_images: str | None = None
    seed: int = 0
    audit: str | None = None
    exclude_overlap: bool = False


def _checkpoints(run: Path) -> list[Path]:
    found = sorted(run.glob("run_*/model.pt")) or (
        [run / "model.pt"] if (run / "model.pt").is_file() else []
    )
    if not found:
        raise FileNotFoundError(f"{run}: no run_NN/model.pt (is it an iqa-train-head --out?)")
    return found


def _splits_per_repeat(
    opts: CrossTestOptions, manifest: Manifest, repeats: int
) -> list[tuple[str, Split] | None]:
    """The split (path and contents) each repeat is tested on; None: every image."""
    if len(opts.splits) > 1 and len(opts.splits) < repeats:
        raise ValueError(
            f"{repeats} repeats but {len(opts.splits)} split files: give one "
            "split for all repeats or one per repeat"
        )
    chosen: list[tuple[str, Split] | None] = []
    for path in opts.splits[: max(repeats, 1)] if len(opts.splits) > 1 else opts.splits:
        split = read_split(path)
        split.check_against(manifest, where=path)
        chosen.append((path, split))
    if not chosen:
        return [None] * repeats
    return chosen if len(chosen) > 1 else chosen * repeats


def cross_test(
    run: str | Path,
    features: str,
    manifest_path: str,
    out: str | Path,
    options: CrossTestOptions | None = None,
) -> dict[str, Any]:
    """Test every repeat of ``run`` on the store ``features`` (see the module docstring).

    Args:
        run: an ``iqa-train-head`` output folder.
        features: the tested dataset's store (the head's fingerprint).
        manifest_path: its manifest.
        options: splits, part, device and prompt probe.

    Returns:
        What ``OUT/metrics.json`` holds.
    """
    opts = options or CrossTestOptions()
    check_output_dir(out, KIND)
    manifest = read_manifest(manifest_path)
    ckpts = _checkpoints(Path(run))
    per_repeat = _splits_per_repeat(opts, manifest, len(ckpts))
    _warn_other_splits(Path(run), manifest.info.name, per_repeat)
    overlap = _overlap(run, manifest, opts, per_repeat)
    target = _Target(open_store(features, verify=True), manifest, opts)
    if opts.exclude_overlap:
        target.excluded = frozenset(overlap["ids"])
    records, rows = [], []
    for k, (path, chosen) in enumerate(zip(ckpts, per_repeat, strict=True)):
        record, preds, ckpt = _test_repeat(target, k, path, chosen)
        records.append(record)
        rows += preds
    result = _result(run, ckpt, manifest, features, manifest_path, opts, records)
    result["overlap"] = overlap
    _write(Path(out), result, rows)
    return result


def _tested_ids(split: Split | None, manifest: Manifest, part: str) -> list[str]:
    return list(split.part(part)) if split else manifest.image_ids


def _overlap(
    run: str | Path, manifest: Manifest, opts: CrossTestOptions,
    per_repeat: list[tuple[str, Split] | None],
) -> dict[str, Any]:
    """Tested images that share content with the run's training images (every repeat)."""
    tested = dict.fromkeys(i for chosen in per_repeat
                           for i in _tested_ids(chosen[1] if chosen else None, manifest,
                                                opts.part))
    audited = read_audit(opts.audit) if opts.audit else None
    overlap = shared_with_training(training_set(run), manifest, list(tested), audited)
    overlap["excluded"] = opts.exclude_overlap
    return overlap


class OtherSplitWarning(UserWarning):
    """A repeat is tested on its own dataset but not on the test part of its own split."""


def _warn_other_splits(run: Path, name: str, per_repeat: list[tuple[str, Split] | None]) -> None:
    """Warn when a repeat meets images it may have trained on (its dataset, another split)."""
    path = run / "metrics.json"
    trained = json.loads(path.read_text()) if path.is_file() else {}
    for k, (rec, chosen) in enumerate(zip(trained.get("runs") or [], per_repeat, strict=False)):
        own = ((rec.get("datasets") or {}).get(name) or {}).get("split") or (
            rec.get("split") if trained.get("dataset") == name else None
        )
        if not own or not Path(own).is_file():
            continue
        if chosen is None or file_sha256(chosen[0]) != file_sha256(own):
            given = chosen[0] if chosen else "every image"
            warnings.warn(
                f"repeat {k} trained on {name} with {own} and is tested on {given}: its test "
                "images may include training images; give the run's own splits",
                OtherSplitWarning,
                stacklevel=2,
            )


@dataclass
class _Target:
    """The tested store and manifest, and the random images once read."""

    store: FeatureStore
    manifest: Manifest
    opts: CrossTestOptions
    random_images: TrainData | None = None
    excluded: frozenset[str] = frozenset()


def _test_repeat(
    t: _Target, k: int, path: Path, chosen: tuple[str, Split] | None
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """One repeat's record, prediction rows and checkpoint."""
    model, ckpt = load_head(path, store_fingerprint=t.store.fingerprint)
    _check_probe(model, t.opts, chosen)
    if t.opts.probe in IMAGE_PROBES and t.random_images is None:
        t.random_images = random_image_features(t.opts.random_images, ckpt)
    split = chosen[1] if chosen else None
    norm = _norm_for(model, ckpt, t.manifest, split)
    ids = [i for i in _tested_ids(split, t.manifest, t.opts.part) if i not in t.excluded]
    ref = t.store if protocols.needs_ref(model) else None
    data, _ = load_part(t.store, t.manifest, ids, part=t.opts.part, ref_store=ref, norm=norm)
    prompt, prompt_ids = _prompt(model, ckpt, t, split, norm)
    ev = evaluate(model.to(t.opts.device), data, prompt=prompt, device=t.opts.device)
    record = {
        "run": k,
        "checkpoint": str(path),
        "split": chosen[0] if chosen else None,
        "n_images": len(data),
        "prompt_ids": prompt_ids,
        "label_norm": norm,
        "test": ev["metrics"],
    }
    rows = [
        {
            "run": k,
            "id": i,
            "target": float(y),
            "prediction": float(p),
            "predicted_score": denormalise(float(p), norm),
        }
        for i, y, p in zip(ev["ids"], ev["target"], ev["pred"], strict=True)
    ]
    return record, rows, ckpt


def _check_probe(model: Any, opts: CrossTestOptions, chosen: tuple[str, Split] | None) -> None:
    if opts.probe == "none":
        return
    if not protocols.is_grouped(model):
        raise ProbeError(f"--probe {opts.probe} alters a prompt; this head takes none")
    if chosen is None:
        raise ProbeError(
            f"--probe {opts.probe} rebuilds the prompt from a train part: give --split"
        )


def _norm_for(
    model: Any, ckpt: dict[str, Any], manifest: Manifest, split: Split | None
) -> dict[str, Any]:
    """The tested labels' map: as the head was trained (see the module docstring)."""
    if not protocols.is_grouped(model):
        return label_norm_of(manifest)
    training = (ckpt.get("extra") or {}).get("training") or {}
    method = training.get("label_norm") or (ckpt.get("label_norm") or {}).get("method")
    orientation = training.get("label_orientation", "higher_better")
    if split is None or method != "train_minmax":
        return label_norm_of(manifest, orientation=orientation)
    return label_norm_of(manifest, "train_minmax", split.train, orientation)


def random_image_features(path: str | None, ckpt: dict[str, Any]) -> TrainData:
    """Every image of a random-images store, checked against the head's store fields
    (views aside: the identity view is read)."""
    if not path:
        raise ProbeError(
            "the random-images probes need --random-images STORE (features of "
            "random images: iqa-data random-images, then iqa-extract)"
        )
    store = open_store(path, verify=True)
    trained = dict((ckpt.get("extra") or {}).get("store_fields") or {})
    have = {**store.fingerprint_fields, "views": trained.get("views")}
    if trained and diff_fields(trained, have):
        raise ProbeError(
            f"{path}: not features of the head's backbone and preprocessing "
            f"({describe_diff(trained, have)})"
        )
    return _all_rows(store)


def _all_rows(store: FeatureStore) -> TrainData:
    sel = select_rows(store, views=("identity",), what="random images")
    valid = torch.from_numpy(store.valid_size(sel.rows[:, 0]).astype("int64"))
    feats = load_arrays(store, sel.rows)
    return TrainData(feats, torch.zeros(len(sel)), sel.image_ids, valid, name="random images")


def _prompt(
    model: Any, ckpt: dict[str, Any], t: _Target, split: Split | None, norm: dict[str, Any]
) -> tuple[Any, list[str]]:
    if not protocols.is_grouped(model):
        return None, []
    training = (ckpt.get("extra") or {}).get("training") or {}
    if split is not None:
        train, _ = load_part(t.store, t.manifest, list(split.train), part="train", norm=norm)
        return make_prompt(
            model,
            train,
            int(training.get("prompt_size", 10)),
            t.opts.device,
            select=str(training.get("prompt_select", "interval")),
            probe=t.opts.probe,
            seed=t.opts.seed,
            random_images=t.random_images,
        )
    recorded = _recorded_prompt(ckpt, t.manifest.info.name)
    return recorded["embedding"].to(t.opts.device), list(recorded.get("ids", []))


def _recorded_prompt(ckpt: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The prompt the checkpoint recorded for ``dataset`` (or its only one)."""
    recorded = (ckpt.get("extra") or {}).get("prompts") or []
    mine = [p for p in recorded if p.get("dataset") == dataset] or (
        recorded if len(recorded) == 1 else []
    )
    if not mine:
        names = ", ".join(str(p.get("dataset")) for p in recorded) or "none"
        raise ValueError(
            f"a prompted head needs --split (prompts from the tested dataset's "
            f"train part), or a recorded prompt of {dataset!r} (recorded: "
            f"{names})"
        )
    return dict(mine[0])


def _result(
    run: str | Path,
    ckpt: dict[str, Any],
    manifest: Manifest,
    features: str,
    manifest_path: str,
    opts: CrossTestOptions,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    trained = (
        json.loads((Path(run) / "metrics.json").read_text())
        if (Path(run) / "metrics.json").is_file()
        else {}
    )
    return {
        "head": ckpt["head"],
        "trained_on": trained.get("dataset"),
        "tested_on": manifest.info.name,
        "features": features,
        "manifest": manifest_path,
        "manifest_sha256": file_sha256(manifest_path),
        "score_kind": manifest.info.score_kind,
        "split": opts.splits[0] if len(opts.splits) == 1 else list(opts.splits) or None,
        "part": opts.part if opts.splits else "all",
        "probe": opts.probe,
        "options": asdict(opts),
        "n_images": records[-1]["n_images"],
        "label_norm": records[-1]["label_norm"],
        "runs": records,
        "summary": {"test": summarize([r["test"] for r in records if r["test"]])},
        **_trained_record(Path(run), trained),
    }


def _trained_record(run: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """What a report needs of the training run: backbone and settings (DP-IQA Table V)."""
    return {
        "protocol": "cross_dataset",
        "trained_run": str(run),
        "backbone": trained.get("backbone"),
        "head_config": trained.get("head_config") or {},
        "training": trained.get("training") or {},
    }


def _write(out: Path, result: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    folder = prepare_output_dir(out, KIND)
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    atomic_write_text(folder / "metrics.json", text)
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        fields = ["run", "id", "target", "prediction", "predicted_score"]
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
