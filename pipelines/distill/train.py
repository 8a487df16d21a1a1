"""The student's training settings and one run's state: steps, selection, checkpoints.

``DistillConfig`` defaults to the DP-IQA preset (arXiv 2405.19996, §IV-B, Table I;
``RomGai/DP-IQA`` ``train_student.py`` and ``build.py``): Adam 1e-4, batch 24, 30 epochs,
``MultiStepLR`` gamma 0.2 at the per-dataset milestones of ``MILESTONES`` (keyed by the
importers' dataset keys, ``iqadata.importers.IMPORTERS``; the reference's ``clive``,
``koniq`` and ``livefb`` are our ``livec``, ``koniq10k`` and ``flive``), loss weights
1 : 1. ``StudentRun`` holds the model, optimiser, scheduler and history of one run, and
writes ``model.pt`` (best validation SRCC so far), ``last.pt`` (for resuming) and
``curves.csv`` into the run folder. Pipeline: ``pipelines.distill.run``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.console import UsageProblem
from extract.forward import autocast
from heads.metrics import compute_metrics
from pipelines.distill.student import DPIQAStudent, StudentLoss, read_student, save_student

# paper Table I, student row (= build.py build_student_optmizer), by our dataset keys
MILESTONES: dict[str, tuple[int, ...]] = {
    "livec": (10, 25),
    "koniq10k": (5,),
    "flive": (4,),
    "spaq": (6,),
}
SCORE_TARGETS = ("gt", "teacher")
TRAIN_DTYPES = ("fp32", "bf16")
CURVE_FIELDS = (
    "epoch", "step", "lr", "train_loss", "map_loss", "score_loss", "val_srcc", "val_plcc",
)
_FREE_ON_RESUME = ("epochs", "workers", "device", "preload")


@dataclass(frozen=True)
class DistillConfig:
    """Everything that decides how the student trains (defaults: the paper's preset).

    Attributes:
        trunk: a key of ``pipelines.distill.student.TRUNKS``.
        trunk_checkpoint: local weights of the trunk (a torchvision EfficientNet state dict;
            its classifier is dropped); None: random init.
        input_size: student input side (None: the teacher's, 512 for SD 1.5).
        epochs, batch_size, lr, gamma: Adam and MultiStepLR settings.
        milestones: epochs where the learning rate is multiplied by ``gamma``; None: the
            paper's for the manifest's dataset (``MILESTONES``), else none.
        map_weight, score_weight: loss weights.
        score_target: ``gt`` (ground truth, as the paper) or ``teacher`` (its score).
        augment: draw a random stored view (flip) per image and epoch.
        eval_every: also evaluate every this many steps (0: after each epoch only).
        workers: DataLoader worker processes decoding images.
        device, dtype: torch device; ``fp32`` or ``bf16`` autocast.
        seed: model init, shuffling and view draws.
        preload: teacher maps in RAM (None: when they fit in a quarter of it).
    """

    trunk: str = "efficientnet_b7"
    trunk_checkpoint: str | None = None
    input_size: int | None = None
    epochs: int = 30
    batch_size: int = 24
    lr: float = 1e-4
    gamma: float = 0.2
    milestones: tuple[int, ...] | None = None
    map_weight: float = 1.0
    score_weight: float = 1.0
    score_target: str = "gt"
    augment: bool = False
    eval_every: int = 0
    workers: int = 2
    device: str = "cpu"
    dtype: str = "fp32"
    seed: int = 0
    preload: bool | None = None

    def __post_init__(self) -> None:
        if self.score_target not in SCORE_TARGETS:
            raise UsageProblem(f"score target must be one of {SCORE_TARGETS}")
        if self.dtype not in TRAIN_DTYPES:
            raise UsageProblem(f"training dtype must be one of {TRAIN_DTYPES}")
        if min(self.epochs, self.batch_size) < 1 or self.lr <= 0 or self.eval_every < 0:
            raise UsageProblem("epochs, batch size and learning rate must be positive")


def milestones_for(cfg: DistillConfig, dataset: str) -> tuple[int, ...]:
    """The configured milestones, else the paper's for ``dataset``, else none.

    ``dataset`` is a manifest's dataset name: an importer key (``livec``) or one of the
    aliases of ``pipelines/report/published.yaml`` (``clive``, ``koniq``, ``livefb``).
    """
    from pipelines.report.published import canonical_dataset

    if cfg.milestones is not None:
        return tuple(cfg.milestones)
    return MILESTONES.get(canonical_dataset(dataset), ())


def metrics_of(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``heads.metrics.compute_metrics``, or nothing for fewer than two images."""
    return compute_metrics(pred, target) if len(pred) >= 2 else {}


@dataclass
class StudentRun:
    """One student training run (see the module docstring).

    Attributes:
        record: what every checkpoint keeps besides the weights (preprocessing,
            label_norm, teacher, train).
        out: the run folder.
    """

    model: DPIQAStudent
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    loss: StudentLoss
    cfg: DistillConfig
    record: dict[str, Any]
    out: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_srcc: float = -math.inf
    best_epoch: int = -1
    step: int = 0

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(self.cfg.device)
        with autocast(device, self.cfg.dtype):
            score, fmap = self.model(images.to(device, non_blocking=True))
        return score.float(), fmap.float()

    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step; the total loss and its two terms."""
        self.model.train()
        score, fmap = self.forward(batch["image"])
        key = "target" if self.cfg.score_target == "gt" else "teacher_score"
        target = batch[key].float().to(self.cfg.device)
        teacher_map = batch["map"].to(self.cfg.device, non_blocking=True)
        total, terms = self.loss(score, fmap, target, teacher_map)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(total.detach()), **terms}

    def predict(self, loader: Any) -> dict[str, np.ndarray]:
        """Student and teacher scores and targets of a loader's items, in part order."""
        self.model.eval()
        cols: dict[str, list[np.ndarray]] = {"index": [], "pred": [], "teacher": [], "target": []}
        with torch.inference_mode():
            for batch in loader:
                cols["pred"].append(self.forward(batch["image"])[0].cpu().numpy())
                cols["teacher"].append(batch["teacher_score"].numpy())
                cols["target"].append(batch["target"].numpy())
                cols["index"].append(batch["index"].numpy())
        out = {k: np.concatenate(v) for k, v in cols.items()}
        order = np.argsort(out["index"])
        return {k: v[order] for k, v in out.items()}

    def evaluate(self, val: Any, epoch: int, losses: Mapping[str, float]) -> dict[str, float]:
        """One validation: a curve row, and ``model.pt`` when the SRCC is the best so far."""
        metrics: dict[str, float] = {}
        if val is not None:
            got = self.predict(val)
            metrics = metrics_of(got["pred"], got["target"])
        row = {
            "epoch": epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": losses.get("loss", math.nan),
            "map_loss": losses.get("map", math.nan),
            "score_loss": losses.get("score", math.nan),
            "val_srcc": metrics.get("srcc", math.nan),
            "val_plcc": metrics.get("plcc", math.nan),
        }
        self.history.append(row)
        if not metrics or metrics["srcc"] > self.best_srcc:
            self.best_srcc = metrics.get("srcc", -math.inf)
            self.best_epoch = epoch
            self.save("model.pt", epoch)
        return row

    def run_epoch(self, loader: Any, val: Any, epoch: int, bar: Any) -> dict[str, float]:
        """Train one epoch (validating every ``eval_every`` steps); mean loss terms."""
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            terms = self.train_step(batch)
            n = len(batch["index"])
            sums = {k: sums.get(k, 0.0) + v * n for k, v in terms.items()}
            count += n
            bar.update(n)
            bar.set_postfix(**{k: f"{v:.4f}" for k, v in terms.items()})
            if self.cfg.eval_every and self.step % self.cfg.eval_every == 0:
                self.evaluate(val, epoch, {k: v / count for k, v in sums.items()})
                sums, count = {}, 0
        return {k: v / max(count, 1) for k, v in sums.items()}

    def end_epoch(self, epoch: int) -> None:
        """Step the schedule, write ``last.pt`` and ``curves.csv``."""
        self.scheduler.step()
        self.save("last.pt", epoch, full=True)
        with open(self.out / "curves.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.history)

    def save(self, name: str, epoch: int, full: bool = False) -> None:
        extra = {"best_epoch": self.best_epoch, "best_srcc": self.best_srcc, "step": self.step}
        fields: dict[str, Any] = {**self.record, "epoch": epoch, "extra": extra}
        if full:
            fields["optimizer"] = self.optimizer.state_dict()
            fields["scheduler"] = self.scheduler.state_dict()
            fields["state"] = {"history": self.history, "torch_rng": torch.get_rng_state()}
        save_student(self.out / name, self.model, **fields)

    def resume(self) -> int:
        """Restore ``last.pt``; returns the next epoch.

        Raises:
            UsageProblem: ``last.pt`` was trained with other settings or teacher maps.
        """
        ckpt = read_student(self.out / "last.pt")
        same = {k: v for k, v in self.record["train"].items() if k not in _FREE_ON_RESUME}
        had = {k: v for k, v in ckpt["train"].items() if k not in _FREE_ON_RESUME}
        if ckpt["teacher"] != self.record["teacher"] or had != same or "optimizer" not in ckpt:
            raise UsageProblem(
                f"{self.out / 'last.pt'} was trained with other settings or teacher maps; "
                "resume with the same options or choose a new --out"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.history = [dict(r) for r in ckpt["state"]["history"]]
        torch.set_rng_state(ckpt["state"]["torch_rng"])
        extra = ckpt["extra"]
        self.best_srcc, self.best_epoch = extra["best_srcc"], extra["best_epoch"]
        self.step = extra["step"]
        return int(ckpt["epoch"]) + 1
