"""SAM-IQA heads: Fourier unit properties, shapes, gradients, masking, overfitting, switches."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from heads.distances import DISTANCES
from heads.fourier import FourierUnit
from heads.registry import build_from_config, build_head
from heads.sfem import SFEMConfig
from heads.specs import HeadConfigError

SPECS = {"embed": (8, 16, 16)}
TINY = {"width": 16, "scales": (1, 2), "pool_size": 4}


# Small models on 2 shared cores: one thread avoids oversubscription.
pytestmark = pytest.mark.usefixtures("one_thread")


def _identity_unit(channels: int) -> FourierUnit:
    unit = FourierUnit(channels, channels, norm=False, activation=False)
    with torch.no_grad():
        unit.conv.weight.copy_(torch.eye(2 * channels).view(2 * channels, 2 * channels, 1, 1))
    return unit


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_fourier_identity_reconstructs_input(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    assert torch.allclose(_identity_unit(3)(x), x, atol=1e-5)


def test_fourier_spectrum_interleaves_real_and_imaginary() -> None:
    x = torch.randn(1, 2, 6, 6)
    spec = torch.fft.rfft2(x, norm="ortho")
    stacked = FourierUnit(2, 2).spectrum(x)
    assert stacked.shape == (1, 4, 6, 4)
    assert torch.allclose(stacked[:, 1], spec[:, 0].imag)
    assert torch.allclose(stacked[:, 2], spec[:, 1].real)


def test_fourier_shift_changes_only_phase() -> None:
    x = torch.randn(1, 2, 8, 8)
    unit = FourierUnit(2, 2)

    def amplitude(t: torch.Tensor) -> torch.Tensor:
        s = unit.spectrum(t)  # (1, 4, 8, 5)
        return (s[:, 0::2] ** 2 + s[:, 1::2] ** 2).sqrt()

    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))
    assert torch.allclose(amplitude(shifted), amplitude(x), atol=1e-5)
    assert not torch.allclose(unit.spectrum(shifted), unit.spectrum(x), atol=1e-3)


ABLATIONS = [
    *[("sfem_nr", b, "l1") for b in (("spatial", "frequency"), ("spatial",), ("frequency",))],
    *[("sfem_fr", b, "l1") for b in (("spatial", "frequency"), ("spatial",), ("frequency",))],
    *[("sfem_fr", ("spatial", "frequency"), d) for d in sorted(set(DISTANCES) - {"l1"})],
]


@pytest.mark.parametrize(("name", "branches", "distance"), ABLATIONS)
def test_every_parameter_gets_a_gradient(
    name: str, branches: tuple[str, ...], distance: str
) -> None:
    torch.manual_seed(0)
    model = build_head(name, SPECS, branches=branches, distance=distance, **TINY)
    x = {"embed": torch.randn(3, 8, 16, 16)}
    ref = {"embed": torch.randn(3, 8, 16, 16)}
    valid = torch.tensor([[16, 16], [12, 16], [16, 9]])
    out = model(x, valid, ref)
    assert out.shape == (3,)
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("name", ["sfem_nr", "sfem_fr"])
def test_padded_cells_do_not_change_the_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_head(name, SPECS, **TINY).eval()
    x = torch.randn(2, 8, 16, 16)
    ref = torch.randn(2, 8, 16, 16)
    valid = torch.tensor([[12, 16], [16, 10]])
    base = model({"embed": x}, valid, {"embed": ref})
    noisy_x, noisy_ref = x.clone(), ref.clone()
    for t in (noisy_x, noisy_ref):
        t[0, :, 12:] = 100 * torch.randn_like(t[0, :, 12:])
        t[1, :, :, 10:] = 100 * torch.randn_like(t[1, :, :, 10:])
    again = model({"embed": noisy_x}, valid, {"embed": noisy_ref})
    assert torch.allclose(base, again, atol=1e-5)
    inside = noisy_x.clone()
    inside[0, :, :2] += 1.0
    assert not torch.allclose(model({"embed": inside}, valid, {"embed": noisy_ref})[0], base[0])


@pytest.mark.parametrize("distance", sorted(DISTANCES))
def test_fr_of_identical_pair_ignores_the_content(distance: str) -> None:
    torch.manual_seed(0)
    model = build_head("sfem_fr", SPECS, distance=distance, **TINY).eval()
    a, b = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16)
    # identical pairs give a distance of zero up to rounding (cos: 1 - cos(a, a) ~ 1e-7)
    assert torch.allclose(
        model({"embed": a}, None, {"embed": a}), model({"embed": b}, None, {"embed": b}),
        atol=1e-5,
    )


def test_tiny_batch_overfits() -> None:
    torch.manual_seed(0)
    model = build_head("sfem_nr", SPECS, **TINY)
    x = {"embed": torch.randn(8, 8, 16, 16)}
    y = torch.linspace(0, 1, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.l1_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_default_size_and_errors() -> None:
    model = build_head("sfem_nr", {"embed": (256, 64, 64)})
    # 70,657 with one BatchNorm for all scales; +2 x (2 x 32 + 2 x 64) for scales 2 and 4
    assert sum(p.numel() for p in model.parameters()) == 71_041
    with pytest.raises(HeadConfigError, match="feature map"):
        build_head("sfem_nr", {"feature": (128,)})
    with pytest.raises(HeadConfigError, match="branches"):
        SFEMConfig(branches=("wavelet",))
    with pytest.raises(HeadConfigError, match="reference"):
        build_head("sfem_fr", SPECS, **TINY)({"embed": torch.randn(1, 8, 16, 16)})
    with pytest.raises(HeadConfigError, match="distance must be one of"):
        SFEMConfig(distance="l3")
    with pytest.raises(HeadConfigError, match="sfem_fr only"):
        build_head("sfem_nr", SPECS, distance="cos", **TINY)


def test_distances_follow_their_definitions() -> None:
    torch.manual_seed(0)
    dist, ref = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(DISTANCES["l1"](dist, ref), (dist - ref).abs())
    torch.testing.assert_close(DISTANCES["l2"](dist, ref), (dist - ref).abs() ** 2)
    torch.testing.assert_close(DISTANCES["sub"](dist, ref), -DISTANCES["sub"](ref, dist))
    a, b = dist[0, :, 1, 2], ref[0, :, 1, 2]  # one position's channel vectors
    cos = DISTANCES["cos"](dist, ref)
    assert cos.shape == (2, 1, 3, 3)
    torch.testing.assert_close(cos[0, 0, 1, 2], 1 - a.dot(b) / (a.norm() * b.norm()))
    p, q = b.softmax(0), a.softmax(0)  # reference, distorted
    kl = DISTANCES["kl"](dist, ref)
    torch.testing.assert_close(kl[0, 0, 1, 2], (p * (p / q).log()).sum())
    assert (kl >= 0).all() and DISTANCES["kl"](dist, dist).abs().max() < 1e-6
    assert DISTANCES["cos"](2 * dist, dist).abs().max() < 1e-6  # scale-free


@pytest.mark.parametrize("name", ["sfem_nr", "sfem_fr"])
def test_config_round_trips_through_json(name: str) -> None:
    switches: dict[str, object] = {"branches": ("frequency",), "scales": (1, 2)}
    if name == "sfem_fr":
        switches["distance"] = "kl"
    model = build_head(name, SPECS, width=8, pool_size=4, **switches)
    stored = json.loads(json.dumps(dataclasses.asdict(model.config)))
    rebuilt = build_from_config(name, stored)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
