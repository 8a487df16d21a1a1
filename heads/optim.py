"""Training settings of a head: optimiser, weight decay, learning-rate schedule, epochs.

``TrainConfig`` is what ``iqa-train-head`` and ``params.yaml`` (``head_train.<head>``) set;
each head class declares its paper's settings as ``train_defaults`` (SAM-IQA §4.2: Adam
2e-5, batch 16, 500 epochs; PromptIQA §4.1 C: Adam 1e-5, weight decay 1e-5, cosine
annealing restarted every 50 epochs, 100 epochs, groups of 11 with 6 groups per step;
DP-IQA §IV-B and ``build.py``: Adam, MultiStepLR with gamma 0.2). The schedules are
torch's own (``CosineAnnealingLR``, ``CosineAnnealingWarmRestarts``, ``MultiStepLR``),
stepped once per epoch. The config is recorded in every checkpoint and ``metrics.json``.

``patience`` adds early stopping on the validation SRCC (off by default, as in the
papers): training ends when the best epoch is ``patience`` epochs old. ``loss`` names the
loss (``heads.losses.LOSSES``; "" keeps the head's ``default_loss``).
``milestones_by_dataset`` gives ``multistep`` milestones per dataset key (the importers'
keys, e.g. ``livec``: DP-IQA's ``build.py`` decays CLIVE at epoch 10, KonIQ at 5);
:meth:`TrainConfig.for_dataset` applies it to a one-dataset run, and a dataset it does not
list keeps ``milestones``. ``iqa-train-head`` given ``milestones`` without a table drops the
head's default table, so the milestones asked for apply to every dataset.

``label_norm`` and ``label_orientation`` say how ``heads.experiment`` maps raw scores to
targets (``heads.split_data.label_norm_of``); they are applied where the data is loaded and
recorded here with everything else. PromptIQA's "cosine annealing for every 50 epochs"
(sec. 4.1 C, 100 epochs) has two readings: warm restarts every 50 epochs
(``cosine_restarts``, the head's default) and the reference code's one half-cosine over
its 50 epochs (``chencn2020/PromptIQA`` ``toolkit.adjust_learning_rate``: ``schedule:
cosine, epochs: 50``, which ``CosineAnnealingLR`` reproduces epoch for epoch).

The Table 5 prompt probes of PromptIQA (inverted or random prompts) are not training
options: they are test-time options of a trained model (``iqa-test-head --probe``), so
they never change which epoch is selected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from heads.losses import LOSSES

SCHEDULES = ("constant", "cosine", "cosine_restarts", "multistep")
PROMPT_SELECTIONS = ("interval", "random")
SCALE_MODES = ("paper", "code")
LABEL_NORMS = ("score_range", "train_minmax")
ORIENTATIONS = ("higher_better", "native")
_MOVED = {"prompt_transform": "a test-time probe of a trained model now: iqa-test-head --probe"}


class TrainConfigError(ValueError):
    """A training setting is out of range or does not fit the head."""


@dataclass(frozen=True)
class TrainConfig:
    """How a head is trained.

    Attributes:
        epochs: passes over the training rows (> 0).
        batch_size: rows per step; for grouped heads, the images of one group.
        lr: Adam learning rate.
        weight_decay: Adam's L2 weight decay.
        schedule: ``constant``, ``cosine`` (one period over ``epochs``), ``cosine_restarts``
            (period ``restart_every`` epochs) or ``multistep`` (x ``gamma`` at ``milestones``).
        restart_every: period of ``cosine_restarts`` in epochs.
        milestones: epochs at which ``multistep`` multiplies the rate by ``gamma``.
        gamma: ``multistep`` factor.
        min_lr: lowest rate of the cosine schedules.
        patience: stop when validation SRCC has not improved for this many epochs (0: off).
        groups_per_step: grouped heads: groups (each from one dataset) per optimiser step.
        scale_p: grouped heads: probability of PromptIQA's random label scaling.
        flip_p: grouped heads: probability of PromptIQA's random label flipping.
        scale_mode: ``paper`` (divide by the maximum) or ``code`` (by U(max, 1)).
        prompt_size: grouped heads: image-score pairs in the evaluation prompt.
        prompt_select: ``interval`` (PromptIQA's default) or ``random`` (its Table 4).
        loss: a key of ``heads.losses.LOSSES`` (``l1``, ``mse``, ``mse_rank``); "" for
            the head's ``default_loss``.
        milestones_by_dataset: dataset key -> ``multistep`` milestones of a run on that
            dataset (:meth:`for_dataset`); datasets not listed use ``milestones``.
        label_norm: ``score_range`` (the manifest's nominal range) or ``train_minmax``
            (each split's train min and max, PromptIQA's per-split min-max).
        label_orientation: ``higher_better`` (DMOS reversed; every head) or ``native``
            (each dataset's own orientation; prompted heads only, PromptIQA's default).
        ema: decay of an exponential moving average of the weights, updated after every
            step (0: none, the papers' setting), warmed up as ``min(ema, (1 + n) / (10 + n))``
            after n updates so that a short run averages its recent weights. The average
            is what is validated, selected and saved; a short run on little data varies far
            less from epoch to epoch.
    """

    epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "constant"
    restart_every: int = 50
    milestones: tuple[int, ...] = ()
    gamma: float = 0.2
    min_lr: float = 0.0
    patience: int = 0
    groups_per_step: int = 1
    scale_p: float = 0.5
    flip_p: float = 0.1
    scale_mode: str = "paper"
    prompt_size: int = 10
    prompt_select: str = "interval"
    loss: str = ""
    milestones_by_dataset: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    label_norm: str = "score_range"
    label_orientation: str = "higher_better"
    ema: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        self._normalise_by_dataset()
        positive = ("epochs", "batch_size", "restart_every", "groups_per_step", "prompt_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                value = getattr(self, name)
                raise TrainConfigError(f"{name} must be a positive integer, got {value}")
        if not self.lr > 0 or self.weight_decay < 0 or self.min_lr < 0 or self.patience < 0:
            raise TrainConfigError(
                f"need lr > 0 and weight_decay, min_lr, patience >= 0; got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, min_lr={self.min_lr}, patience={self.patience}"
            )
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("prompt_select", PROMPT_SELECTIONS)
        self._check_choice("scale_mode", SCALE_MODES)
        self._check_choice("loss", ("", *LOSSES))
        self._check_choice("label_norm", LABEL_NORMS)
        self._check_choice("label_orientation", ORIENTATIONS)
        if not 0.0 <= self.ema < 1.0:
            raise TrainConfigError(f"ema must be in [0, 1) (0: no average), got {self.ema}")
        for name in ("scale_p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TrainConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def _normalise_by_dataset(self) -> None:
        table = self.milestones_by_dataset
        bad = TrainConfigError(
            f"milestones_by_dataset must map dataset keys to epoch lists, got {table!r}"
        )
        if not isinstance(table, Mapping):
            raise bad
        try:
            clean = {str(k): tuple(int(m) for m in v) for k, v in table.items()}
        except (TypeError, ValueError):
            raise bad from None
        object.__setattr__(self, "milestones_by_dataset", clean)

    def for_dataset(self, dataset: str) -> TrainConfig:
        """The settings of a run on ``dataset``: its ``milestones_by_dataset`` entry, if any,
        replaces ``milestones``."""
        if dataset not in self.milestones_by_dataset:
            return self
        return dataclasses.replace(self, milestones=self.milestones_by_dataset[dataset])

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        if getattr(self, name) not in allowed:
            raise TrainConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown names are an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in sorted(set(changes) & set(_MOVED)):
            raise TrainConfigError(f"{name} is not a training option: it is {_MOVED[name]}")
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        data["milestones_by_dataset"] = {
            k: list(v) for k, v in self.milestones_by_dataset.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A config from ``to_dict`` output (older records' moved fields are dropped)."""
        return cls().replace(**{k: v for k, v in data.items() if k not in _MOVED})


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam over the trainable parameters with the configured rate and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule, or None for a constant rate."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    if cfg.schedule == "cosine_restarts":
        return sched.CosineAnnealingWarmRestarts(
            optimizer, T_0=cfg.restart_every, eta_min=cfg.min_lr
        )
    if cfg.schedule == "multistep":
        return sched.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    return None
