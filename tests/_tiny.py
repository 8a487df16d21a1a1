"""Tiny data shared by the test files: a small PromptIQA configuration, the training
command's data arguments for a dataset folder, toy vector sets, and labelled folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

import heads.train as train_mod
from extract.config import ExtractConfig, arch_overrides
from extract.run import run_extract
from heads.cli import test_main
from heads.part_tensors import TrainData
from iqadata.manifest import (
    Manifest,
    Split,
    file_sha256,
    read_manifest,
    write_manifest,
    write_split,
)
from iqadata.splits import make_splits, write_splits

# A PromptIQA head small enough for 2 shared cores.
PROMPT_TINY = {
    "dim": 16,
    "heads": 2,
    "encoder_depth": 1,
    "ispp_depth": 1,
    "fusion_depth": 1,
    "reduce_hidden": 8,
    "head_hidden": 8,
}
NSS = {"size": 32, "grid": 4}


def store_args(root: Path) -> list[str]:
    """``--features`` and ``--manifest`` of a dataset folder as the tests lay it out
    (``f.zarr``, ``manifest.csv``)."""
    return ["--features", str(root / "f.zarr"), "--manifest", str(root / "manifest.csv")]


def data_args(root: Path) -> list[str]:
    """:func:`store_args` and ``--split`` of the folder's ``splits/``."""
    return [*store_args(root), "--split", str(root / "splits")]


def invoke_test_head(run: Path, inputs: list[str], out: Path, *extra: str) -> Result:
    """iqa-test-head of the run folder ``run`` on ``inputs``, written to ``out``."""
    return CliRunner().invoke(test_main, [str(run), *inputs, "--out", str(out), *extra])


def vectors(n: int, seed: int, name: str, *, views: int = 1, noise: float = 0.2) -> TrainData:
    """``n`` 12-d vectors (``views`` each) whose first entry tracks a random label."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=gen)
    x = noise * torch.randn(n, views, 12, generator=gen)
    x[:, :, 0] += 2 * y.view(n, 1)
    return TrainData({"feature": x}, y, [f"{name}{i}" for i in range(n)], name=name)


def write_labels(root: Path, manifest: Manifest, parts: tuple[tuple[str, ...], ...],
                 split_file: Path) -> None:
    """``root/manifest.csv`` and one split (train, val, test) of it at ``split_file``."""
    write_manifest(manifest, root / "manifest.csv")
    write_split(Split(*parts, manifest_sha256=file_sha256(root / "manifest.csv")), split_file)


def split_and_extract(root: Path, manifest: Manifest) -> Path:
    """Write ``manifest`` into ``root`` with two 60/20/20 splits and extract NSS features
    of its images into ``root/f.zarr``."""
    write_manifest(manifest, root / "manifest.csv")
    write_splits(make_splits(read_manifest(root / "manifest.csv"), (0.6, 0.2, 0.2), 2),
                 root / "splits")
    cfg = ExtractConfig(backbone="nss", arch=arch_overrides(NSS), shard_size=8)
    run_extract(cfg, root / "manifest.csv", out=str(root / "f.zarr"), progress=False)
    return root


def record_augment(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every label augmentation training does from now on."""
    calls: list[dict[str, Any]] = []
    real = train_mod.augment_labels

    def spy(labels, generator=None, **kw):
        calls.append(kw)
        return real(labels, generator, **kw)

    monkeypatch.setattr(train_mod, "augment_labels", spy)
    return calls


def has_key(params: dict[str, Any], dotted: str) -> bool:
    """Whether nested ``params`` hold the dotted key ``a.b.c``."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
