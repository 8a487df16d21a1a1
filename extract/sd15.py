"""Stable Diffusion 1.5 (VAE + U-Net at t=1) as a frozen stage-1 backbone, DP-IQA style.

Follows DP-IQA (Fu et al., arXiv 2405.19996; repository ``RomGai/DP-IQA``,
``iqa_models/dpiqa.py``, ``datasets_in_the_wild.py``): the image is squash-resized to
512x512, kept in [0, 1] (the reference's choice; SD's own [-1, 1] is an option), encoded
by the VAE, scaled by ``scaling_factor``, and run through the U-Net at timestep 1 with no
noise, conditioned on the constant prompt bank (``extract.prompts``: one token per
sentence, 1485 tokens). Outputs are the four up-block outputs ``up0..up3`` (1280x16x16,
1280x32x32, 640x64x64, 320x64x64 at 512 px).

Deviations: the latent is the VAE posterior **mean**, not a random sample, so features
are deterministic; the up-block outputs come from a short method that composes the
U-Net's public submodules (no copy of diffusers' forward, no hooks) and stops after the
last up block; the prompt embeddings are computed at build time from local files and kept
as a buffer. With ``random_init`` the U-Net and VAE get SD 1.5's architecture with random
weights and the prompt embeddings are seeded random vectors (no tokenizer is needed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extract.base import (
    RANDOM_INIT,
    Backbone,
    BackboneError,
    check_rgb,
    pil_resize,
    require_checkpoint,
    split_overrides,
    to_chw_uint8,
)
from extract.prompts import (
    CLIP_VOCAB_SIZE,
    PromptBank,
    encode_sentences,
    load_text_model,
    load_tokenizer,
)
from extract.weights import weights_sha256

INPUT_RANGES = ("0,1", "-1,1")
SD15_UNET = {"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64}
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "sample_size": 512,
}
_OPTIONS = {
    "size": 512,
    "input_range": "0,1",
    "timestep": 1,
    "pooling": "eos_proj",
    "text_model": None,
    "expected_vocab_size": CLIP_VOCAB_SIZE,
    "prompt_bank": None,
    "unet": None,
    "vae": None,
}


def _check_plain_unet(unet: Any) -> None:
    """Refuse U-Net variants whose extra embeddings this composition does not apply."""
    names = ("class_embedding", "add_embedding", "encoder_hid_proj", "time_embed_act")
    extras = {name: getattr(unet, name, None) for name in names}
    used = sorted(k for k, v in extras.items() if v is not None)
    if used or unet.config.center_input_sample:
        raise BackboneError(f"sd15: unsupported U-Net configuration (uses {used or 'centering'})")


def _run_block(block: Any, h: torch.Tensor, emb: torch.Tensor, ctx: torch.Tensor, **kw: Any) -> Any:
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=h, temb=emb, encoder_hidden_states=ctx, **kw)
    return block(hidden_states=h, temb=emb, **kw)


def unet_up_features(
    unet: Any, latent: torch.Tensor, timestep: int, context: torch.Tensor
) -> list[torch.Tensor]:
    """The output of every U-Net up block, for a U-Net without adapters or extra embeddings.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        latent: ``(B, 4, h, w)`` scaled latents.
        timestep: the diffusion timestep (1 for DP-IQA).
        context: ``(B, T, D)`` cross-attention context.
    """
    steps = torch.full((latent.shape[0],), timestep, dtype=torch.long, device=latent.device)
    emb = unet.time_embedding(unet.time_proj(steps).to(latent.dtype))  # (B, E)
    h = unet.conv_in(latent)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        h, res = _run_block(block, h, emb, context)
        skips += res
    h = _mid(unet, h, emb, context)
    odd = any(s % 2**unet.num_upsamplers for s in latent.shape[-2:])
    ups = []
    for i, block in enumerate(unet.up_blocks):
        res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if odd and i < len(unet.up_blocks) - 1 else None
        h = _run_block(block, h, emb, context, res_hidden_states_tuple=res, upsample_size=size)
        ups.append(h)
    return ups


def _mid(unet: Any, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    if getattr(unet.mid_block, "has_cross_attention", False):
        return unet.mid_block(h, emb, encoder_hidden_states=context)
    return unet.mid_block(h, emb)


def _jsonable(config: Any) -> dict[str, Any]:
    """A diffusers config as plain JSON types, without private (path, version) entries."""
    plain = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return json.loads(json.dumps(plain, default=list))


class SD15UNet(Backbone):
    """Frozen SD 1.5 VAE + U-Net giving the four up-block maps of DP-IQA."""

    prompt_embeds: torch.Tensor

    def __init__(self, vae: Any, unet: Any, prompts: torch.Tensor, options: dict[str, Any]):
        super().__init__()
        _check_plain_unet(unet)
        if prompts.shape[-1] != unet.config.cross_attention_dim:
            raise BackboneError(
                f"sd15: prompt vectors are {prompts.shape[-1]}-d, the U-Net expects "
                f"{unet.config.cross_attention_dim}"
            )
        if options["input_range"] not in INPUT_RANGES:
            raise BackboneError(f"sd15: input_range must be one of {INPUT_RANGES}")
        self.name, self.vae, self.unet, self.options = "sd15_unet", vae, unet, options
        self.register_buffer("prompt_embeds", prompts)  # (P, D)
        self.outputs = self._declared_outputs(options["size"])

    def _declared_outputs(self, size: int) -> dict[str, tuple[int, ...]]:
        side = size // 2 ** (len(self.vae.config.block_out_channels) - 1)  # latent side
        side //= 2 ** (len(self.unet.down_blocks) - 1)  # after the down path
        shapes: dict[str, tuple[int, ...]] = {}
        for i, block in enumerate(self.unet.up_blocks):
            side *= 1 if block.upsamplers is None else 2
            shapes[f"up{i}"] = (block.resnets[-1].conv2.out_channels, side, side)
        return shapes

    def arch_config(self) -> dict[str, Any]:
        opts = self.options
        return {
            "unet": _jsonable(self.unet.config),
            "vae": _jsonable(self.vae.config),
            "timestep": opts["timestep"],
            "latent": "posterior_mean",
            "prompts": {"n": int(self.prompt_embeds.shape[0]), "sha256": opts["prompt_sha256"]},
            "pooling": opts["pooling"],
            "text_model": opts["text_source"],
        }

    def preprocessing(self) -> dict[str, Any]:
        low = 0 if self.options["input_range"] == "0,1" else -1
        size = self.options["size"]
        return {
            "input_size": [size, size],
            "resize": "squash_pil_bilinear",
            "input_range": [low, 1],
            "mean": None,
            "std": None,
        }

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Squash-resize (PIL bilinear) to ``(3, size, size)`` uint8."""
        size = self.options["size"]
        resized = pil_resize(check_rgb(image), (size, size), "bilinear")
        side = max(s[-1] for s in self.outputs.values())
        return to_chw_uint8(resized), np.array([side, side], dtype=np.int64)

    def finish(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """To the input range, on the device: ``(B, 3, size, size)``."""
        x = torch.stack(inputs).to(self.prompt_embeds.device).float() / 255.0
        return x * 2 - 1 if self.options["input_range"] == "-1,1" else x

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        x, valid = self.prepare(image)
        return self.finish([x])[0].cpu(), valid

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean times ``scaling_factor``: ``(B, 4, h/8, w/8)``."""
        return self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.encode_latent(x)
        context = self.prompt_embeds.to(latent.dtype).expand(x.shape[0], -1, -1)  # (B, P, D)
        ups = unet_up_features(self.unet, latent, self.options["timestep"], context)
        return {f"up{i}": h for i, h in enumerate(ups)}


def _text_dirs(model_dir: Path, text_model: str | None) -> tuple[Path, Path]:
    if text_model is None:
        return model_dir / "text_encoder", model_dir / "tokenizer"
    return Path(text_model), Path(text_model)


def _load_pretrained(model_dir: Path, opts: dict[str, Any], bank: PromptBank) -> tuple:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    for sub in ("vae", "unet"):
        if not (model_dir / sub).is_dir():
            raise BackboneError(f"sd15: {model_dir / sub} not found (need a diffusers folder)")
    vae = AutoencoderKL.from_pretrained(str(model_dir), subfolder="vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(
        str(model_dir), subfolder="unet", local_files_only=True
    )
    text_dir, tok_dir = _text_dirs(model_dir, opts["text_model"])
    tokenizer = load_tokenizer(tok_dir, opts["expected_vocab_size"])
    text = load_text_model(text_dir, opts["pooling"])
    prompts = encode_sentences(bank.sentences(), tokenizer, text, opts["pooling"])
    parts = [model_dir / "vae", model_dir / "unet", text_dir, tok_dir]
    digest = weights_sha256_of(parts)
    return vae, unet, prompts, digest, "sd15_text_encoder" if opts["text_model"] is None else "clip"


def weights_sha256_of(paths: list[Path]) -> str:
    """One hash over several weight folders (each hashed once, cached)."""
    joined = "\n".join(f"{i}:{weights_sha256(p)}" for i, p in enumerate(dict.fromkeys(paths)))
    return hashlib.sha256(joined.encode()).hexdigest()


def _random_parts(opts: dict[str, Any], bank: PromptBank) -> tuple:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(**{**SD15_UNET, **(opts["unet"] or {})})
    vae = AutoencoderKL(**{**SD15_VAE, **(opts["vae"] or {})})
    gen = torch.Generator().manual_seed(0)
    dim = int(unet.config["cross_attention_dim"])  # type: ignore[attr-defined]
    prompts = torch.randn(len(bank.sentences()), dim, generator=gen)
    return vae, unet, prompts, RANDOM_INIT, "random"


def build_sd15_unet(
    checkpoint: str | None = None, *, random_init: bool = False, **options: Any
) -> SD15UNet:
    """SD 1.5 backbone from a local diffusers folder (``vae/ unet/ text_encoder/ tokenizer/``).

    Args:
        checkpoint: the diffusers folder; nothing is downloaded (``local_files_only``).
        random_init: SD 1.5's architecture with random weights (tests, benchmarks).
        **options: ``size`` (512), ``input_range`` ("0,1" or "-1,1"), ``timestep`` (1),
            ``pooling`` ("eos_proj" or "mean"), ``text_model`` (a local CLIP ViT-L/14
            folder holding the model and tokenizer), ``expected_vocab_size`` (49408),
            ``prompt_bank`` (dict of ``PromptBank`` fields), ``unet``/``vae`` (config
            overrides, random init only).
    """
    require_checkpoint(checkpoint, random_init, "sd15_unet")
    opts = split_overrides(options, _OPTIONS, "sd15_unet")
    bank = PromptBank.from_options(opts["prompt_bank"])
    if checkpoint is not None:
        if opts["unet"] or opts["vae"]:
            raise BackboneError("sd15_unet: unet/vae overrides apply to random_init only")
        vae, unet, prompts, digest, source = _load_pretrained(Path(checkpoint), opts, bank)
    else:
        vae, unet, prompts, digest, source = _random_parts(opts, bank)
    opts.update(prompt_sha256=bank.sha256(), text_source=source)
    model = SD15UNet(vae, unet, prompts, opts)
    model.weights_sha256 = digest
    return model.freeze()
