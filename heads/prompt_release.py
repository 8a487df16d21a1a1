"""PromptIQA's released checkpoint as a prompt head (``best_model.pth.tar``).

Follows the released file's layout (``chencn2020/PromptIQA``; reference note section 4):
``{"state_dict": {"module.<key>": tensor}, "prompt_num": 10}``, where the keys of MoNet
(``vit``, ``MALs``, ``fusion_mal``, ``block``, ``cnn``) and of the prompt head
(``i_p_fusion``, ``mlp``, ``prompt_fusion``, ``blocks``, ``norm``, ``score_block``) share
one dict. ``extract.monet.build_monet`` takes the first group from the same file; this
module the second, strictly and with ``weights_only``: ``PromptHead``'s parameter names
are the reference's, so the mapping is only the prefix. The head's sizes are read from the
tensors (width, depths); attention heads cannot be, and default to the release's 4.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from heads.checkpoint import CheckpointError, load_plain
from heads.prompt import PromptConfig, PromptHead

HEAD_PARTS = ("i_p_fusion", "mlp", "prompt_fusion", "blocks", "norm", "score_block")


def read_release(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a released checkpoint, ``module.`` prefixes stripped."""
    state = _state(load_plain(path, CheckpointError, "PromptIQA checkpoint"))
    if state is None:
        raise CheckpointError(f"{path}: not a PromptIQA checkpoint (no 'state_dict')")
    return state


def _state(raw: object) -> dict[str, torch.Tensor] | None:
    state = raw.get("state_dict") if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        return None
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def is_release(ckpt: object) -> bool:
    """True for a loaded PromptIQA-layout checkpoint holding both MoNet and the prompt head
    (as ``pipelines.distill.student.is_student`` tells a loaded student checkpoint)."""
    state = _state(ckpt)
    if state is None:
        return False
    tops = {k.split(".", 1)[0] for k in state}
    return set(HEAD_PARTS) <= tops and "vit" in tops


def _depth(state: dict[str, torch.Tensor], part: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(rf"{part}\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def release_config(state: dict[str, torch.Tensor], **overrides: Any) -> PromptConfig:
    """The head's config from the released tensors' shapes (``overrides`` win)."""
    dim = int(state["norm.weight"].shape[0])
    fields: dict[str, Any] = {
        "in_dim": dim, "dim": dim, "encoder_depth": _depth(state, "i_p_fusion"),
        "ispp_depth": _depth(state, "prompt_fusion"), "fusion_depth": _depth(state, "blocks"),
        "reduce_hidden": int(state["mlp.0.weight"].shape[0]),
        "head_hidden": int(state["score_block.0.weight"].shape[0]),
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / dim,
    }
    return PromptConfig(**{**fields, **overrides})


def load_release_head(path: str | os.PathLike[str], **overrides: Any) -> PromptHead:
    """The prompt head of a released checkpoint, loaded strictly (eval mode).

    Raises:
        CheckpointError: not that layout, or tensors that do not fit (naming the keys).
    """
    state = read_release(path)
    head_state = {k: v for k, v in state.items() if k.split(".", 1)[0] in HEAD_PARTS}
    if not head_state:
        raise CheckpointError(f"{path}: holds no prompt head ({', '.join(HEAD_PARTS)})")
    model = PromptHead(release_config(head_state, **overrides))
    try:
        model.load_state_dict(head_state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the prompt head's tensors do not fit: {err}") from err
    return model.eval()
