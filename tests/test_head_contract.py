"""One contract every registered head passes (``heads.registry.HEADS``), timm-style.

A head class declares ``tiny_config`` (its smallest sensible instance) and
``example_specs`` (the store arrays it reads); from those this suite checks, for every
head: the protocol is declared, input sizes come from the store specs, the output has
one score per row, every parameter gets a gradient, a tiny batch can be overfitted, and
a checkpoint round trip gives the same predictions. A new head needs no new test here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from heads import protocols
from heads.checkpoint import TrainedOn, load_head, save_checkpoint
from heads.losses import head_loss
from heads.registry import HEADS, build_head, head_class, make_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(specs: dict, n: int, seed: int) -> tuple[dict, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = {k: torch.randn(n, *shape, generator=gen) for k, shape in specs.items()}
    big = max((s[1:] for s in specs.values() if len(s) == 3), default=(1, 1))
    valid = torch.tensor([list(big)] * n)
    return feats, valid


def _predict(model, feats, valid, ref, scores):
    if protocols.is_grouped(model):
        return protocols.group_forward(model, feats, scores, valid)
    return protocols.predict(model, feats, valid, ref)


def _make(name: str, seed: int = 0):
    cls = head_class(name)
    torch.manual_seed(seed)
    return build_head(name, cls.example_specs, **cls.tiny_config), cls


@pytest.mark.parametrize("name", sorted(HEADS))
def test_declares_what_the_package_needs(name: str) -> None:
    cls = head_class(name)
    assert protocols.kind_of(cls) in protocols.KINDS
    assert dataclasses.is_dataclass(cls.config_cls)
    assert cls.default_loss is not None and cls.train_defaults.epochs >= 1
    config = make_config(name, cls.example_specs, **cls.tiny_config)
    fixed = cls.input_fields(cls.example_specs, cls.tiny_config)
    assert {k: getattr(config, k) for k in fixed} == fixed  # sizes come from the store


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model, cls = _make(name)
    feats, valid = _batch(cls.example_specs, 6, 1)
    ref = _batch(cls.example_specs, 6, 2)[0] if protocols.needs_ref(model) else None
    scores = torch.rand(6)
    model.train()
    out = _predict(model, feats, valid, ref, scores)
    assert out.shape == (6,)
    head_loss(out, scores, cls.default_loss).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not dead, dead


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_tiny_batch_overfits(name: str) -> None:
    model, cls = _make(name)
    feats, valid = _batch(cls.example_specs, 8, 3)
    ref = _batch(cls.example_specs, 8, 4)[0] if protocols.needs_ref(model) else None
    scores = torch.linspace(0.1, 0.9, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = head_loss(_predict(model, feats, valid, ref, scores), scores, cls.default_loss)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.25 * first, (first, loss.item())


@pytest.mark.parametrize("name", sorted(HEADS))
def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    model, cls = _make(name)
    model.eval()
    feats, valid = _batch(cls.example_specs, 5, 5)
    ref = _batch(cls.example_specs, 5, 6)[0] if protocols.needs_ref(model) else None
    prompt = None
    if protocols.is_grouped(model):
        prompt = protocols.embed_prompt(model, feats, torch.rand(5), valid)
    with torch.no_grad():
        want = protocols.predict(model, feats, valid, ref, prompt)
    save_checkpoint(tmp_path / "m.pt", model, head=name,
                    trained_on=TrainedOn(cls.example_specs, "fp"), epoch=0)
    again, ckpt = load_head(tmp_path / "m.pt", store_fingerprint="fp")
    with torch.no_grad():
        got = protocols.predict(again.eval(), feats, valid, ref, prompt)
    assert ckpt["head"] == name and torch.allclose(got, want)
