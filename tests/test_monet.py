"""MoNet backbone: reference parameter count, PromptIQA checkpoint loading, tiny forward."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.base import BackboneError
from extract.monet import MoNet, MoNetConfig, build_monet
from extract.monet_parts import MAL, TokenAttention, ViewSelfAttention
from extract.weights import WeightsError

TINY = {"img_size": 64, "embed_dim": 16, "num_heads": 2, "cnn": ((8, 3, 2), (8, 3, 1))}


def _reference_key(key: str) -> str:
    """Our key -> the PromptIQA checkpoint's (the inverse of ``promptiqa_key_map``)."""
    key = re.sub(r"^mals\.", "MALs.", key)
    key = re.sub(r"\.view_attention\.(\d+)\.(q|k|v)\.", r".attention_module.\1.\2Conv.", key)
    key = key.replace(".view_attention.", ".attention_module.")
    key = re.sub(r"_attention\.(q|k|v)\.", r"_attention.c_\1.", key)
    return "module." + key


def test_full_size_parameter_count_matches_the_reference() -> None:
    with torch.device("meta"):
        model = MoNet(MoNetConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == 315_360_543
    assert count(model.vit) == 85_806_336
    assert [count(m) for m in model.mals] == [60_786_628] * 3
    assert count(model.fusion_mal) == 34_749_651
    assert count(model.block) == 7_085_568
    assert count(model.cnn) == 5_359_104


def test_tiny_forward_shapes_determinism_and_tokens() -> None:
    model = build_monet(random_init=True, tokens=True, **TINY)
    x, valid = model.preprocess(np.full((30, 50, 3), 255, np.uint8))
    assert x.shape == (3, 64, 64) and torch.allclose(x, torch.ones_like(x))  # (1 - .5) / .5
    assert tuple(valid) == (8, 8)
    batch = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model.forward_features(batch), model.forward_features(batch)
    assert {k: tuple(v.shape[1:]) for k, v in a.items()} == model.outputs
    assert model.outputs == {"feature": (8,), "tokens": (4, 64, 16)}
    assert all(torch.equal(a[k], b[k]) and torch.isfinite(a[k]).all() for k in a)
    with torch.no_grad():
        direct = model.vit_tokens(batch)
    assert torch.equal(a["tokens"][:, 2], direct[2])


def test_loads_a_promptiqa_checkpoint(tmp_path: Path) -> None:
    source = build_monet(random_init=True, **TINY)
    for p in source.parameters():  # gamma starts at 0: give every weight a value
        torch.nn.init.normal_(p, std=0.02)
    state = {_reference_key(k): v for k, v in source.state_dict().items()}
    assert "module.MALs.0.attention_module.3.qConv.weight" in state
    assert "module.fusion_mal.feature_attention.c_v.bias" in state
    state["module.score_block.0.weight"] = torch.zeros(64, 128)  # prompt head: dropped
    state["module.blocks.0.norm1.weight"] = torch.zeros(128)
    path = tmp_path / "best_model.pth.tar"
    torch.save({"state_dict": state, "prompt_num": 10}, path)
    loaded = build_monet(str(path), **TINY)
    batch = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        source.eval()
        assert torch.equal(loaded(batch)["feature"], source(batch)["feature"])
    del state["module.cnn.4.weight"]
    torch.save({"state_dict": state}, tmp_path / "short.pth.tar")
    with pytest.raises(WeightsError, match=r"short.pth.tar.*missing keys: cnn\.4\.weight"):
        build_monet(str(tmp_path / "short.pth.tar"), **TINY)


def test_parts_on_known_inputs() -> None:
    att = ViewSelfAttention(16)
    x = torch.randn(2, 16, 3, 3)
    assert torch.equal(att(x), x)  # gamma = 0: identity at initialisation
    tok = TokenAttention(4).eval()
    for lin in (tok.q, tok.k, tok.v):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    y = torch.randn(1, 5, 4)
    assert torch.allclose(tok(y), y)  # v = 0: only the residual remains
    mal = MAL(16, 4, 3)
    assert mal(torch.randn(4, 2, 16, 3, 3)).shape == (2, 16, 9)


def test_bad_cnn_or_option() -> None:
    with pytest.raises(BackboneError, match="turn a 8 grid into 2, not 1"):
        build_monet(random_init=True, **{**TINY, "cnn": ((8, 3, 3),)})
    with pytest.raises(BackboneError, match=r"unknown option\(s\) \['heads'\]"):
        build_monet(random_init=True, heads=3)


def test_the_opencv_resize_matches_cv2_and_is_in_the_fingerprint() -> None:
    """PromptIQA's loaders resize with cv2.resize(..., INTER_CUBIC); PIL's bicubic
    antialiases when shrinking, so the two give other pixels (measured on a photograph)."""
    import cv2
    from skimage import data as skdata

    from extract.config import ExtractConfig, build_backbone, fingerprint_fields

    photo = np.ascontiguousarray(skdata.astronaut())  # (512, 512, 3) uint8
    small = {**TINY, "img_size": 224, "cnn": ((8, 5, 4), (8, 3, 4))}
    cv = build_monet(random_init=True, resize="opencv_cubic", **small)
    pil = build_monet(random_init=True, **small)
    want = cv2.resize(photo, (224, 224), interpolation=cv2.INTER_CUBIC)
    got = cv.prepare(photo)[0].permute(1, 2, 0).numpy()  # (224, 224, 3) uint8
    assert np.array_equal(got, want)  # exactly OpenCV's pixels
    other = pil.prepare(photo)[0].permute(1, 2, 0).numpy().astype(np.int16)
    diff = np.abs(other - want.astype(np.int16))
    assert diff.mean() > 2.0 and diff.max() > 60  # measured: mean 3.04, max 94 levels
    rect = np.ascontiguousarray(photo[:300, :450])  # a squash of a non-square image too
    want = cv2.resize(rect, (224, 224), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(cv.prepare(rect)[0].permute(1, 2, 0).numpy(), want)
    assert pil.preprocessing()["resize"] == "squash_pil_bicubic"  # unchanged default
    assert cv.preprocessing()["resize"] == "squash_opencv_inter_cubic"
    assert "resize" not in pil.arch_config()  # older stores keep their fingerprints
    configs = [ExtractConfig(backbone="monet", random_init=True,
                             arch=tuple(sorted({**small, **extra}.items())))
               for extra in ({}, {"resize": "opencv_cubic"})]
    a, b = (fingerprint_fields(build_backbone(c), c) for c in configs)
    assert a["preprocessing"] != b["preprocessing"] and a["arch"] == b["arch"]
    with pytest.raises(BackboneError, match="resize must be one of"):
        build_monet(random_init=True, resize="lanczos", **TINY)
