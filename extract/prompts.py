"""DP-IQA's constant text conditioning: the prompt bank and its CLIP sentence embeddings.

Follows DP-IQA (Fu et al., arXiv 2405.19996; repository ``RomGai/DP-IQA``,
``gene_text_embedding.py``): sentences ``"a photo of a {scene} with {distortion}
artifacts, which is of {quality} quality"`` over quality x scene x distortion, quality the
outer loop and distortion the inner one: 5 x 9 x 33 = 1485 by default (the code's lists;
the paper's Table II states 1925, its Table III lists 1530). One 768-d vector per
sentence, by default the code's projected EOS feature (``CLIPTextModelWithProjection``
``text_embeds``, not L2-normalised); option ``pooling="mean"``: the paper's average of the
final hidden states over the sentence's tokens (padding excluded).

Offline-tokenizer trap: recent transformers, offline and given a hub id it cannot reach,
can return a tokenizer with a vocabulary of 2 that maps every word to ``<unk>`` instead of
failing. A tokenizer whose vocabulary is not CLIP's 49408 is therefore a hard error here
(``expected_vocab_size`` exists only so tests can use a tiny tokenizer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch

from extract.base import BackboneError

CLIP_VOCAB_SIZE = 49408
POOLINGS = ("eos_proj", "mean")
TEMPLATE = "a photo of a {scene} with {distortion} artifacts, which is of {quality} quality"
QUALITIES = ("bad", "poor", "fair", "good", "perfect")
SCENES = (
    "animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life",
    "others",
)
DISTORTIONS = (
    "jpeg2000 compression", "jpeg compression", "white noise", "gaussian blur", "fastfading",
    "fnoise", "contrast", "lens", "motion", "diffusion", "shifting", "color quantization",
    "oversaturation", "desaturation", "white with color", "impulse", "multiplicative",
    "white noise with denoise", "brighten", "darken", "shifting the mean", "jitter",
    "noneccentricity patch", "pixelate", "quantization", "color blocking", "sharpness",
    "realistic blur", "realistic noise", "underexposure", "overexposure",
    "realistic contrast change", "other realistic",
)


@dataclass(frozen=True)
class PromptBank:
    """The sentence set; order does not change the U-Net's output (cross-attention is a set)."""

    qualities: tuple[str, ...] = QUALITIES
    scenes: tuple[str, ...] = SCENES
    distortions: tuple[str, ...] = DISTORTIONS
    template: str = TEMPLATE

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> PromptBank:
        options = dict(options or {})
        unknown = sorted(set(options) - {"qualities", "scenes", "distortions", "template"})
        if unknown:
            raise BackboneError(f"prompt bank: unknown field(s) {unknown}")
        fields: dict[str, Any] = {k: v if k == "template" else tuple(v) for k, v in options.items()}
        return cls(**fields)

    def sentences(self) -> list[str]:
        return [
            self.template.format(quality=q, scene=s, distortion=d)
            for q, s, d in product(self.qualities, self.scenes, self.distortions)
        ]

    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.sentences()).encode("utf-8")).hexdigest()


def load_tokenizer(path: Path, expected_vocab_size: int = CLIP_VOCAB_SIZE) -> Any:
    """A local CLIP tokenizer, refused unless its vocabulary has the expected size."""
    from transformers import CLIPTokenizer

    if not path.is_dir():
        raise BackboneError(f"tokenizer folder not found: {path}")
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.vocab_size != expected_vocab_size:
        raise BackboneError(
            f"{path}: tokenizer vocabulary has {tokenizer.vocab_size} entries, expected "
            f"{expected_vocab_size} (CLIP's is {CLIP_VOCAB_SIZE}). An offline transformers "
            "can hand back a placeholder tokenizer that maps every word to <unk> instead of "
            "failing; point to a complete local tokenizer folder (vocab.json, merges.txt)."
        )
    return tokenizer


def load_text_model(path: Path, pooling: str) -> Any:
    """``CLIPTextModelWithProjection`` (``eos_proj``) or ``CLIPTextModel`` (``mean``)."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if pooling not in POOLINGS:
        raise BackboneError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not path.is_dir():
        raise BackboneError(f"text model folder not found: {path}")
    cls = CLIPTextModelWithProjection if pooling == "eos_proj" else CLIPTextModel
    model, info = cls.from_pretrained(  # type: ignore[misc]  # a (model, info) pair here
        str(path), local_files_only=True, output_loading_info=True
    )
    missing = sorted(info.get("missing_keys", []))
    if missing:
        hint = (
            " SD 1.5's text_encoder has no text_projection: give a CLIP ViT-L/14 folder "
            "(text_model=...) or use pooling='mean'."
            if any("text_projection" in k for k in missing)
            else ""
        )
        raise BackboneError(f"{path}: text model weights are missing {missing[:8]}.{hint}")
    return model.eval()


@torch.no_grad()
def encode_sentences(
    sentences: list[str], tokenizer: Any, text_model: Any, pooling: str, batch_size: int = 128
) -> torch.Tensor:
    """One vector per sentence: ``(P, D)`` float32."""
    chunks = []
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start : start + batch_size]
        inputs = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
        out = text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        if pooling == "eos_proj":
            chunks.append(out.text_embeds)
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            chunks.append((out.last_hidden_state * mask).sum(1) / mask.sum(1))  # (b, D)
    return torch.cat(chunks).float()
