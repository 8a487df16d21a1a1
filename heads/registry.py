"""The head registry: a literal dict from a head name to how to build it from a store.

``build_head(name, feature_specs, **overrides)`` reads the input sizes (channels, map
names, map sizes) from ``feature_specs`` (the store's per-row array shapes) and applies the
caller's overrides of the remaining config fields. An impossible pairing (QFD on a vector,
SFEM on a vector, an FR head without reference features...) raises ``HeadConfigError``
before any training.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from heads.losses import L1, MSE_RANK, LossConfig
from heads.prompt import PromptConfig, PromptHead
from heads.qfd import QFD, QFDConfig
from heads.sfem import SFEMFR, SFEMNR, SFEMConfig
from heads.specs import FeatureSpecs, HeadConfigError, map_names, pick_feature


@dataclass(frozen=True)
class HeadEntry:
    """How one head is built and trained.

    Attributes:
        config_cls: the head's frozen config dataclass.
        model_cls: the head's module class, built as ``model_cls(config)``.
        input_fields: derives the config fields fixed by the store from ``feature_specs``.
        loss: default loss.
        needs_ref: the head reads reference features (FR).
        grouped: trains in groups with leave-one-out prompts (PromptIQA).
    """

    config_cls: type
    model_cls: type[nn.Module]
    input_fields: Callable[[FeatureSpecs, Mapping[str, Any]], dict[str, Any]]
    loss: LossConfig
    needs_ref: bool = False
    grouped: bool = False


def _sfem_fields(specs: FeatureSpecs, overrides: Mapping[str, Any]) -> dict[str, Any]:
    name = pick_feature(specs, overrides.get("feature", ""), "sfem", map_only=True)
    return {"feature": name, "in_channels": specs[name][0]}


def _prompt_fields(specs: FeatureSpecs, overrides: Mapping[str, Any]) -> dict[str, Any]:
    name = pick_feature(specs, overrides.get("feature", ""), "prompt", map_only=False)
    shape = specs[name]
    if len(shape) not in (1, 3):
        raise HeadConfigError(f"prompt needs a vector (D,) or map (C, H, W); {name!r} is {shape}")
    return {"feature": name, "in_dim": shape[0]}


def _qfd_fields(specs: FeatureSpecs, overrides: Mapping[str, Any]) -> dict[str, Any]:
    names = tuple(overrides.get("names") or map_names(specs))
    if not names:
        raise HeadConfigError(
            f"qfd needs at least one (C, H, W) feature map; the store has {dict(specs)}"
        )
    for name in names:
        if name not in specs or len(specs[name]) != 3:
            raise HeadConfigError(
                f"qfd needs (C, H, W) maps; {name!r} is {specs.get(name, 'missing')}"
            )
    size = overrides.get("size") or max(max(specs[n][1:]) for n in names)
    return {"names": names, "in_channels": tuple(specs[n][0] for n in names), "size": size}


HEADS: dict[str, HeadEntry] = {
    "sfem_fr": HeadEntry(SFEMConfig, SFEMFR, _sfem_fields, L1, needs_ref=True),
    "sfem_nr": HeadEntry(SFEMConfig, SFEMNR, _sfem_fields, L1),
    "prompt": HeadEntry(PromptConfig, PromptHead, _prompt_fields, L1, grouped=True),
    "qfd": HeadEntry(QFDConfig, QFD, _qfd_fields, MSE_RANK),
}


def get_head(name: str) -> HeadEntry:
    """The registry entry of ``name``; an unknown name fails with the close matches."""
    if name not in HEADS:
        close = difflib.get_close_matches(name, HEADS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HeadConfigError(f"unknown head {name!r} (known: {', '.join(HEADS)}){hint}")
    return HEADS[name]


def make_config(name: str, feature_specs: FeatureSpecs, **overrides: Any) -> Any:
    """The config of head ``name`` for a store's features, with the caller's overrides.

    Raises:
        HeadConfigError: unknown head, unknown field, or features the head cannot read.
    """
    entry = get_head(name)
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise HeadConfigError(f"{name}: unknown config fields {unknown} (known: {sorted(known)})")
    fields = {**overrides, **entry.input_fields(feature_specs, overrides)}
    return entry.config_cls(**fields)


def build_head(name: str, feature_specs: FeatureSpecs, **overrides: Any) -> nn.Module:
    """Build head ``name`` for features of the given per-row shapes."""
    return build_from_config(name, make_config(name, feature_specs, **overrides))


def build_from_config(name: str, config: Any) -> nn.Module:
    """Build head ``name`` from a config instance or a dict of its fields (checkpoints)."""
    entry = get_head(name)
    if isinstance(config, Mapping):
        config = entry.config_cls(**{k: _tuples(v) for k, v in config.items()})
    if not isinstance(config, entry.config_cls):
        raise HeadConfigError(
            f"{name}: expected a {entry.config_cls.__name__}, got {type(config).__name__}"
        )
    return entry.model_cls(config)


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
