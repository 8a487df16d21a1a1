"""The ResNet-50 backbone: torchvision checkpoints load strictly, features match torchvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.resnet import Bottleneck, ResNet

from extract.resnet import build_resnet50
from extract.weights import WeightsError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"img_size": 64, "blocks": (1, 1, 1, 1), "width_per_group": 16}


def _torchvision_checkpoint(path: Path) -> ResNet:
    """A whole torchvision ResNet (fc and layer4 included), saved as its state dict."""
    torch.manual_seed(1)
    net = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), path)
    return net


def test_checkpoint_loads_and_features_match_torchvision(tmp_path: Path) -> None:
    net = _torchvision_checkpoint(tmp_path / "resnet50.pth")
    model = build_resnet50(str(tmp_path / "resnet50.pth"), layers=["layer2", "layer3"], **TINY)
    assert len(model.weights_sha256) == 64 and not hasattr(model.resnet, "layer4")
    x = torch.randn(2, 3, 64, 64)
    expected = create_feature_extractor(net, {"layer2": "layer2", "layer3": "layer3"})(x)
    with torch.no_grad():
        got = model.forward_features(x)
    assert model.outputs == {"layer2": (512, 8, 8), "layer3": (1024, 4, 4)}
    for key in ("layer2", "layer3"):
        torch.testing.assert_close(got[key], expected[key])


def test_grid_and_valid_cells_match_sam() -> None:
    model = build_resnet50(None, random_init=True, blocks=(1, 1, 1, 1), width_per_group=16)
    assert model.outputs == {"layer3": (1024, 64, 64)}  # SAM ViT-H: embed (256, 64, 64)
    x, valid = model.preprocess(np.zeros((480, 640, 3), dtype=np.uint8))
    assert tuple(x.shape) == (3, 1024, 1024) and valid.tolist() == [48, 64]
    assert torch.allclose(x[:, 800:], torch.zeros(()))  # bottom padding, after normalising


def test_bad_checkpoints_and_options_fail_clearly(tmp_path: Path) -> None:
    state = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16).state_dict()
    state["layer1.0.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="unexpected keys: layer1.0.extra.weight"):
        build_resnet50(str(tmp_path / "odd.pth"), **TINY)
    with pytest.raises(WeightsError, match="shape mismatch"):
        build_resnet50(str(tmp_path / "odd.pth"), img_size=64)  # ResNet-50's own blocks
    with pytest.raises(ValueError, match="layers must be a subset"):
        build_resnet50(None, random_init=True, layers=["layer5"], **TINY)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_resnet50(None, random_init=True, **{**TINY, "img_size": 100})


def test_torchvision_resnet50_state_dict_fits() -> None:
    from torchvision.models import resnet50

    from extract.resnet import _kept_keys

    official = resnet50(weights=None).state_dict()
    ours = build_resnet50(None, random_init=True).resnet.state_dict()
    keep = _kept_keys(3)
    kept = {k: tuple(v.shape) for k, v in official.items() if keep(k) is not None}
    assert kept == {k: tuple(v.shape) for k, v in ours.items()}
