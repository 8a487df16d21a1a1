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
from extract.sam import PIXEL_STD, build_sam_vit_b, build_sam_vit_h
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


def test_wrong_variant_names_the_right_one(tmp_path: Path) -> None:
    # the keys that tell SAM variants apart: patch width and block count (vit_b: 768 x 12)
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(12)})
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"looks like SAM vit_b .*use --backbone sam_vit_b"):
        build_sam_vit_h(str(path))
    torch.save({"model": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="not an official SAM checkpoint"):
        build_sam_vit_h(str(path))


def test_builder_argument_errors() -> None:
    with pytest.raises(BackboneError, match="give a local checkpoint path"):
        build_sam_vit_b()
    with pytest.raises(BackboneError, match=r"unknown option\(s\) \['depht'\]"):
        build_sam_vit_b(random_init=True, depht=2)


# ---------------------------------------------------------------- SDPA attention

KERNELS = ("sdpa", "sdpa_qk")
PADDED = {"img_size": 80, "embed_dim": 32, "depth": 2, "num_heads": 2, "window_size": 3}
FP32_TOL = 1e-5  # max |SDPA - reference| / max |reference| in float32 (measured: ~5e-7)
BF16_TOL = 2e-2  # relative L2 error of bf16 autocast vs the float32 reference (measured: 4e-3)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", ["landscape", "portrait", "grayscale"])
def test_sdpa_kernels_match_sam_predictor(
    official: tuple[Sam, Path], kernel: str, kind: str
) -> None:
    sam, path = official
    image = _images()[kind]
    model = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, attention=kernel, **TINY)
    assert model.kernel_config() == {"attention": kernel}
    x, _ = model.preprocess(image)
    with torch.no_grad():
        ours = model.forward_features(x[None])["embed"]
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    ref = predictor.get_image_embedding()
    assert (ours - ref).abs().max() <= FP32_TOL * ref.abs().max()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    ("hw", "heads", "dim"), [((14, 14), 2, 32), ((5, 7), 4, 64), ((8, 8), 2, 16)]
)
def test_sdpa_attention_equals_reference_module(
    kernel: str, hw: tuple[int, int], heads: int, dim: int
) -> None:
    from segment_anything.modeling.image_encoder import Attention

    from extract.sam_attention import SdpaAttention

    torch.manual_seed(1)
    ref = Attention(dim, heads, qkv_bias=True, use_rel_pos=True, input_size=hw)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)  # large rel-pos tables: the bias dominates
    ours = SdpaAttention(ref, kernel)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, *hw, dim)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert (got - want).abs().max() <= FP32_TOL * want.abs().max()


def test_sdpa_mask_slices_equal_one_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    from segment_anything.modeling.image_encoder import Attention

    import extract.sam_attention as sa

    torch.manual_seed(2)
    ref = Attention(16, 2, qkv_bias=True, use_rel_pos=True, input_size=(6, 6))
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(5, 6, 6, 16)
    with torch.no_grad():
        whole = sa.SdpaAttention(ref, "sdpa")(x)
        monkeypatch.setattr(sa, "MASK_BUDGET_BYTES", 2 * 2 * 36 * 36 * 4)  # two images a slice
        sliced = sa.SdpaAttention(ref, "sdpa")(x)
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-6)


def _padded_model(path: Path | None = None, **kw: object) -> object:
    torch.manual_seed(3)
    model = build_sam_vit_b(random_init=True, global_attn_indexes=(1,), **PADDED, **kw)
    for p in model.parameters():
        nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("kernel", KERNELS)
def test_bf16_within_tolerance_of_fp32_reference(kernel: str, one_thread: None) -> None:
    model = _padded_model()
    x, _ = model.preprocess(_images()["portrait"])
    with torch.no_grad():
        model.set_attention("reference")
        ref = model.forward_features(x[None])["embed"]
        with torch.autocast("cpu", torch.bfloat16):
            ref_bf16 = model.forward_features(x[None])["embed"].float()
        model.set_attention(kernel)
        with torch.autocast("cpu", torch.bfloat16):
            ours = model.forward_features(x[None])["embed"]
    error = ((ours.float() - ref).norm() / ref.norm()).item()
    reference_error = ((ref_bf16 - ref).norm() / ref.norm()).item()
    assert error <= BF16_TOL
    assert error <= 1.5 * reference_error + 1e-3  # no worse than SAM's own attention in bf16


def test_switching_kernels_keeps_weights(official: tuple[Sam, Path]) -> None:
    _, path = official
    model = build_sam_vit_b(
        str(path), global_attn_indexes=TINY_GLOBAL, attention="reference", **TINY
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_attention("sdpa_qk")
    assert model.kernel_config() == {"attention": "sdpa_qk"}
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.set_attention("reference")
    assert model.kernel_config() == {}
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        model.set_attention("flash")


# ---------------------------------------------------------------- prepare / finish


def test_prepare_then_finish_equals_preprocess(official: tuple[Sam, Path]) -> None:
    _, path = official
    model = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, **TINY)
    images = list(_images().values())
    prepared = [model.prepare(im) for im in images]
    assert all(t.dtype == torch.uint8 and t.shape[0] == 3 for t, _ in prepared)
    batch = model.finish([t for t, _ in prepared])
    for i, image in enumerate(images):
        x, valid = model.preprocess(image)
        assert torch.equal(batch[i], x)  # bit for bit: same numbers on either path
        assert tuple(valid) == tuple(prepared[i][1])


def test_device_resize_is_close_to_pil_and_recorded(official: tuple[Sam, Path]) -> None:
    _, path = official
    pil = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, **TINY)
    dev = build_sam_vit_b(str(path), global_attn_indexes=TINY_GLOBAL, resize="device", **TINY)
    assert dev.preprocessing()["resize"] != pil.preprocessing()["resize"]
    rng = np.random.default_rng(5)
    smooth = np.kron(rng.integers(0, 256, (5, 9, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    raw, valid = dev.prepare(smooth)
    assert tuple(raw.shape) == (3, 40, 72)  # native size: resized on the device
    x_pil, valid_pil = pil.preprocess(smooth)
    x_dev = dev.finish([raw])[0]
    assert tuple(valid) == tuple(valid_pil)
    grey_levels = (x_dev - x_pil).abs() * torch.tensor(PIXEL_STD).view(3, 1, 1)
    assert grey_levels.max() <= 1 + 1e-4 and grey_levels.mean() < 0.05  # +-1 rounding only
    with pytest.raises(BackboneError, match="resize must be one of"):
        build_sam_vit_b(random_init=True, resize="gpu", **TINY)
