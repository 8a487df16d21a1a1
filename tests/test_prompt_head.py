"""PromptIQA head: reference parameter count, gradients, leave-one-out prompts, flips."""

from __future__ import annotations

import pytest
import torch
from _tiny import PROMPT_TINY as TINY
from scipy.stats import spearmanr

from heads.augment import augment_labels, interval_select
from heads.prompt import PromptConfig, PromptHead, leave_one_out
from heads.registry import build_head
from heads.specs import HeadConfigError

# Small models on 2 shared cores: one thread avoids oversubscription.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_parameter_count() -> None:
    model = build_head("prompt", {"feature": (128,)})
    assert sum(p.numel() for p in model.parameters()) == 2_798_657
    assert isinstance(model.project, torch.nn.Identity)


def test_leave_one_out_indices() -> None:
    idx = leave_one_out(4)
    assert idx.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


@pytest.mark.parametrize("specs", [{"feature": (12,)}, {"embed": (6, 5, 5)}])
def test_every_parameter_gets_a_gradient(specs: dict[str, tuple[int, ...]]) -> None:
    torch.manual_seed(0)
    model = build_head("prompt", specs, **TINY)
    name, shape = next(iter(specs.items()))
    feats = {name: torch.randn(5, *shape)}
    valid = torch.tensor([[5, 5], [3, 5], [5, 4], [5, 5], [2, 2]]) if len(shape) == 3 else None
    out = model.forward_group(feats, torch.rand(5), valid)
    assert out.shape == (5,)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _head_and_group(n: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """A tiny PromptIQA head on 16-d vectors (eval mode), and a group of ``n`` with labels."""
    torch.manual_seed(0)
    model = build_head("prompt", {"feature": (16,)}, **TINY).eval()
    return model, {"feature": torch.randn(n, 16)}, torch.rand(n)


def test_own_label_never_enters_own_prompt() -> None:
    model, feats, scores = _head_and_group(6)
    base = model.forward_group(feats, scores)
    changed = scores.clone()
    changed[2] = 1 - changed[2]
    again = model.forward_group(feats, changed)
    assert torch.allclose(base[2], again[2])
    assert not torch.allclose(base[0], again[0])


def test_cached_prompt_matches_group_pass() -> None:
    model, feats, scores = _head_and_group(4)
    group = model.forward_group(feats, scores)
    prompt = model.forward_prompt({"feature": feats["feature"][1:]}, scores[1:])
    assert prompt.shape == (1, 3, 16)
    single = model.predict({"feature": feats["feature"][:1]}, prompt)
    assert torch.allclose(single, group[:1], atol=1e-6)
    with pytest.raises(HeadConfigError, match="prompt="):
        model(feats)


@pytest.mark.slow
def test_prediction_follows_a_flipped_prompt() -> None:
    """Trained with label flipping (p=0.5), the head reads the orientation from its prompt.

    Toy: four feature prototypes with fixed labels; a flipped group reverses them, so only
    the prompt tells the head which way round the labels are.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    protos = 3 * torch.nn.functional.normalize(torch.randn(4, 16), dim=1)
    which = torch.arange(64) % 4
    feats = protos[which] + 0.1 * torch.randn(64, 16)
    labels = (which.float() + 0.5) / 4
    model = PromptHead(PromptConfig(in_dim=16, **{**TINY, "dropout": 0.0}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(1500):
        idx = torch.randperm(48, generator=gen)[:10]
        y = augment_labels(labels[idx], gen, flip_p=0.5)
        loss = (model.forward_group({"feature": feats[idx]}, y) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pick = interval_select(labels[:48], 8)
    test = {"feature": feats[48:]}
    with torch.no_grad():
        upright = model.forward_prompt({"feature": feats[pick]}, labels[pick])
        flipped = model.forward_prompt({"feature": feats[pick]}, 1 - labels[pick])
        up = spearmanr(model.predict(test, upright), labels[48:])[0]
        down = spearmanr(model.predict(test, flipped), labels[48:])[0]
    assert up > 0.8
    assert down < -0.8
