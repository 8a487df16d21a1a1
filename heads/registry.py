"""The head registry: a literal dict from a head name to where its class lives.

Each entry is a ``"module:Class"`` string, imported on first use (so listing the names for
``--help`` costs nothing). A head class declares everything the rest of the package needs
(``heads.protocols``): ``kind``, ``config_cls``, ``input_fields``, ``default_loss`` and
``train_defaults``. Adding a head means its module, one line here and its params
(``docs/ADDING.md``).

``build_head(name, feature_specs, **overrides)`` reads the input sizes (channels, map
names, map sizes) from ``feature_specs`` (the store's per-row array shapes) and applies the
caller's overrides of the remaining config fields. An impossible pairing (QFD on a vector,
SFEM on a vector...) raises ``HeadConfigError`` before any training.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry imports no head (and no torch) until one is asked for
    from torch import nn

    from heads.specs import FeatureSpecs

HEADS: dict[str, str] = {
    "sfem_fr": "heads.sfem:SFEMFR",
    "sfem_nr": "heads.sfem:SFEMNR",
    "prompt": "heads.prompt:PromptHead",
    "qfd": "heads.qfd:QFD",
    "linear": "heads.linear:LinearProbe",
}


def head_class(name: str) -> Any:
    """The class registered as ``name``; an unknown name fails with the close matches."""
    if name not in HEADS:
        from heads.specs import HeadConfigError

        close = difflib.get_close_matches(name, HEADS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HeadConfigError(f"unknown head {name!r} (known: {', '.join(HEADS)}){hint}")
    module, _, attr = HEADS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def make_config(name: str, feature_specs: FeatureSpecs, **overrides: Any) -> Any:
    """The config of head ``name`` for a store's features, with the caller's overrides.

    Raises:
        HeadConfigError: unknown head, unknown field, or features the head cannot read.
    """
    from heads.specs import HeadConfigError

    cls = head_class(name)
    known = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise HeadConfigError(f"{name}: unknown config fields {unknown} (known: {sorted(known)})")
    fields = {**overrides, **cls.input_fields(feature_specs, overrides)}
    try:
        return cls.config_cls(**fields)
    except TypeError as err:
        raise HeadConfigError(f"{name}: bad config {fields}: {err}") from err


def build_head(name: str, feature_specs: FeatureSpecs, **overrides: Any) -> nn.Module:
    """Build head ``name`` for features of the given per-row shapes."""
    return build_from_config(name, make_config(name, feature_specs, **overrides))


def build_from_config(name: str, config: Any) -> nn.Module:
    """Build head ``name`` from a config instance or a dict of its fields (checkpoints)."""
    from heads.specs import HeadConfigError

    cls = head_class(name)
    if isinstance(config, Mapping):
        config = cls.config_cls(**{k: _tuples(v) for k, v in config.items()})
    if not isinstance(config, cls.config_cls):
        raise HeadConfigError(
            f"{name}: expected a {cls.config_cls.__name__}, got {type(config).__name__}"
        )
    model: nn.Module = cls(config)
    return model


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
