"""Training loop of the heads on in-memory data (``TrainData``), independent of the store.

Adam; every training item draws a random cached view per step (its reference takes the
same view); model selection on the **validation** split by SRCC, never on test (with an
empty validation split the last epoch is kept and the result says so); a tqdm bar with the
loss and the validation SRCC; per-epoch curves in ``curves.csv``
(``epoch,train_loss,val_srcc,val_plcc``, for DVC plots); deterministic for a seed on CPU.

The prompt head trains in groups as PromptIQA does: each batch is one group from one
dataset, its labels are augmented together (random scaling, random flipping), and each
member's prompt is the other members; it is evaluated under a prompt of ``prompt_size``
interval-selected train images. Deviation: the reference selects checkpoints on the
test split; here only the validation split is ever evaluated during training.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from tqdm import tqdm

from heads.augment import augment_labels
from heads.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from heads.evaluate import evaluate, make_prompt
from heads.losses import LossConfig, head_loss
from heads.prompt import PromptHead
from heads.registry import build_from_config, get_head, make_config
from heads.traindata import TrainData

CURVE_FIELDS = ("epoch", "train_loss", "val_srcc", "val_plcc")


@dataclass
class FitResult:
    """Outcome of ``fit``.

    Attributes:
        model: the selected model (best validation SRCC, or the last epoch), eval mode.
        config: its config.
        best_epoch: the selected epoch (0-based).
        history: one dict per epoch with the ``CURVE_FIELDS``.
        val_metrics: validation metrics of the selected epoch (empty without validation).
        selection: how the epoch was chosen, in words.
        prompt: the evaluation prompt (prompt head only).
        checkpoint: path of ``model.pt`` when ``out_dir`` was given.
    """

    model: nn.Module
    config: Any
    best_epoch: int
    history: list[dict[str, float]]
    val_metrics: dict[str, float]
    selection: str
    prompt: Tensor | None = None
    checkpoint: Path | None = None
    prompt_ids: list[str] = field(default_factory=list)


@dataclass
class _State:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    best_srcc: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None


def _grouped_step(
    model: nn.Module, data: TrainData, rows: Tensor, st: _State, device: str, loss: LossConfig
) -> Tensor | None:
    if len(rows) < 2:
        return None
    views = torch.randint(data.n_views, (len(rows),), generator=st.generator)
    feats, valid, _ = data.batch(rows, views, device)
    y = augment_labels(data.targets[rows], st.generator).to(device)
    return head_loss(cast(PromptHead, model).forward_group(feats, y, valid), y, loss)


def _plain_step(
    model: nn.Module, data: TrainData, rows: Tensor, st: _State, device: str, loss: LossConfig
) -> Tensor:
    views = torch.randint(data.n_views, (len(rows),), generator=st.generator)
    feats, valid, ref = data.batch(rows, views, device)
    return head_loss(model(feats, valid, ref), data.targets[rows].to(device), loss)


def _train_epoch(
    st: _State, data: TrainData, batch_size: int, device: str, loss: LossConfig
) -> float:
    st.model.train()
    grouped = getattr(st.model, "grouped", False)
    total, count = 0.0, 0
    for rows in torch.randperm(len(data), generator=st.generator).split(batch_size):
        if grouped:
            value = _grouped_step(st.model, data, rows, st, device, loss)
        else:
            value = _plain_step(st.model, data, rows, st, device, loss)
        if value is None:
            continue
        st.optimizer.zero_grad()
        value.backward()
        st.optimizer.step()
        total, count = total + value.item() * len(rows), count + len(rows)
    return total / max(count, 1)


def _validate(
    model: nn.Module, train: TrainData, val: TrainData, device: str, n: int
) -> dict[str, float]:
    if len(val) < 2:
        return {}
    prompt = make_prompt(model, train, n, device)[0] if getattr(model, "grouped", False) else None
    return evaluate(model, val, prompt=prompt, device=device)["metrics"]


def _write_curves(path: Path, history: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def _resolve_config(head: str, config: Any, train: TrainData) -> Any:
    entry = get_head(head)
    if config is None or isinstance(config, Mapping):
        return make_config(head, train.feature_specs, **dict(config or {}))
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"{head}: config must be a {entry.config_cls.__name__} or a dict")
    return config


def _check_data(head: str, train: TrainData, val: TrainData) -> None:
    entry = get_head(head)
    for part in (train, val):
        if entry.needs_ref and part.ref_features is None and len(part):
            raise ValueError(f"{head} is full-reference: {part.name} has no reference features")
    if len(train) < 2:
        raise ValueError(f"{head}: need at least 2 training rows, got {len(train)}")


def _resume(st: _State, path: Path, fingerprint: str) -> int:
    ckpt = read_checkpoint(path, store_fingerprint=fingerprint)
    st.model.load_state_dict(ckpt["model"])
    if ckpt["optimizer"] is None:
        raise CheckpointError(f"{path}: has no optimizer state to resume from")
    st.optimizer.load_state_dict(ckpt["optimizer"])
    extra = ckpt["extra"]
    st.generator.set_state(extra["generator"])
    torch.set_rng_state(extra["torch_rng"])
    st.history = [dict(r) for r in extra["history"]]
    st.best_srcc, st.best_epoch = extra["best_srcc"], extra["best_epoch"]
    best_path = path.with_name("model.pt")
    st.best_state = read_checkpoint(best_path)["model"] if best_path.is_file() else None
    return ckpt["epoch"] + 1


def fit(
    head_name: str,
    config: Any,
    train: TrainData,
    val: TrainData,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str = "cpu",
    out_dir: str | Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    loss: LossConfig | None = None,
    store_fingerprint: str = "",
    label_norm: Mapping[str, Any] | None = None,
    prompt_size: int = 10,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train head ``head_name`` on ``train``; select the epoch by SRCC on ``val``.

    Args:
        head_name: a key of ``heads.registry.HEADS``.
        config: the head's config, a dict of overrides, or None for the defaults.
        train: training rows. val: validation rows (may be empty). No test data is taken.
        epochs: total epochs (a resumed run continues up to this number).
        batch_size: rows per step (the group size for the prompt head).
        lr: Adam learning rate.
        seed: seeds the model init, shuffling, view draws and label augmentation.
        device: torch device.
        out_dir: where ``model.pt`` (selected epoch), ``last.pt`` and ``curves.csv`` go.
        on_epoch: called with (epoch, curve row) after every epoch.
        loss: loss terms; the head's registry default when None.
        store_fingerprint: recorded in checkpoints; checked on resume.
        label_norm: how targets were normalised, recorded in checkpoints.
        prompt_size: prompt images at evaluation (prompt head).
        resume: continue from ``out_dir/last.pt``.
        record: what else checkpoints keep under ``extra`` (e.g. the store's fingerprint
            fields and extraction settings, so ``iqa-score`` can rebuild the backbone).
    """
    _check_data(head_name, train, val)
    cfg = _resolve_config(head_name, config, train)
    torch.manual_seed(seed)
    model = build_from_config(head_name, cfg).to(device)
    st = _State(
        model, torch.optim.Adam(model.parameters(), lr=lr), torch.Generator().manual_seed(seed)
    )
    out = Path(out_dir) if out_dir is not None else None
    start = _resume(st, out / "last.pt", store_fingerprint) if resume and out else 0
    save = _saver(out, head_name, train, store_fingerprint, label_norm, record)
    loss_cfg = loss or get_head(head_name).loss
    bar = tqdm(range(start, epochs), desc=head_name, disable=None, leave=False)
    for epoch in bar:
        row = _one_epoch(st, train, val, epoch, batch_size, device, loss_cfg, prompt_size)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_srcc=f"{row['val_srcc']:.4f}")
        if save is not None and out is not None:
            if st.best_epoch == epoch:
                save("model.pt", st, epoch)
            _write_curves(out / "curves.csv", st.history)
            save("last.pt", st, epoch, full=True)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return _finish(st, head_name, cfg, train, val, device, prompt_size, out)


def _one_epoch(
    st: _State,
    train: TrainData,
    val: TrainData,
    epoch: int,
    batch_size: int,
    device: str,
    loss: LossConfig,
    prompt_size: int,
) -> dict[str, float]:
    train_loss = _train_epoch(st, train, batch_size, device, loss)
    metrics = _validate(st.model, train, val, device, prompt_size)
    srcc = metrics.get("srcc", math.nan)
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_srcc": srcc,
        "val_plcc": metrics.get("plcc", math.nan),
    }
    st.history.append(row)
    if not metrics or srcc > st.best_srcc:
        st.best_srcc = srcc if metrics else -math.inf
        st.best_epoch = epoch
        st.best_state = {k: v.detach().clone() for k, v in st.model.state_dict().items()}
    return row


def _saver(
    out: Path | None,
    head: str,
    train: TrainData,
    fingerprint: str,
    label_norm: Any,
    record: Mapping[str, Any] | None,
) -> Callable[..., None] | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)

    def save(name: str, st: _State, epoch: int, full: bool = False) -> None:
        extra: dict[str, Any] = {
            **(record or {}),
            "best_epoch": st.best_epoch,
            "best_srcc": st.best_srcc,
        }
        if full:
            extra |= {
                "generator": st.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": st.history,
            }
        save_checkpoint(
            out / name,
            st.model,
            head=head,
            feature_specs=train.feature_specs,
            store_fingerprint=fingerprint,
            epoch=epoch,
            label_norm=label_norm,
            optimizer=st.optimizer,
            extra=extra,
        )

    return save


def _finish(
    st: _State,
    head: str,
    cfg: Any,
    train: TrainData,
    val: TrainData,
    device: str,
    prompt_size: int,
    out: Path | None,
) -> FitResult:
    if st.best_state is not None:
        st.model.load_state_dict(st.best_state)
    st.model.eval()
    if len(val) >= 2:
        selection = f"epoch {st.best_epoch} by validation SRCC ({st.best_srcc:.4f})"
    else:
        selection = f"last epoch ({st.best_epoch}): empty validation split, no model selection"
    prompt: Tensor | None = None
    prompt_ids: list[str] = []
    if getattr(st.model, "grouped", False):
        prompt, prompt_ids = make_prompt(st.model, train, prompt_size, device)
    metrics = _validate(st.model, train, val, device, prompt_size)
    ckpt = out / "model.pt" if out is not None else None
    return FitResult(
        st.model, cfg, st.best_epoch, st.history, metrics, selection, prompt, ckpt, prompt_ids
    )
