"""MoNet's multi-view attention learning (MAL) parts, ported for numerical parity.

Follows the MoNet encoder inside PromptIQA (Chen et al., ECCV 2024; repository
``chencn2020/PromptIQA``, ``PromptIQA/models/promptiqa.py``), as described layer by layer
in the project's reference notes. The reference's quirks are kept on purpose, because the
released weights were trained with them: no scaling in the per-view self-attention, a
``transpose(1, 2).reshape`` after ``attn @ v`` that reinterprets memory rather than merging
heads, and the feature-attention grouping of adjacent channels.
"""

from __future__ import annotations

import torch
from torch import nn


class ViewSelfAttention(nn.Module):
    """SAGAN-style self-attention over the positions of one ``(B, C, H, W)`` view.

    q, k: 1x1 convolutions to C/8; v: 1x1 convolution to C; unscaled softmax(q^T k);
    output ``gamma * (v attn^T) + x`` with ``gamma`` starting at 0.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Conv2d(dim, dim // 8, 1)
        self.k = nn.Conv2d(dim, dim // 8, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.k(x).flatten(2)  # (B, C/8, HW)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, HW, HW)
        v = self.v(x).flatten(2)  # (B, C, HW)
        out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)  # (B, C, H, W)
        return self.gamma * out + x


class TokenAttention(nn.Module):
    """Single-head attention with a residual, no output projection (``Attention_Block``)."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.scale = dim**-0.5
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        attn = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * self.scale, dim=-1)
        out = (attn @ self.v(x)).transpose(1, 2).reshape(b, t, d)  # (B, T, D), memory reread
        return self.drop(out) + x


class MAL(nn.Module):
    """Multi-view attention learning over ``n`` views of ``(B, C, S, S)``.

    Args:
        dim: channels per view (768).
        n_views: number of views ``n``.
        size: side ``S`` of each view's map (28).
    """

    def __init__(self, dim: int, n_views: int, size: int) -> None:
        super().__init__()
        self.dim, self.n_views, self.tokens = dim, n_views, size * size
        self.view_attention = nn.ModuleList(ViewSelfAttention(dim) for _ in range(n_views))
        self.feature_attention = TokenAttention(n_views * self.tokens)
        self.channel_attention = TokenAttention(n_views * dim)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """``(n, B, C, S, S)`` views to one ``(B, C, S*S)`` map."""
        b = views.shape[1]
        per_view = [att(v).flatten(2) for att, v in zip(self.view_attention, views, strict=True)]
        x = torch.cat(per_view, dim=1)  # (B, n*C, S*S), view-major channels
        grouped = x.reshape(b, self.dim, self.n_views * self.tokens)  # (B, C, n*S*S)
        feat = self.feature_attention(grouped).reshape(b, self.n_views * self.dim, self.tokens)
        chan = self.channel_attention(x.transpose(1, 2)).transpose(1, 2)  # (B, n*C, S*S)
        mixed = ((feat + chan) / 2).view(b, self.n_views, self.dim, self.tokens)
        return mixed.mean(dim=1)  # (B, C, S*S)
