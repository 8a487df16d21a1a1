"""PromptIQA label augmentation and prompt selection."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from heads.augment import (
    augment_labels,
    interval_select,
    random_flip,
    random_scale,
    random_select,
)

labels_st = st.lists(st.floats(0.01, 1.0), min_size=2, max_size=20).map(torch.tensor)


@settings(max_examples=30, deadline=None)
@given(labels=labels_st, seed=st.integers(0, 1000), mode=st.sampled_from(["paper", "code"]))
def test_scaling_keeps_order_and_range(labels: torch.Tensor, seed: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(seed)
    out = random_scale(labels, gen, p=1.0, mode=mode)
    assert torch.equal(torch.argsort(out, stable=True), torch.argsort(labels, stable=True))
    assert out.max() <= 1.0 + 1e-6 and out.max() >= labels.max() - 1e-6
    if mode == "paper":
        assert out.max().item() == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(labels=labels_st)
def test_flipping_reverses_order(labels: torch.Tensor) -> None:
    out = random_flip(labels, p=1.0)
    assert torch.allclose(out, 1 - labels)
    diffs = (labels[:, None] - labels[None, :]).sign()
    assert torch.equal((out[:, None] - out[None, :]).sign(), -diffs)


def test_probabilities() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0.2, 0.4])
    flips = sum(bool(random_flip(labels, gen)[0] != labels[0]) for _ in range(2000))
    scales = sum(bool(random_scale(labels, gen)[1] != labels[1]) for _ in range(2000))
    assert 150 < flips < 250  # p = 0.1
    assert 900 < scales < 1100  # p = 0.5
    assert torch.equal(augment_labels(labels, gen, scale_p=0.0, flip_p=0.0), labels)
    with pytest.raises(ValueError, match="scale mode"):
        random_scale(labels, gen, mode="other")


def test_interval_selection_by_hand() -> None:
    labels = torch.arange(100.0).flip(0)  # label of index i is 99 - i
    idx = interval_select(labels, 10)
    # d = (100 - 2) // 8 = 12: ranks 0, 12, ..., 96, then the maximum (rank 99).
    assert labels[idx].tolist() == [0, 12, 24, 36, 48, 60, 72, 84, 96, 99]
    assert interval_select(torch.tensor([0.3, 0.1]), 10).tolist() == [1, 0]


def test_random_selection_is_seeded() -> None:
    labels = torch.rand(50)
    a = random_select(labels, 10, torch.Generator().manual_seed(1))
    b = random_select(labels, 10, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
