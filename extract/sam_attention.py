"""SAM's image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment_anything's ``Attention`` (``modeling/image_encoder.py``) computes
``softmax(scale * q k^T + B) v`` with MViTv2's decomposed relative-position bias
``B[(y, x), (y', x')] = <q(y, x), Rh[y, y']> + <q(y, x), Rw[x, x']>``, and materialises the
whole ``(batch * heads, N, N)`` attention matrix (N = 4096 tokens in a global block of
ViT-H, 1 GiB per image in float32). This module keeps the parameters, the parameter names
and ``get_rel_pos`` (imported, not copied) and offers two fused kernels:

* ``"sdpa"``: the two decomposed terms are summed into one additive mask and SDPA fuses
  scaling, softmax and the product with v (memory-efficient or cuDNN kernels on a GPU).
  The mask still holds ``heads * N * N`` values per image, so global blocks run it over
  slices of the batch that keep the mask under ``MASK_BUDGET_BYTES``.
* ``"sdpa_qk"``: the bias is folded into the dot product instead:
  ``q' = [scale * q, rel_h, rel_w]`` and ``k' = [k, onehot(y'), onehot(x')]`` give
  ``q' . k' = scale * q . k + rel_h[y'] + rel_w[x']`` exactly, so no mask exists and the
  flash kernels apply; v is zero-padded to the same width (flash kernels need equal head
  sizes) and the padding is dropped from the output. It costs ``(d + h + w) / d`` times
  the attention matmuls of the plain product (2.6x in ViT-H's global blocks).
* ``"reference"``: segment_anything's own forward.

All three compute the same function; they differ in rounding only (see ``tests/test_sam.py``
for the tolerances, and ``docs/SPEED.md``). The kernel is recorded in the store's fingerprint.
Source of the technique: pytorch-labs/segment-anything-fast (SDPA with the decomposed bias;
its custom Triton kernel is not reproduced); the one-hot folding is this module's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos

KERNELS = ("reference", "sdpa", "sdpa_qk")
MASK_BUDGET_BYTES = 1 << 30  # largest additive mask built at once by the "sdpa" kernel
_ALIGN = 8  # head sizes padded to a multiple of this for the fused kernels


def check_kernel(kernel: str) -> str:
    """Validate an attention kernel name."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; choose one of {list(KERNELS)}")
    return kernel


def rel_pos_terms(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposed bias terms ``rel_h (BH, h, w, h)`` and ``rel_w (BH, h, w, w)``.

    Args:
        q: unscaled queries ``(BH, h * w, d)``.
        rel_pos_h, rel_pos_w: the module's relative-position tables.
        hw: the token grid ``(h, w)`` (queries and keys share it).
    """
    h, w = hw
    table_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # (h, h, d)
    table_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # (w, w, d)
    r_q = q.reshape(q.shape[0], h, w, q.shape[-1])  # (BH, h, w, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, table_h)  # (BH, h, w, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, table_w)  # (BH, h, w, w)
    return rel_h, rel_w


def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[-1])) if x.shape[-1] < width else x


def _one_hot_keys(hw: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``(N, h + w)``: each key's row and column as one-hot vectors."""
    h, w = hw
    rows = torch.arange(h, device=like.device).repeat_interleave(w)  # (N,)
    cols = torch.arange(w, device=like.device).repeat(h)  # (N,)
    return torch.cat([F.one_hot(rows, h), F.one_hot(cols, w)], dim=-1).to(like.dtype)


class SdpaAttention(Attention):
    """segment_anything's ``Attention`` with a selectable kernel (same parameters, same keys).

    Args:
        reference: the module to take the parameters from (they are shared, not copied).
        kernel: one of ``KERNELS``.
    """

    def __init__(self, reference: Attention, kernel: str = "sdpa") -> None:
        torch.nn.Module.__init__(self)
        self.num_heads = reference.num_heads
        self.scale = reference.scale
        self.use_rel_pos = reference.use_rel_pos
        self.qkv, self.proj = reference.qkv, reference.proj
        if self.use_rel_pos:
            self.rel_pos_h, self.rel_pos_w = reference.rel_pos_h, reference.rel_pos_w
        self.kernel = check_kernel(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "reference" or not self.use_rel_pos:
            return super().forward(x)
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)  # (B, N, 3, nH, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nH, N, d)
        attend = self._masked if self.kernel == "sdpa" else self._folded
        out = attend(q, k, v, (h, w))  # (B, nH, N, d)
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4)  # (B, h, w, nH, d)
        return self.proj(out.reshape(b, h, w, -1))  # (B, h, w, C)

    def _bias(self, q: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        b, n_heads, n, d = q.shape
        flat = q.reshape(b * n_heads, n, d)  # (BH, N, d)
        return rel_pos_terms(flat, self.rel_pos_h, self.rel_pos_w, hw)

    def _masked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: tuple[int, int]
    ) -> torch.Tensor:
        b, n_heads, n, _ = q.shape
        per_image = n_heads * n * n * q.element_size()
        step = max(1, min(b, MASK_BUDGET_BYTES // max(per_image, 1)))
        parts = []
        for s in range(0, b, step):
            qs, ks, vs = q[s : s + step], k[s : s + step], v[s : s + step]
            rel_h, rel_w = self._bias(qs, hw)  # (bh, h, w, h), (bh, h, w, w)
            mask = rel_h[..., :, None] + rel_w[..., None, :]  # (bh, h, w, h, w)
            mask = mask.reshape(qs.shape[0], n_heads, n, n).to(qs.dtype)  # (b, nH, N, N)
            parts.append(F.scaled_dot_product_attention(qs, ks, vs, mask, scale=self.scale))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _folded(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: tuple[int, int]
    ) -> torch.Tensor:
        b, n_heads, n, d = q.shape
        rel_h, rel_w = self._bias(q, hw)
        terms = torch.cat([rel_h, rel_w], dim=-1).reshape(b, n_heads, n, -1)  # (B, nH, N, h+w)
        keys = _one_hot_keys(hw, k).expand(b, n_heads, n, -1)  # (B, nH, N, h+w)
        width = -(-(d + terms.shape[-1]) // _ALIGN) * _ALIGN
        q2 = _pad_last(torch.cat([q * self.scale, terms.to(q.dtype)], dim=-1), width)
        k2 = _pad_last(torch.cat([k, keys], dim=-1), width)
        out = F.scaled_dot_product_attention(q2, k2, _pad_last(v, width), scale=1.0)
        return out[..., :d]


def set_attention(encoder: torch.nn.Module, kernel: str) -> None:
    """Switch every attention block of a SAM ``ImageEncoderViT`` to ``kernel``, in place."""
    check_kernel(kernel)
    for block in getattr(encoder, "blocks", ()):
        if isinstance(block.attn, SdpaAttention):
            block.attn.kernel = kernel
        elif isinstance(block.attn, Attention):
            block.attn = SdpaAttention(block.attn, kernel)
