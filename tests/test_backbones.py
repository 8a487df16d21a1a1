"""Every registered backbone in a tiny random-weight configuration honours the contract."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from extract.base import Backbone  # noqa: E402
from extract.registry import BACKBONES, get_backbone  # noqa: E402

SAM_TINY = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 2}
TINY: dict[str, dict[str, object]] = {
    "sam_vit_h": {**SAM_TINY, "global_attn_indexes": (1,)},
    "sam_vit_l": {**SAM_TINY, "global_attn_indexes": (0, 1)},
    "sam_vit_b": {**SAM_TINY, "global_attn_indexes": (1,)},
    "sd15_unet": {
        "size": 64,
        "prompt_bank": {"qualities": ["bad"], "scenes": ["night"], "distortions": ["lens"]},
        "unet": {
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "norm_num_groups": 8,
            "sample_size": 16,
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        },
        "vae": {
            "block_out_channels": (32, 64),
            "norm_num_groups": 8,
            "layers_per_block": 1,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
        },
    },
    "monet": {
        "img_size": 64,
        "embed_dim": 16,
        "num_heads": 2,
        "cnn": ((8, 3, 2), (8, 3, 1)),
        "tokens": True,
    },
    "nss": {"size": 64, "grid": 16},
    "nss_ml": {"size": 64, "grid": 16},
    "resnet50": {"img_size": 64, "blocks": (1, 1, 1, 1), "width_per_group": 16},
}


def test_every_registered_backbone_has_a_tiny_config() -> None:
    assert set(TINY) == set(BACKBONES)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_contract(name: str) -> None:
    torch.manual_seed(0)
    model = get_backbone(name)(None, random_init=True, **TINY[name])
    assert isinstance(model, Backbone) and model.name == name
    json.dumps([model.arch_config(), model.preprocessing(), model.weights_sha256])
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((40, 70), (90, 33))]
    inputs = [model.preprocess(im) for im in images]
    size = tuple(model.preprocessing()["input_size"])
    for x, valid in inputs:
        assert x.dtype == torch.float32 and tuple(x.shape) == (3, *size)
        assert valid.shape == (2,) and (valid >= 1).all()
    batch = torch.stack([x for x, _ in inputs])
    with torch.no_grad():
        first, second = model.forward_features(batch), model.forward_features(batch)
    assert set(first) == set(model.outputs)
    for key, shape in model.outputs.items():
        assert tuple(first[key].shape) == (2, *shape) and first[key].dtype == torch.float32
        assert torch.isfinite(first[key]).all() and torch.equal(first[key], second[key])
    assert not any(p.requires_grad for p in model.parameters())


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(KeyError, match="did you mean sam_vit_h"):
        get_backbone("sam_vit_hh")
    with pytest.raises(KeyError, match="known: sam_vit_h"):
        get_backbone("resnet")
