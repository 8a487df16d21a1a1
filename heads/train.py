"""Training loop of the heads on in-memory data (``TrainData``), independent of the store.

Adam with the head's training settings (``heads.optim.TrainConfig``: weight decay and a
per-epoch schedule); every training item draws a random cached view per step (its
reference takes the same view); model selection on the **validation** part by SRCC,
never on test. Without a validation part the run trains a fixed number of epochs and
keeps the last one, and says so. Optional early stopping on validation (``patience``).
Per-epoch curves go to ``curves.csv`` (``epoch,train_loss,val_srcc,val_plcc,lr``, for
DVC plots); progress shows on a terminal as a bar and in logs as a line every few
seconds; deterministic for a seed on CPU.

Heads are driven through ``heads.protocols`` by their declared kind. Grouped heads
(PromptIQA) train as the reference does: each group holds ``batch_size`` images of one
dataset, the last incomplete group of each dataset is dropped, labels are augmented per
group (random scaling and flipping, ``scale_p``/``flip_p``/``scale_mode``), each member's
prompt is the rest of its group, and ``groups_per_step`` groups make one optimiser step.
A head class may declare ``adjust_training(config, training)``: the training its config
really gets (PromptIQA's "w/o prompt" turns label augmentation off); checkpoints record
the adjusted settings.

Several training sets (one per dataset, e.g. PromptIQA's mixed training) may be given:
each batch or group comes from one of them, validation metrics are kept per dataset and
the epoch is selected on the sum of their validation SRCCs. Deviation from the
references: they select checkpoints on the test split; here only validation is used.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cache.console import UsageProblem, progress
from heads import protocols
from heads.augment import augment_labels
from heads.checkpoint import CheckpointError, TrainedOn, read_checkpoint, save_checkpoint
from heads.evaluate import evaluate, prompt_for
from heads.losses import LOSSES, LossConfig, head_loss
from heads.optim import TrainConfig, make_optimizer, make_scheduler
from heads.part_tensors import TrainData
from heads.registry import build_from_config, head_class, make_config

CURVE_FIELDS = ("epoch", "train_loss", "val_srcc", "val_plcc", "lr")


class TrainError(ValueError):
    """The data cannot train this head as asked (too few rows, missing references)."""


class OrientationError(TrainError, UsageProblem):
    """A head that predicts quality was asked to train on DMOS kept lower-is-better."""


@dataclass
class FitResult:
    """Outcome of ``fit``.

    Attributes:
        model: the selected model (best validation SRCC, or the last epoch), eval mode.
        config: its config.
        best_epoch: the selected epoch (0-based).
        history: one dict per epoch with the ``CURVE_FIELDS``.
        val_metrics: validation metrics of the selected epoch per training set (empty
            dicts without validation).
        selection: how the epoch was chosen, in words.
        prompts: the evaluation prompt per training set (grouped heads), else Nones.
        prompt_ids: the image ids of each prompt.
        checkpoint: path of ``model.pt`` when ``out_dir`` was given.
        stopped_early: training ended before ``epochs`` (early stopping).
    """

    model: nn.Module
    config: Any
    best_epoch: int
    history: list[dict[str, float]]
    val_metrics: list[dict[str, float]]
    selection: str
    prompts: list[Tensor | None] = field(default_factory=list)
    prompt_ids: list[list[str]] = field(default_factory=list)
    checkpoint: Path | None = None
    stopped_early: bool = False

    @property
    def prompt(self) -> Tensor | None:
        """The prompt of the first (often only) training set."""
        return self.prompts[0] if self.prompts else None


@dataclass(frozen=True)
class FitOptions:
    """What a ``fit`` run does besides training: output, checkpoint contents, reporting.

    Attributes:
        out_dir: where ``model.pt`` (selected epoch), ``last.pt`` and ``curves.csv`` go.
        on_epoch: called with (epoch, curve row) after every epoch.
        loss: loss terms; when None, ``training.loss`` (:func:`loss_for`).
        store_fingerprint: recorded in checkpoints; checked on resume.
        label_norm: how targets were normalised, recorded in checkpoints.
        resume: continue from ``out_dir/last.pt``.
        record: what else checkpoints keep under ``extra`` (the store's fingerprint fields
            and extraction record, so ``iqa-score`` can rebuild the backbone).
        desc: progress label.
    """

    out_dir: str | Path | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    loss: LossConfig | None = None
    store_fingerprint: str = ""
    label_norm: Mapping[str, Any] | None = None
    resume: bool = False
    record: Mapping[str, Any] | None = None
    desc: str | None = None


@dataclass
class _State:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, Tensor] | None = None
    ema: AveragedModel | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The weights validated, selected and saved: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.module


def _as_list(data: TrainData | Sequence[TrainData]) -> list[TrainData]:
    return [data] if isinstance(data, TrainData) else list(data)


def _units(
    st: _State, trains: list[TrainData], size: int, grouped: bool
) -> list[tuple[int, Tensor]]:
    """This epoch's batches (or groups) as (training set, rows), shuffled across sets."""
    units = []
    for d, data in enumerate(trains):
        for rows in torch.randperm(len(data), generator=st.generator).split(size):
            if len(rows) == size or (not grouped and len(rows) >= 2):
                units.append((d, rows))
    order = torch.randperm(len(units), generator=st.generator).tolist()
    return [units[i] for i in order]


def _unit_loss(
    st: _State, data: TrainData, rows: Tensor, cfg: TrainConfig, device: str, loss: LossConfig
) -> Tensor:
    views = torch.randint(data.n_views, (len(rows),), generator=st.generator)
    feats, valid, ref = data.batch(rows, views, device)
    y = data.targets[rows]
    if protocols.is_grouped(st.model):
        y = augment_labels(y, st.generator, scale_p=cfg.scale_p, flip_p=cfg.flip_p,
                           scale_mode=cfg.scale_mode).to(device)
        return head_loss(protocols.group_forward(st.model, feats, y, valid), y, loss)
    return head_loss(protocols.predict(st.model, feats, valid, ref), y.to(device), loss)


def _train_epoch(
    st: _State, trains: list[TrainData], cfg: TrainConfig, device: str, loss: LossConfig,
    bar: Any,
) -> float:
    st.model.train()
    grouped = protocols.is_grouped(st.model)
    per_step = cfg.groups_per_step if grouped else 1
    units = _units(st, trains, cfg.batch_size, grouped)
    total, count = 0.0, 0
    for start in range(0, len(units), per_step):
        chunk = units[start : start + per_step]
        st.optimizer.zero_grad()
        for d, rows in chunk:
            value = _unit_loss(st, trains[d], rows, cfg, device, loss)
            (value / len(chunk)).backward()
            total, count = total + value.item() * len(rows), count + len(rows)
            bar.update(len(rows))
        st.optimizer.step()
        if st.ema is not None:
            st.ema.update_parameters(st.model)
    if st.scheduler is not None:
        st.scheduler.step()
    return total / max(count, 1)


def _validate(
    model: nn.Module, trains: list[TrainData], vals: list[TrainData], cfg: TrainConfig,
    device: str,
) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for train, val in zip(trains, vals, strict=True):
        if len(val) < 2:
            out.append({})
            continue
        prompt, _ = prompt_for(model, train, cfg, device)
        out.append(evaluate(model, val, prompt=prompt, device=device)["metrics"])
    return out


def _write_curves(path: Path, history: list[dict[str, float]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def _resolve_config(head: str, config: Any, train: TrainData) -> Any:
    cls = head_class(head)
    if config is None or isinstance(config, Mapping):
        return make_config(head, train.feature_specs, **dict(config or {}))
    if not isinstance(config, cls.config_cls):
        raise TypeError(f"{head}: config must be a {cls.config_cls.__name__} or a dict")
    return config


def loss_for(head: str, training: TrainConfig) -> LossConfig:
    """The loss a run trains with: ``training.loss`` by name, else the head's default."""
    return LOSSES[training.loss] if training.loss else head_class(head).default_loss


def adjusted_training(head: str, config: Any, training: TrainConfig) -> TrainConfig:
    """The settings head ``head`` with ``config`` trains with (its ``adjust_training``)."""
    adjust = getattr(head_class(head), "adjust_training", None)
    return training if adjust is None else adjust(config, training)


def check_orientation(head: str, cfg: TrainConfig) -> None:
    """Only a prompted head may train on each dataset's own orientation."""
    if cfg.label_orientation == "native" and not protocols.is_grouped(head_class(head)):
        raise OrientationError(
            f"{head}: label_orientation native keeps DMOS sets lower-is-better, which only a "
            "prompted head can tell apart; use higher_better"
        )


def check_trainable(head: str, trains: list[TrainData], vals: list[TrainData],
                    cfg: TrainConfig) -> None:
    """Fail with one clear line when the data cannot train ``head`` as asked."""
    cls = head_class(head)
    check_orientation(head, cfg)
    if len(trains) != len(vals):
        raise TrainError(f"{head}: {len(trains)} training sets but {len(vals)} validation sets")
    for part in [*trains, *vals]:
        if protocols.needs_ref(cls) and part.ref_features is None and len(part):
            raise TrainError(f"{head} is full-reference: {part.name} has no reference features")
    need = cfg.batch_size if protocols.is_grouped(cls) else 2
    for data in trains:
        if len(data) < need:
            what = f"one group of {cfg.batch_size}" if protocols.is_grouped(cls) else "2"
            raise TrainError(
                f"{head}: the {data.name} part has {len(data)} rows, too few to train "
                f"(need at least {what}); use a larger split or a smaller batch size"
            )


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the weight average after ``updates`` updates: ``decay``, warmed up as
    ``min(decay, (1 + n) / (10 + n))`` (TensorFlow's ExponentialMovingAverage with
    ``num_updates``), so a short run averages its recent weights, not its first ones."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _warm_ema(decay: float) -> Callable[..., None]:
    """``AveragedModel``'s multi-tensor update with the warmed-up decay."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        get_ema_multi_avg_fn(ema_decay(decay, int(num_averaged)))(averaged, current, num_averaged)

    return update


def _average(model: nn.Module, training: TrainConfig) -> AveragedModel | None:
    """The exponential moving average of the weights (and BatchNorm buffers), if asked."""
    if not training.ema:
        return None
    return AveragedModel(model, multi_avg_fn=_warm_ema(training.ema), use_buffers=True)


def _resume(st: _State, path: Path, fingerprint: str) -> int:
    ckpt = read_checkpoint(path, store_fingerprint=fingerprint)
    st.model.load_state_dict(ckpt["model"])
    if ckpt["optimizer"] is None:
        raise CheckpointError(f"{path}: has no optimizer state to resume from")
    st.optimizer.load_state_dict(ckpt["optimizer"])
    extra = ckpt["extra"]
    if st.scheduler is not None and extra.get("scheduler") is not None:
        st.scheduler.load_state_dict(extra["scheduler"])
    if st.ema is not None:
        if extra.get("ema") is None:
            raise CheckpointError(f"{path}: trained without the weight average (ema) asked for")
        st.ema.load_state_dict(extra["ema"])
    st.generator.set_state(extra["generator"])
    torch.set_rng_state(extra["torch_rng"])
    st.history = [dict(r) for r in extra["history"]]
    st.best_score, st.best_epoch = extra["best_score"], extra["best_epoch"]
    best_path = path.with_name("model.pt")
    st.best_state = read_checkpoint(best_path)["model"] if best_path.is_file() else None
    return int(ckpt["epoch"]) + 1


def fit(
    head_name: str,
    config: Any,
    train: TrainData | Sequence[TrainData],
    val: TrainData | Sequence[TrainData],
    *,
    training: TrainConfig,
    seed: int,
    device: str = "cpu",
    options: FitOptions = FitOptions(),
) -> FitResult:
    """Train head ``head_name``; select the epoch by validation SRCC.

    Args:
        head_name: a key of ``heads.registry.HEADS``.
        config: the head's config, a dict of overrides, or None for the defaults.
        train: training rows, or one ``TrainData`` per dataset (mixed training).
        val: validation rows, aligned with ``train`` (may be empty). No test data is taken.
        training: optimiser, schedule, epochs, batch and (grouped heads) prompt settings.
        seed: seeds the model init, shuffling, view draws and label augmentation.
        device: torch device.
        options: output, checkpoint contents, resuming, loss and reporting
            (:class:`FitOptions`).
    """
    trains, vals = _as_list(train), _as_list(val)
    check_trainable(head_name, trains, vals, training)
    cfg = _resolve_config(head_name, config, trains[0])
    training = adjusted_training(head_name, cfg, training)
    torch.manual_seed(seed)
    model = build_from_config(head_name, cfg).to(device)
    optimizer = make_optimizer(model, training)
    st = _State(model, optimizer, make_scheduler(optimizer, training),
                torch.Generator().manual_seed(seed), ema=_average(model, training))
    opts = options
    out = Path(opts.out_dir) if opts.out_dir is not None else None
    start = _resume(st, out / "last.pt", opts.store_fingerprint) if opts.resume and out else 0
    save = _saver(out, head_name, trains[0], opts.store_fingerprint, opts.label_norm,
                  opts.record, training)
    loss_cfg = opts.loss or loss_for(head_name, training)
    rows = sum(len(t) for t in trains)
    has_val = any(len(v) >= 2 for v in vals)
    stopped = False
    with progress((training.epochs - start) * rows, opts.desc or head_name, "rows") as bar:
        for epoch in range(start, training.epochs):
            row = _one_epoch(st, trains, vals, epoch, training, device, loss_cfg, bar)
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}",
                            val_srcc=f"{row['val_srcc']:.4f}")
            if save is not None and out is not None:
                if st.best_epoch == epoch:
                    save("model.pt", st, epoch)
                _write_curves(out / "curves.csv", st.history)
                save("last.pt", st, epoch, full=True)
            if opts.on_epoch is not None:
                opts.on_epoch(epoch, row)
            if has_val and training.patience and epoch - st.best_epoch >= training.patience:
                stopped = epoch + 1 < training.epochs
                break
    return _finish(st, cfg, trains, vals, device, training, out, stopped)


def _one_epoch(
    st: _State, trains: list[TrainData], vals: list[TrainData], epoch: int,
    cfg: TrainConfig, device: str, loss: LossConfig, bar: Any,
) -> dict[str, float]:
    lr = float(st.optimizer.param_groups[0]["lr"])
    train_loss = _train_epoch(st, trains, cfg, device, loss, bar)
    metrics = _validate(st.evaluated, trains, vals, cfg, device)
    scored = [m for m in metrics if m]
    score = sum(m["srcc"] for m in scored) if scored else math.nan
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_srcc": sum(m["srcc"] for m in scored) / len(scored) if scored else math.nan,
        "val_plcc": sum(m["plcc"] for m in scored) / len(scored) if scored else math.nan,
        "lr": lr,
    }
    st.history.append(row)
    if not scored or score > st.best_score:
        st.best_score = score if scored else -math.inf
        st.best_epoch = epoch
        st.best_state = {k: v.detach().clone() for k, v in st.evaluated.state_dict().items()}
    return row


def _saver(
    out: Path | None, head: str, train: TrainData, fingerprint: str, label_norm: Any,
    record: Mapping[str, Any] | None, training: TrainConfig,
) -> Callable[..., None] | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    trained_on = TrainedOn(train.feature_specs, fingerprint, label_norm)

    def save(name: str, st: _State, epoch: int, full: bool = False) -> None:
        extra: dict[str, Any] = {
            **(record or {}),
            "training": training.to_dict(),
            "best_epoch": st.best_epoch,
            "best_score": st.best_score,
        }
        if full:
            extra |= {
                "generator": st.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": st.history,
                "scheduler": None if st.scheduler is None else st.scheduler.state_dict(),
                "ema": None if st.ema is None else st.ema.state_dict(),
            }
        weights = st.model if full else st.evaluated  # last.pt resumes; model.pt is scored
        save_checkpoint(
            out / name, weights, head=head, trained_on=trained_on, epoch=epoch,
            optimizer=st.optimizer if full else None, extra=extra,
        )

    return save


def _finish(
    st: _State, cfg: Any, trains: list[TrainData], vals: list[TrainData],
    device: str, training: TrainConfig, out: Path | None, stopped: bool,
) -> FitResult:
    if st.best_state is not None:
        st.model.load_state_dict(st.best_state)
    st.model.eval()
    epochs_run = len(st.history)
    if any(len(v) >= 2 for v in vals):
        selection = f"epoch {st.best_epoch} by validation SRCC"
        if stopped:
            selection += f" (early stop after {epochs_run} epochs)"
    else:
        selection = (f"last epoch ({st.best_epoch}): no validation part, a fixed "
                     f"{training.epochs} epochs and no model selection")
    prompts, prompt_ids = [], []
    for train in trains:
        prompt, ids = prompt_for(st.model, train, training, device)
        prompts.append(prompt)
        prompt_ids.append(ids)
    metrics = _validate(st.model, trains, vals, training, device)
    ckpt = out / "model.pt" if out is not None else None
    return FitResult(st.model, cfg, st.best_epoch, st.history, metrics, selection, prompts,
                     prompt_ids, ckpt, stopped)
