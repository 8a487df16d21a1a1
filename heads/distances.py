"""Full-reference distances of the SAM-IQA head (``SFEMConfig.distance``).

Table 5 of SAM-IQA (Li et al., arXiv 2307.04455) compares L1 (its eq. 3, the default), L2,
cosine similarity, Kullback-Leibler divergence and direct subtraction, and defines none
but L1. Each distance here takes the distorted (``F_L``) and the reference (``F_H``) maps
(B, width, P, P) of one SFEM branch and returns a map that the branch's mapping (``f`` or
``g``) reads: element-wise where the distance is defined per number, per position (over
the channel vector, one output channel) where it needs a vector. Whether the paper took
cosine and KL per position or over the whole map is not stated; a whole-map scalar would
leave ``f``/``g`` (Conv3x3 in this project) nothing to map.

* ``l1``: ``|F_L - F_H|`` per element (the paper's; width channels).
* ``l2``: ``(F_L - F_H) ** 2`` per element (an element-wise L2 without the square
  would be L1 again).
* ``sub``: ``F_L - F_H`` per element ("directly subtracted": signed).
* ``cos``: ``1 - cos(F_L, F_H)`` per position (one channel); the paper names cosine
  *similarity*; sign and offset are absorbed by the bias of ``f``/``g``.
* ``kl``: ``KL(softmax_c F_H || softmax_c F_L)`` per position (one channel): each
  position's channel vector made a distribution by a softmax, the reference's the
  target distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor


def _l1(dist: Tensor, ref: Tensor) -> Tensor:
    return (dist - ref).abs()


def _l2(dist: Tensor, ref: Tensor) -> Tensor:
    return (dist - ref) ** 2


def _sub(dist: Tensor, ref: Tensor) -> Tensor:
    return dist - ref


def _cos(dist: Tensor, ref: Tensor) -> Tensor:
    return 1 - F.cosine_similarity(dist, ref, dim=1, eps=1e-8).unsqueeze(1)  # (B, 1, P, P)


def _kl(dist: Tensor, ref: Tensor) -> Tensor:
    log_ref, log_dist = F.log_softmax(ref, dim=1), F.log_softmax(dist, dim=1)
    return (log_ref.exp() * (log_ref - log_dist)).sum(dim=1, keepdim=True)  # (B, 1, P, P)


# FR distances (Table 5 of SAM-IQA) between distorted and reference branch maps.
DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": _l1,
    "l2": _l2,
    "cos": _cos,
    "kl": _kl,
    "sub": _sub,
}
PER_POSITION = ("cos", "kl")  # distances that give one channel per position
