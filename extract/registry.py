"""The registry of stage-1 backbones: a literal dict from a name to where its builder lives.

Each builder is ``build(checkpoint: str | None, *, random_init: bool = False,
**arch_overrides) -> Backbone`` and never downloads anything. The dict holds
``"module:function"`` strings, imported on first use, so listing the names (``--help``,
option choices) costs nothing: a backbone family imports torch, timm or diffusers only
when it is built. No registration by import side effect: adding a backbone means adding
its module and one line here.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from extract.base import Backbone

BACKBONES: dict[str, str] = {
    "sam_vit_h": "extract.sam:build_sam_vit_h",
    "sam_vit_l": "extract.sam:build_sam_vit_l",
    "sam_vit_b": "extract.sam:build_sam_vit_b",
    "sd15_unet": "extract.sd15:build_sd15_unet",
    "monet": "extract.monet:build_monet",
    "nss": "extract.nss:build_nss",
    "nss_ml": "extract.nss:build_nss_ml",
    "resnet50": "extract.resnet:build_resnet50",
}


def get_backbone(name: str) -> Callable[..., Backbone]:
    """The builder registered under ``name`` (its module is imported now).

    Raises:
        KeyError: for an unknown name, listing the close matches and every known name.
    """
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, BACKBONES, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown backbone {name!r}{hint} (known: {', '.join(BACKBONES)})")
    module, _, attr = BACKBONES[name].partition(":")
    builder: Callable[..., Backbone] = getattr(importlib.import_module(module), attr)
    return builder
