"""SFEM normalisation: per-scale BatchNorm, statistics over valid cells, old checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heads.fourier import FourierUnit
from heads.norms import ScaleBatchNorm
from heads.registry import build_head

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
SPECS = {"embed": (8, SIZE, SIZE)}
DEFAULT_SCALES = {"width": 16, "pool_size": 4}  # scales left at the default (1, 2, 4)


def _batch(n: int, size: int = SIZE) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return {"embed": torch.randn(n, 8, size, size)}, {"embed": torch.randn(n, 8, size, size)}


@pytest.mark.parametrize(("name", "padded"), [("sfem_nr", False), ("sfem_fr", True)])
def test_train_and_eval_agree_once_running_statistics_converge(name: str, padded: bool) -> None:
    torch.manual_seed(0)
    model = build_head(name, {"embed": (8, 16, 16)}, **DEFAULT_SCALES)
    assert model.config.scales == (1, 2, 4)
    x, ref = _batch(8, 16)
    valid = torch.tensor([[16, 12]] * 4 + [[12, 16]] * 4) if padded else None
    y = torch.linspace(0, 1, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):  # a few steps so that predictions live on the [0, 1] targets
        opt.zero_grad()
        nn.functional.l1_loss(model(x, valid, ref), y).backward()
        opt.step()
    with torch.no_grad():
        for _ in range(100):  # momentum 0.1: running statistics within 3e-5 of the batch's
            train_out = model(x, valid, ref)
        eval_out = model.eval()(x, valid, ref)
    # One BatchNorm shared by the scales: gaps of 0.24-0.34 here. Per scale, what remains
    # is BatchNorm's unbiased running variance against the biased batch variance: the
    # scale-4 copy has 4x4 cells per row, so n / (n - 1) = 1.008 (gaps of 1.5e-3 - 5e-3).
    assert (train_out - eval_out).abs().max() < 0.02


def _running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" in k}


@pytest.mark.parametrize("name", ["sfem_nr", "sfem_fr"])
def test_padded_cells_do_not_enter_the_statistics(name: str) -> None:
    torch.manual_seed(0)
    models = [build_head(name, SPECS, **DEFAULT_SCALES) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    x, ref = _batch(4)
    crop = {"embed": x["embed"][:, :, :24]}, {"embed": ref["embed"][:, :, :24]}
    for t in (x["embed"], ref["embed"]):  # noise in the padded rows 24..31 must not count
        t[:, :, 24:] = 50 * torch.randn_like(t[:, :, 24:])
    with torch.no_grad():
        models[0](*crop[:1], None, crop[1])  # (4, 8, 24, 32): nothing padded
        models[1](x, torch.tensor([[24, SIZE]] * 4), ref)  # (4, 8, 32, 32): 25 % padded
    cropped, padded = _running_stats(models[0]), _running_stats(models[1])
    assert cropped.keys() == padded.keys() and len(cropped) >= 6
    for key in cropped:
        torch.testing.assert_close(padded[key], cropped[key], rtol=1e-4, atol=1e-5, msg=key)


def test_fourier_unit_transforms_each_row_on_its_valid_region() -> None:
    torch.manual_seed(0)
    unit = FourierUnit(3, 4)
    x = torch.randn(3, 3, 10, 12)
    valid = torch.tensor([[10, 12], [7, 12], [10, 5]])
    with torch.no_grad():
        out = unit(x, valid)  # train mode: statistics pooled over the three valid regions
        unit.eval()
        out, again = unit(x, valid), unit(x + 9 * (1 - _mask(valid, 10, 12)), valid)
    torch.testing.assert_close(out, again)
    for i, (h, w) in enumerate(valid.tolist()):
        torch.testing.assert_close(out[i : i + 1, :, :h, :w], unit(x[i : i + 1, :, :h, :w]))
        assert out[i, :, h:].abs().sum() == 0 and out[i, :, :, w:].abs().sum() == 0


def _mask(valid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    rows = torch.arange(h).view(1, 1, h, 1) < valid[:, 0].view(-1, 1, 1, 1)
    cols = torch.arange(w).view(1, 1, 1, w) < valid[:, 1].view(-1, 1, 1, 1)
    return (rows & cols).float()  # (B, 1, H, W)


def test_valid_cell_statistics_match_batchnorm2d_on_the_valid_cells() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6, 7) * 3 + 1
    valid = torch.tensor([[6, 7], [3, 7], [6, 2], [3, 7]])
    picked = x.permute(0, 2, 3, 1)[_mask(valid, 6, 7)[:, 0].bool()]  # (N, C) valid cells
    ref, ours = nn.BatchNorm2d(5), ScaleBatchNorm(5, 2)
    expect = ref(picked.reshape(-1, 5, 1, 1)).reshape(-1, 5)  # (N, C)
    got = ours(x, 1, valid).permute(0, 2, 3, 1)[_mask(valid, 6, 7)[:, 0].bool()]
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours[1], key), getattr(ref, key))
    assert ours[0].num_batches_tracked == 0  # the other scale's statistics are untouched
    # spectra of several sizes: pooled statistics, as over their concatenated cells
    parts = [torch.randn(2, 5, 4, 3), torch.randn(3, 5, 2, 5) + 2]
    ref2, ours2 = nn.BatchNorm2d(5), ScaleBatchNorm(5, 1)
    flat = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, 5) for p in parts])  # (N, C)
    ref2(flat.reshape(-1, 5, 1, 1))
    ours2.parts(parts, 0)
    torch.testing.assert_close(ours2[0].running_var, ref2.running_var)
    torch.testing.assert_close(ours2[0].running_mean, ref2.running_mean)


def _legacy(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the first release wrote it: one BatchNorm where now one per scale."""
    out = dict(state)
    for prefix, module in model.named_modules():
        if isinstance(module, ScaleBatchNorm):
            for key in list(out):
                if key.startswith(f"{prefix}."):
                    index, _, param = key[len(prefix) + 1 :].partition(".")
                    value = out.pop(key)
                    if index == "0":
                        out[f"{prefix}.{param}"] = value
    return out


@pytest.mark.parametrize("name", ["sfem_nr", "sfem_fr"])
def test_checkpoints_with_one_shared_batchnorm_still_load(name: str) -> None:
    torch.manual_seed(0)
    model = build_head(name, SPECS, **DEFAULT_SCALES)
    x, ref = _batch(4)
    with torch.no_grad():
        model(x, None, ref)  # non-trivial running statistics
    legacy = _legacy(model.state_dict(), model)
    assert {"sfem.stem.1.running_var", "sfem.branches.spatial.1.weight",
            "sfem.branches.frequency.fourier.norm.running_mean"} <= set(legacy)
    loaded = build_head(name, SPECS, **DEFAULT_SCALES)
    loaded.load_state_dict(legacy, strict=True)
    for module in model.modules():  # what the shared BatchNorm did: scale 0's for all
        if isinstance(module, ScaleBatchNorm):
            for bn in list(module)[1:]:
                bn.load_state_dict(module[0].state_dict())
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x, None, ref), model(x, None, ref))
