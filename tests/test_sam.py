"""SAM encoder backbone: equal to ``SamPredictor`` on the same weights, official-file loading."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import nn

from extract.base import BackboneError
from extract.sam import build_sam_vit_b
from extract.weights import WeightsError, weights_sha256

TINY = {"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 2}
TINY_GLOBAL = (1,)


def _tiny_sam() -> Sam:
    """A whole tiny Sam model, built the way ``build_sam`` builds the real one."""
    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        img_size=64,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=4,
        out_chans=256,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=2,
        global_attn_indexes=TINY_GLOBAL,
    )
    for p in encoder.parameters():  # rel-pos tables start at zero: make them matter
        nn.init.normal_(p, std=0.05)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=32, num_heads=2),
        transformer_dim=256,
        iou_head_depth=1,
        iou_head_hidden_dim=8,
    )
    prompt = PromptEncoder(
        embed_dim=256, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
    )
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt,
        mask_decoder=decoder,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sam, Path]:
    sam = _tiny_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
    torch.save(sam.state_dict(), path)
    return sam, path


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (45, 45), dtype=np.uint8)
    return {
        "landscape": rng.integers(0, 256, (30, 53, 3), dtype=np.uint8),
        "portrait": rng.integers(0, 256, (70, 23, 3), dtype=np.uint8),
        "grayscale": np.repeat(gray[:, :, None], 3, axis=2),
    }


@pytest.mark.parametrize("kind", ["landscape", "portrait", "grayscale"])
def test_matches_sam_predictor(official: tuple[Sam, Path], kind: str) -> None:
    sam, path = official
    image = _images()[kind]
    model = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, **TINY)
    x, valid = model.preprocess(image)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    with torch.no_grad():
        ours = model.forward_features(x[None])["embed"]
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    assert torch.allclose(ours, predictor.get_image_embedding(), rtol=1e-5, atol=1e-6)
    h, w = predictor.input_size
    assert tuple(valid) == (-(-h // 16), -(-w // 16))


def test_declared_config_and_weights_hash(official: tuple[Sam, Path]) -> None:
    _, path = official
    model = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, **TINY)
    assert model.outputs == {"embed": (256, 4, 4)}
    assert model.arch_config()["global_attn_indexes"] == [1]
    assert model.preprocessing()["input_size"] == [64, 64]
    assert model.weights_sha256 == weights_sha256(path)
    assert not any(p.requires_grad for p in model.parameters())
    x, valid = model.preprocess(np.zeros((40, 20, 3), np.uint8))
    assert tuple(valid) == (4, 2)  # 64x32 after resize -> 4x2 cells of 16 px
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1)
    assert torch.allclose(x[:, 0, :32], -mean / torch.tensor([58.395, 57.12, 57.375]).view(3, 1))
    assert torch.equal(x[:, :, 32:], torch.zeros(3, 64, 32))  # padding after normalisation


def test_missing_encoder_key_is_an_error(official: tuple[Sam, Path], tmp_path: Path) -> None:
    sam, _ = official
    state = sam.state_dict()
    del state["image_encoder.neck.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"broken.pth.*missing keys: neck\.0\.weight"):
        build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, **TINY)


def test_builder_argument_errors() -> None:
    with pytest.raises(BackboneError, match="give a local checkpoint path"):
        build_sam_vit_b()
    with pytest.raises(BackboneError, match=r"unknown option\(s\) \['depht'\]"):
        build_sam_vit_b(random_init=True, depht=2)
