"""PromptIQA prompt head: image-score-pair prompts fused with the target image feature.

Follows PromptIQA (Chen et al., ECCV 2024; repository ``chencn2020/PromptIQA``, file
``PromptIQA/models/promptiqa.py``): an image-score pair (ISP) is the image feature plus its
score expanded to a token; a prompt encoder of 3 transformer blocks, the mean of the two
tokens and an MLP 128 -> 64 -> 128 give one ISP embedding; an ISPP fusion of 3 blocks mixes
the n prompt embeddings; an image-prompt fusion of 8 blocks runs over [image token; prompt
tokens]; LayerNorm; regression on the first token.

Matches the reference code (not the paper) where they differ, and says so here:

* the regression is Linear 128 -> 64, ReLU, Dropout(0.1), Linear 64 -> 1, Sigmoid (the paper
  names only the two linear layers);
* the "reduction" after the prompt encoder is the code's 128 -> 64 -> 128 MLP with GELU;
* prompt encoder and ISPP fusion blocks have no qkv bias and LayerNorm eps 1e-5; the fusion
  blocks have a qkv bias and eps 1e-6 (timm 0.5.4 ``Block`` settings in the reference).

The transformer blocks are timm's ``Block`` (pre-norm, no layer scale, no drop path), as in
the reference, so parameter names match its checkpoint (``blocks.0.attn.qkv.weight``...).
With default sizes the head has 2,798,657 parameters, the reference count.

Input: the cached image feature. A vector feature of width ``dim`` is used as is; another
width gets a linear projection to ``dim``; a (C, H, W) map is first reduced by global
average pooling over its valid region (then projected if C != dim). Deviation from the
reference: MoNet is frozen and cached, so only this head trains.

Targets keep each dataset's own orientation by default (``label_orientation="native"`` in
``PROMPT_IQA_TRAINING``): PromptIQA mixes MOS and DMOS sets "without making any
modifications" (sec. 4.1 C); the prompt's scores tell the head which way they run, and it
predicts in that orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from heads.losses import L1
from heads.optim import TrainConfig
from heads.protocols import GROUPED
from heads.specs import FeatureSpecs, HeadConfigError, pick_feature, valid_mask


@dataclass(frozen=True)
class PromptConfig:
    """Sizes of the PromptIQA head (defaults are the reference's).

    Attributes:
        in_dim: channels of the cached feature (vector width, or map channels); from the store.
        feature: name of the cached feature.
        dim: model width N = M.
        heads: attention heads per block.
        mlp_ratio: block MLP hidden width / dim.
        encoder_depth: prompt encoder blocks.
        ispp_depth: ISPP fusion blocks.
        fusion_depth: image-prompt fusion blocks.
        reduce_hidden: hidden width of the ISP MLP.
        head_hidden: hidden width of the regression.
        dropout: dropout in the regression.
        sigmoid: squash the score to (0, 1) as the reference does.
        use_prompt: False gives PromptIQA's "w/o prompt" ablation (Table 6): the fusion
            blocks see the image token alone, so prompts are accepted and ignored, and
            training turns random label scaling and flipping off (``prompt_training``).
    """

    in_dim: int = 128
    feature: str = "feature"
    dim: int = 128
    heads: int = 4
    mlp_ratio: float = 4.0
    encoder_depth: int = 3
    ispp_depth: int = 3
    fusion_depth: int = 8
    reduce_hidden: int = 64
    head_hidden: int = 64
    dropout: float = 0.1
    sigmoid: bool = True
    use_prompt: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise HeadConfigError(f"prompt: dim {self.dim} is not divisible by heads {self.heads}")


def _blocks(c: PromptConfig, depth: int, *, qkv_bias: bool, eps: float) -> nn.Sequential:
    norm = partial(nn.LayerNorm, eps=eps)
    return nn.Sequential(
        *(
            Block(c.dim, c.heads, c.mlp_ratio, qkv_bias=qkv_bias, norm_layer=norm)  # type: ignore[arg-type]
            for _ in range(depth)
        )
    )


def leave_one_out(n: int, device: torch.device | None = None) -> Tensor:
    """Index matrix (n, n - 1): row i lists every member of the group except i."""
    full = torch.arange(n, device=device).repeat(n, 1)  # (n, n)
    keep = ~torch.eye(n, dtype=torch.bool, device=device)
    return full[keep].view(n, n - 1)  # (n, n-1)


def prompt_input_fields(specs: FeatureSpecs, overrides: Any) -> dict[str, Any]:
    """The store decides which feature the head reads and its width."""
    name = pick_feature(specs, overrides.get("feature", ""), "prompt", map_only=False)
    shape = specs[name]
    if len(shape) not in (1, 3):
        raise HeadConfigError(f"prompt needs a vector (D,) or map (C, H, W); {name!r} is {shape}")
    return {"feature": name, "in_dim": shape[0]}


# PromptIQA §4.1 C: Adam 1e-5, weight decay 1e-5, cosine annealing every 50 epochs, 100
# epochs, batch 66 on 6 GPUs = 6 groups of 11 (10 prompts + 1 target) per step; labels in
# each dataset's own orientation (MOS and DMOS mixed "without making any modifications").
PROMPT_IQA_TRAINING = TrainConfig(
    epochs=100, batch_size=11, groups_per_step=6, lr=1e-5, weight_decay=1e-5,
    schedule="cosine_restarts", restart_every=50, label_orientation="native",
)


def prompt_training(config: PromptConfig, training: TrainConfig) -> TrainConfig:
    """The training a config really gets: "w/o prompt" (Table 6) trains without random
    scaling and flipping, which a head that sees no prompt cannot infer from its input."""
    if config.use_prompt:
        return training
    return training.replace(scale_p=0.0, flip_p=0.0)


class PromptHead(nn.Module):
    """The PromptIQA head over cached image features."""

    kind = GROUPED
    config_cls = PromptConfig
    input_fields = staticmethod(prompt_input_fields)
    adjust_training = staticmethod(prompt_training)
    default_loss = L1
    train_defaults = PROMPT_IQA_TRAINING
    # The smallest sensible instance (contract tests, examples) and store specs it reads.
    tiny_config: dict[str, Any] = {"dim": 16, "heads": 2, "encoder_depth": 1, "ispp_depth": 1,
                                   "fusion_depth": 1, "reduce_hidden": 8, "head_hidden": 8}
    example_specs = {"feature": (12,)}

    def __init__(self, config: PromptConfig) -> None:
        super().__init__()
        c = self.config = config
        self.project = nn.Identity() if c.in_dim == c.dim else nn.Linear(c.in_dim, c.dim)
        self.i_p_fusion = _blocks(c, c.encoder_depth, qkv_bias=False, eps=1e-5)
        self.mlp = nn.Sequential(
            nn.Linear(c.dim, c.reduce_hidden), nn.GELU(), nn.Linear(c.reduce_hidden, c.dim)
        )
        self.prompt_fusion = _blocks(c, c.ispp_depth, qkv_bias=False, eps=1e-5)
        self.blocks = _blocks(c, c.fusion_depth, qkv_bias=True, eps=1e-6)
        self.norm = nn.LayerNorm(c.dim)
        self.score_block = nn.Sequential(
            nn.Linear(c.dim, c.head_hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.head_hidden, 1),
            nn.Sigmoid() if c.sigmoid else nn.Identity(),
        )

    def image_tokens(self, features: dict[str, Tensor], valid: Tensor | None = None) -> Tensor:
        """Image tokens (B, dim) from a vector (B, D) or a map (B, C, H, W) feature."""
        x = features[self.config.feature]
        if x.dim() == 4:
            mask = valid_mask(valid, x.shape[0], x.shape[2], x.shape[3], x.device)
            x = (x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3)).clamp_min(1.0)  # (B, C)
        return self.project(x)

    def isp_embeddings(self, tokens: Tensor, scores: Tensor) -> Tensor:
        """ISP embeddings (B, dim) of image tokens (B, dim) and their scores (B,)."""
        score_tok = scores.to(tokens.dtype).view(-1, 1).expand_as(tokens)  # (B, dim)
        pair = torch.stack((tokens, score_tok), dim=1)  # (B, 2, dim)
        return self.mlp(self.i_p_fusion(pair).mean(dim=1))  # (B, dim)

    def forward_prompt(
        self,
        prompt_features: dict[str, Tensor],
        prompt_scores: Tensor,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Embed a prompt of n image-score pairs once; returns (1, n, dim) to reuse."""
        tokens = self.image_tokens(prompt_features, valid)
        return self.isp_embeddings(tokens, prompt_scores).unsqueeze(0)  # (1, n, dim)

    def predict(
        self, features: dict[str, Tensor], prompt: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """Scores (B,) of images under a prompt (1, n, dim) or per-row prompts (B, n, dim)."""
        tokens = self.image_tokens(features, valid)
        return self._fuse(tokens, prompt.expand(tokens.shape[0], -1, -1))

    def forward_group(
        self, features: dict[str, Tensor], scores: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """Training pass over one group: each member's prompt is the other members."""
        n = scores.shape[0]
        if n < 2:
            raise HeadConfigError(f"prompt: a training group needs at least 2 images, got {n}")
        tokens = self.image_tokens(features, valid)
        isp = self.isp_embeddings(tokens, scores)  # (B, dim)
        return self._fuse(tokens, isp[leave_one_out(n, isp.device)])  # prompts (B, B-1, dim)

    def forward(
        self,
        features: dict[str, Tensor],
        valid: Tensor | None = None,
        ref: dict[str, Tensor] | None = None,
        *,
        prompt: Tensor | None = None,
    ) -> Tensor:
        """Scores under a cached prompt (see ``forward_prompt``)."""
        if prompt is None:
            raise HeadConfigError("prompt: forward needs prompt=forward_prompt(...) output")
        return self.predict(features, prompt, valid)

    def _fuse(self, tokens: Tensor, prompts: Tensor) -> Tensor:
        if not self.config.use_prompt:  # the "w/o prompt" ablation: the image token alone
            x = self.norm(self.blocks(tokens.unsqueeze(1)))  # (B, 1, dim)
            return self.score_block(x[:, 0]).squeeze(-1)
        prompts = self.prompt_fusion(prompts)  # (B, n, dim)
        x = torch.cat((tokens.unsqueeze(1), prompts), dim=1)  # (B, 1 + n, dim)
        x = self.norm(self.blocks(x))
        return self.score_block(x[:, 0]).squeeze(-1)  # (B,)
