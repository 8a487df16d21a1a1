"""Cross-dataset tests: a head trained on one dataset, tested on another dataset's store.

The protocol of DP-IQA Table V and PromptIQA's generalisation tests: every repeat of a
training run (``OUT/run_NN/model.pt``) predicts the images of the other dataset (all of
them, or one part of a split), and the usual metrics compare predictions with that
dataset's own labels. Orientation is handled on both sides: a head predicts quality
(higher is better, whatever its training labels were), and the target labels are mapped
with their own manifest (DMOS reversed), so SRCC is positive for a head that generalises.
The target store must have the head's fingerprint (same backbone and preprocessing).
``metrics.json`` also records the training run's backbone and settings, so ``iqa-eval``
reads the folder as a ``cross_dataset`` row beside the published cross-dataset figures.
A prompted head predicts under a prompt of the target dataset's train images when a split
is given (PromptIQA adapts to a dataset through its prompt), else under the prompt it was
evaluated with in training.

Content shared with the head's training images (:mod:`heads.train_overlap`: equal file
hashes, and the pairs of a content audit) is reported under ``overlap``; with
``exclude_overlap`` those tested images are left out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cache.manifest import file_sha256, read_manifest, read_split
from cache.outputs import atomic_write_text, check_output_dir, prepare_output_dir
from cache.overlap import read_audit
from cache.store import open_store
from heads import protocols
from heads.checkpoint import load_head
from heads.data import denormalise, label_norm_of, load_part
from heads.evaluate import evaluate, make_prompt
from heads.metrics import summarize
from heads.train_overlap import shared_with_training, training_set

KIND = "cross-test"


def _checkpoints(run: Path) -> list[Path]:
    found = sorted(run.glob("run_*/model.pt")) or ([run / "model.pt"] if (run / "model.pt")
                                                    .is_file() else [])  # fmt: skip
    if not found:
        raise FileNotFoundError(f"{run}: no run_NN/model.pt (is it an iqa-train-head --out?)")
    return found


def cross_test(
    run: str | Path, features: str, manifest_path: str, out: str | Path, *,
    split: str | None = None, part: str = "test", device: str = "cpu",
    audit: str | None = None, exclude_overlap: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Test every repeat of ``run`` on the store ``features`` of another dataset.

    Args:
        run: an ``iqa-train-head`` output folder.
        features: the other dataset's store (the head's fingerprint).
        manifest_path: its manifest.
        split: a split file of it: test on ``part`` (and prompt from its train part);
            None tests on every image.
        part: ``test``, ``val`` or ``train``.
        audit: a content audit covering this manifest and the training manifests.
        exclude_overlap: leave out the tested images that share content with the
            training images (by file hash, and by ``audit`` when given).

    Returns:
        What ``OUT/metrics.json`` holds.
    """
    check_output_dir(out, KIND)
    manifest = read_manifest(manifest_path)
    chosen = read_split(split) if split else None
    if chosen is not None:
        chosen.check_against(manifest, where=split or "split")
    ids = list(chosen.part(part)) if chosen else manifest.image_ids
    ckpts = _checkpoints(Path(run))
    audited = read_audit(audit) if audit else None
    overlap = shared_with_training(training_set(run), manifest, ids, audited)
    overlap["excluded"] = exclude_overlap
    if exclude_overlap:
        ids = [i for i in ids if i not in set(overlap["ids"])]
    store = open_store(features, verify=True)
    norm = label_norm_of(manifest)
    records, rows = [], []
    for k, path in enumerate(ckpts):
        model, ckpt = load_head(path, store_fingerprint=store.fingerprint)
        ref = store if protocols.needs_ref(model) else None
        data, _ = load_part(store, manifest, ids, part=part, ref_store=ref, norm=norm)
        prompt = _prompt(model, ckpt, store, manifest, chosen, ref, device)
        ev = evaluate(model.to(device), data, prompt=prompt, device=device)
        records.append({"run": k, "checkpoint": str(path), "test": ev["metrics"]})
        rows += [{"run": k, "id": i, "target": float(t), "prediction": float(p),
                  "predicted_score": denormalise(float(p), norm)}
                 for i, t, p in zip(ev["ids"], ev["target"], ev["pred"], strict=True)]  # fmt: skip
    trained = json.loads((Path(run) / "metrics.json").read_text()) if (
        Path(run) / "metrics.json").is_file() else {}  # fmt: skip
    result = {
        "head": ckpt["head"], "trained_on": trained.get("dataset"),
        "tested_on": manifest.info.name, "features": features, "manifest": manifest_path,
        "manifest_sha256": file_sha256(manifest_path),
        "score_kind": manifest.info.score_kind,
        "split": split, "part": part if split else "all", "n_images": len(ids),
        "label_norm": norm, "runs": records, "overlap": overlap,
        "summary": {"test": summarize([r["test"] for r in records if r["test"]])},
        **_trained_record(Path(run), trained),
    }  # fmt: skip
    _write(Path(out), result, rows)
    return result


def _trained_record(run: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """What a report needs of the training run: backbone and settings (DP-IQA Table V)."""
    return {
        "protocol": "cross_dataset",
        "trained_run": str(run),
        "backbone": trained.get("backbone"),
        "head_config": trained.get("head_config") or {},
        "training": trained.get("training") or {},
    }


def _prompt(model: Any, ckpt: dict[str, Any], store: Any, manifest: Any, split: Any,
            ref: Any, device: str) -> Any:  # fmt: skip
    if not protocols.is_grouped(model):
        return None
    if split is not None:
        train, _ = load_part(store, manifest, list(split.train), part="train", ref_store=ref)
        return make_prompt(model, train, 10, device)[0]
    recorded = (ckpt.get("extra") or {}).get("prompts") or []
    if not recorded:
        raise ValueError("a prompted head needs --split (prompts from the target's train "
                         "part), or a checkpoint that recorded its prompt")  # fmt: skip
    return recorded[0]["embedding"].to(device)


def _write(out: Path, result: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    folder = prepare_output_dir(out, KIND)
    text = json.dumps(result, indent=1, sort_keys=True) + "\n"
    atomic_write_text(folder / "metrics.json", text)
    with open(folder / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        fields = ["run", "id", "target", "prediction", "predicted_score"]
        writer = csv.DictWriter(fh, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
