"""SD 1.5 backbone on a tiny diffusers folder saved here: composition, latent, prompt bank."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from extract.base import BackboneError  # noqa: E402
from extract.prompts import PromptBank  # noqa: E402
from extract.sd15 import build_sd15_unet, unet_up_features  # noqa: E402

BANK = {"qualities": ["bad", "good"], "scenes": ["animal"], "distortions": ["lens", "jitter"]}


def _vocab() -> dict[str, int]:
    chars = sorted(set(string.ascii_lowercase + string.digits + ",._-"))
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    return {t: i for i, t in enumerate(tokens)}


def _text_config() -> CLIPTextConfig:
    n = len(_vocab())
    return CLIPTextConfig(
        vocab_size=n, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, projection_dim=32,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )


def make_sd_folder(root: Path) -> Path:
    """A tiny random-weight SD 1.5-layout diffusers folder (tokenizer, text encoder, U-Net,
    VAE) saved the way the real one is, so the real loading code runs."""
    CLIPTokenizer(vocab=_vocab(), merges=[], model_max_length=128).save_pretrained(
        root / "tokenizer"
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(_text_config()).save_pretrained(root / "text_encoder")
    UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        norm_num_groups=8, sample_size=16, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).save_pretrained(root / "unet")
    AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, layers_per_block=1,
    ).save_pretrained(root / "vae")
    return root


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sd_folder(tmp_path_factory.mktemp("sd15"))


def _build(sd_dir: Path, **options: object) -> torch.nn.Module:
    opts = {"expected_vocab_size": len(_vocab()), "size": 64, "prompt_bank": BANK, **options}
    return build_sd15_unet(str(sd_dir), **opts)


def test_up_features_continue_to_the_unet_output(sd_dir: Path) -> None:
    model = _build(sd_dir)
    unet = model.unet
    latent = torch.randn(2, 4, 16, 16)
    context = model.prompt_embeds.expand(2, -1, -1)
    with torch.no_grad():
        ups = unet_up_features(unet, latent, 1, context)
        tail = unet.conv_out(unet.conv_act(unet.conv_norm_out(ups[-1])))
        reference = unet(latent, 1, encoder_hidden_states=context).sample
    assert torch.allclose(tail, reference, atol=1e-5)
    assert [tuple(u.shape[1:]) for u in ups] == [(64, 16, 16), (32, 16, 16)]


def test_latent_is_the_scaled_posterior_mean_and_outputs_match(sd_dir: Path) -> None:
    model = _build(sd_dir)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        direct = model.vae.encode(x).latent_dist.mean * model.vae.config.scaling_factor
        assert torch.equal(model.encode_latent(x), direct)
        a, b = model.forward_features(x), model.forward_features(x)
    assert {k: tuple(v.shape[1:]) for k, v in a.items()} == model.outputs
    assert model.outputs == {"up0": (64, 32, 32), "up1": (32, 32, 32)}
    assert all(torch.equal(a[k], b[k]) and torch.isfinite(a[k]).all() for k in a)


def test_prompt_bank_embeddings_are_the_projected_eos_feature(sd_dir: Path) -> None:
    model = _build(sd_dir)
    bank = PromptBank.from_options(BANK)
    assert model.prompt_embeds.shape == (4, 32)
    tok = CLIPTokenizer.from_pretrained(str(sd_dir / "tokenizer"))
    text = CLIPTextModelWithProjection.from_pretrained(str(sd_dir / "text_encoder")).eval()
    with torch.no_grad():
        one = text(**tok([bank.sentences()[3]], return_tensors="pt")).text_embeds[0]
    assert torch.allclose(model.prompt_embeds[3], one, atol=1e-5)
    assert model.arch_config()["prompts"] == {"n": 4, "sha256": bank.sha256()}
    json.dumps(model.arch_config())


def test_default_bank_is_the_reference_codes() -> None:
    sentences = PromptBank().sentences()
    assert len(sentences) == 5 * 9 * 33 == 1485
    assert (
        sentences[0]
        == "a photo of a animal with jpeg2000 compression artifacts, which is of bad quality"
    )
    assert sentences[1].endswith("with jpeg compression artifacts, which is of bad quality")


def test_mean_pooling_and_missing_projection(sd_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "clip"
    CLIPTextModel(_text_config()).save_pretrained(plain)
    CLIPTokenizer.from_pretrained(str(sd_dir / "tokenizer")).save_pretrained(plain)
    with pytest.raises(BackboneError, match="text_projection"):
        _build(sd_dir, text_model=str(plain))
    model = _build(sd_dir, text_model=str(plain), pooling="mean")
    assert model.prompt_embeds.shape == (4, 32) and model.arch_config()["pooling"] == "mean"


def test_tokenizer_trap_missing_folder_and_input_range(sd_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="vocabulary has 82 entries, expected 49408"):
        build_sd15_unet(str(sd_dir), size=64, prompt_bank=BANK)
    with pytest.raises(BackboneError, match="nowhere/vae not found"):
        build_sd15_unet(str(tmp_path / "nowhere"))
    model = _build(sd_dir, input_range="-1,1")
    x, valid = model.preprocess(np.full((10, 30, 3), 255, np.uint8))
    assert (
        x.shape == (3, 64, 64) and torch.equal(x, torch.ones_like(x)) and tuple(valid) == (32, 32)
    )
    assert model.preprocessing()["input_range"] == [-1, 1]
