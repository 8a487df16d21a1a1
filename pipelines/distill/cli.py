"""``iqa-distill``: DP-IQA's student, distilled from a trained QFD head without running SD.

A thin click layer over :mod:`pipelines.distill.teacher_maps` and :mod:`pipelines.distill.run`;
torch and the models are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from cache.console import Group, UsageProblem, choice_option, count_option


@click.group(cls=Group)
def main() -> None:
    """Distil a trained DP-IQA teacher (a qfd head) into a small CNN student.

    \b
    1. teacher-maps: the teacher's 8-channel QFD map and score of every image of the SD 1.5
       store it was trained on, into a new store (computed once; SD never runs again).
    2. train: the student (EfficientNet-B7 by default) from the image files and those maps.
    The student checkpoint scores images with no SD, no store and no GPU.

    \b
    Example:
      iqa-distill teacher-maps --features features/koniq/sd15.zarr \\
          --teacher runs/qfd-koniq/model.pt --out features/koniq/teacher.zarr
      iqa-distill train --maps features/koniq/teacher.zarr --manifest data/koniq/manifest.csv \\
          --split data/koniq/splits/split_00.json --out runs/student-koniq
    """


@main.command("teacher-maps")
@click.option("--features", required=True, help="SD 1.5 store the teacher was trained on.")
@click.option(
    "--teacher",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="qfd head checkpoint (model.pt of iqa-train-head).",
)
@click.option("--out", default=None, help="New teacher-map store (path or URL).")
@click.option("--cache-root", default=None, help="Instead of --out: file it under this root.")
@click.option("--resume", is_flag=True, help="Fill what an existing --out store lacks.")
@count_option("--batch-size", default=8, minimum=1)
@click.option("--device", default="cpu", show_default=True)
@choice_option(
    "--storage-dtype",
    choices=["float16", "float32"],
    default="float16",
    help="dtype of the stored maps.",
)
@click.option("--progress/--no-progress", "show_progress", default=True, show_default=True)
def teacher_maps(
    features: str,
    teacher: str,
    out: str | None,
    cache_root: str | None,
    resume: bool,
    show_progress: bool,
    **config: Any,
) -> None:
    """Store the teacher's QFD maps and scores for every row of an SD 1.5 store.

    The new store has the source's rows, views and shards, a fingerprint made of the
    teacher checkpoint's sha256 and the source store's fingerprint, and is verified after
    writing. A killed run resumes with --resume; iqa-cache verify checks it later.
    """
    from pipelines.distill.teacher_maps import TeacherMapsConfig, write_teacher_maps

    cfg = TeacherMapsConfig(**config)  # --batch-size, --device, --storage-dtype
    res = write_teacher_maps(
        features,
        teacher,
        out=out,
        cache_root=cache_root,
        cfg=cfg,
        resume=resume,
        show_progress=show_progress,
    )
    done = "reused" if res.reused else f"{res.computed_shards} shards written"
    click.echo(
        f"{res.store}: {res.rows} rows, {done}, {len(res.failures)} failed, verified; "
        f"fingerprint {res.fingerprint[:16]}"
    )


def _milestones(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageProblem(
            f"--milestones: expected epochs like 10,25 or 'none', got {text!r}"
        ) from None


@main.command("train")
@click.option("--maps", required=True, help="Teacher-map store (from teacher-maps).")
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--split",
    "split_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Split file; use the one the teacher was trained on.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option(
    "--trunk",
    default="efficientnet_b7",
    show_default=True,
    help="efficientnet_b0 ... efficientnet_b7, or efficientnet_tiny (tests).",
)
@click.option(
    "--trunk-checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Local torchvision EfficientNet weights (default: random init).",
)
@click.option("--input-size", type=int, help="Student input side (default: the teacher's).")
@count_option("--epochs", default=30, minimum=1)
@count_option("--batch-size", default=24, minimum=1)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--gamma", default=0.2, show_default=True, help="MultiStepLR decay factor.")
@click.option(
    "--milestones",
    "milestones_text",
    help="Epochs of LR decay, e.g. 10,25, or 'none' (default: the paper's for the "
    "manifest's dataset: livec 10,25; koniq10k 5; flive 4; spaq 6).",
)
@click.option("--map-weight", default=1.0, show_default=True)
@click.option("--score-weight", default=1.0, show_default=True)
@choice_option(
    "--score-target", choices=["gt", "teacher"], default="gt", help="Score supervision."
)
@click.option(
    "--augment/--no-augment",
    default=False,
    show_default=True,
    help="Random flip views (needs an SD store extracted with flip views).",
)
@count_option(
    "--eval-every",
    default=0,
    minimum=0,
    help="Also validate every N steps (0: once per epoch).",
)
@count_option("--workers", default=2, minimum=0, help="DataLoader processes decoding images.")
@click.option("--device", default="cpu", show_default=True)
@choice_option("--dtype", choices=["fp32", "bf16"], default="fp32")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--preload/--no-preload",
    default=None,
    help="Teacher maps in RAM (default: if they fit in a quarter of it).",
)
@click.option("--progress/--no-progress", "show_progress", default=True, show_default=True)
def train(
    maps: str,
    manifest: str,
    split_path: str,
    out: str,
    resume: bool,
    milestones_text: str | None,
    show_progress: bool,
    **options: Any,
) -> None:
    """Train the student; select it on validation SRCC; evaluate test once.

    Writes OUT/model.pt (the selected student), last.pt, curves.csv, predictions.csv
    (student and teacher per image) and metrics.json (student and teacher on val and test).
    """
    from heads.specs import HeadConfigError
    from pipelines.distill.run import DistillConfig, train_student
    from pipelines.distill.student import StudentConfig

    cfg = DistillConfig(milestones=_milestones(milestones_text), **options)
    try:
        StudentConfig(trunk=cfg.trunk)
    except HeadConfigError as err:
        raise UsageProblem(f"--trunk: {err}") from err
    res = train_student(
        maps, manifest, split_path, out, cfg, resume=resume, show_progress=show_progress
    )
    summary = {
        who: {
            part: {k: round(v, 4) for k, v in m.items() if k in ("srcc", "plcc")}
            for part, m in res.metrics[who].items()
        }
        for who in ("student", "teacher")
    }
    click.echo(f"{res.checkpoint}: {res.selection}; {json.dumps(summary)}")


if __name__ == "__main__":
    main()
