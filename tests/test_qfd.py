"""DP-IQA QFD: reference parameter count, shapes, gradients, map order, errors."""

from __future__ import annotations

import pytest
import torch

from heads.qfd import QFD, QFDConfig
from heads.registry import build_head, make_config
from heads.specs import HeadConfigError

SD_SPECS = {
    "up0": (1280, 16, 16),
    "up1": (1280, 32, 32),
    "up2": (640, 64, 64),
    "up3": (320, 64, 64),
}
TINY_SPECS = {"up0": (6, 4, 4), "up1": (5, 8, 8), "lvl": (3, 8, 8)}
TINY = {"width": 8, "se_reduction": 4, "reduce": (4, 2), "hidden": 8}


# Small models on 2 shared cores: one thread avoids oversubscription.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_parameter_count_on_meta_device() -> None:
    with torch.device("meta"):
        model = build_head("qfd", SD_SPECS)
    assert model.config.size == 64
    assert model.config.names == ("up0", "up1", "up2", "up3")
    assert sum(p.numel() for p in model.parameters()) == 42_934_697
    assert model.mlp[0].weight.numel() == 32_768 * 512


def test_shapes_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_head("qfd", TINY_SPECS, **TINY)
    feats = {k: torch.randn(3, *v) for k, v in TINY_SPECS.items()}
    assert model.feature_map(feats).shape == (3, 2, 8, 8)
    out = model(feats)
    assert out.shape == (3,)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_single_map_and_explicit_order() -> None:
    one = build_head("qfd", {"lvl0": (4, 6, 6)}, **TINY)
    assert one({"lvl0": torch.randn(2, 4, 6, 6)}).shape == (2,)
    cfg = make_config("qfd", TINY_SPECS, names=("up1", "up0"), **TINY)
    assert cfg.in_channels == (5, 6) and cfg.size == 8


def test_tiny_batch_overfits() -> None:
    torch.manual_seed(0)
    model = build_head("qfd", TINY_SPECS, **TINY)
    feats = {k: torch.randn(8, *v) for k, v in TINY_SPECS.items()}
    y = torch.linspace(0, 1, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(model(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_impossible_pairings_fail_before_training() -> None:
    with pytest.raises(HeadConfigError, match="feature map"):
        build_head("qfd", {"feature": (128,)})
    with pytest.raises(HeadConfigError, match="'feature'"):
        build_head("qfd", {"up0": (4, 4, 4), "feature": (128,)}, names=("up0", "feature"))
    with pytest.raises(HeadConfigError, match="one channel count per map"):
        QFD(QFDConfig(names=("a", "b"), in_channels=(3,)))
    with pytest.raises(HeadConfigError, match="unknown config fields"):
        build_head("qfd", TINY_SPECS, widht=3)
