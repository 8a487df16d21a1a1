"""The registry of stage-1 backbones: a literal dict from a name to its builder.

Each builder is ``build(checkpoint: str | None, *, random_init: bool = False,
**arch_overrides) -> Backbone`` and never downloads anything. No registration by import
side effect: adding a backbone means adding a line here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from extract.base import Backbone
from extract.monet import build_monet
from extract.nss import build_nss, build_nss_ml
from extract.sam import build_sam_vit_b, build_sam_vit_h, build_sam_vit_l
from extract.sd15 import build_sd15_unet

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "sam_vit_h": build_sam_vit_h,
    "sam_vit_l": build_sam_vit_l,
    "sam_vit_b": build_sam_vit_b,
    "sd15_unet": build_sd15_unet,
    "monet": build_monet,
    "nss": build_nss,
    "nss_ml": build_nss_ml,
}


def get_backbone(name: str) -> Callable[..., Backbone]:
    """The builder registered under ``name``.

    Raises:
        KeyError: for an unknown name, listing the close matches and every known name.
    """
    if name in BACKBONES:
        return BACKBONES[name]
    close = difflib.get_close_matches(name, BACKBONES, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown backbone {name!r}{hint} (known: {', '.join(BACKBONES)})")
