"""Fingerprints: a stable hash of everything that determines a store's numbers.

A fingerprint is the sha256 of the *canonical JSON* of a mapping of fields (backbone name
and config, weights sha256 or ``"random-init"``, preprocessing, feature version, dtype,
views, ...). Canonical means: keys sorted at every depth, tuples as lists, numpy scalars and
arrays as plain JSON values, and floats rounded to 12 significant digits with integral
floats written as integers, so ``{"a": 1.0, "b": 0.1}`` and ``{"b": np.float64(0.1),
"a": 1}`` hash alike. Same fingerprint and same image id mean the same features, whoever
computed them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

FLOAT_DIGITS = 12


class FingerprintMismatch(ValueError):
    """A store was made with other fingerprint fields than the caller expects."""

    def __init__(self, message: str, fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.fields = list(fields or [])


class _HasFingerprint(Protocol):
    url: str
    fingerprint: str
    fingerprint_fields: dict[str, Any]


def canonical(value: Any, where: str = "") -> Any:
    """Convert ``value`` to plain JSON types in canonical form (see the module docstring).

    Raises:
        TypeError: naming the dotted field whose value is not JSON-able.
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return canonical(value.tolist(), where)
    if isinstance(value, list | tuple):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return canonical(value.item(), where)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return _canonical_float(value)
    raise TypeError(
        f"fingerprint field {where or '<root>'!r} of type {type(value).__name__} "
        f"is not JSON-able: {value!r}"
    )


def _canonical_float(x: float) -> float | int | str:
    if not math.isfinite(x):
        return repr(x)
    rounded = float(format(x, f".{FLOAT_DIGITS}g"))
    return int(rounded) if rounded.is_integer() else rounded


def canonical_json(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of ``fields`` (sorted keys, no whitespace)."""
    return json.dumps(canonical(fields), sort_keys=True, separators=(",", ":"))


def fingerprint_of(fields: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``fields``."""
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def diff_fields(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between ``a`` and ``b`` (recursing into maps).

    A field present on one side only counts as differing.
    """
    ca, cb = canonical(a), canonical(b)
    out: list[str] = []
    for key in sorted(set(ca) | set(cb)):
        name = f"{prefix}{key}"
        va, vb = ca.get(key, _MISSING), cb.get(key, _MISSING)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff_fields(va, vb, prefix=f"{name}."))
        elif va != vb:
            out.append(name)
    return out


_MISSING = object()


def describe_diff(a: Mapping[str, Any], b: Mapping[str, Any], limit: int = 8) -> str:
    """A one-line ``field: a != b`` summary of the first ``limit`` differing fields."""
    flat_a, flat_b = _flatten(canonical(a)), _flatten(canonical(b))
    parts = [
        f"{n}: {flat_a.get(n, '<absent>')!r} != {flat_b.get(n, '<absent>')!r}"
        for n in diff_fields(a, b)[:limit]
    ]
    return "; ".join(parts)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_fingerprint(expected: Mapping[str, Any] | str, store: _HasFingerprint) -> None:
    """Fail unless ``store`` was made with the ``expected`` fingerprint.

    Args:
        expected: a fingerprint hash (as a head checkpoint records it) or the fields
            mapping (``store.fingerprint_fields``).
        store: an open ``FeatureStore`` (anything with ``fingerprint`` and
            ``fingerprint_fields``).

    Raises:
        FingerprintMismatch: naming the store and the fields (or hashes) that differ.
    """
    if isinstance(expected, str):
        if expected != store.fingerprint:
            raise FingerprintMismatch(
                f"store {store.url} has fingerprint {store.fingerprint}, expected {expected}",
                ["fingerprint"],
            )
        return
    have = dict(store.fingerprint_fields)
    fields = diff_fields(expected, have)
    if fields:
        raise FingerprintMismatch(
            f"store {store.url} was made with other fingerprint fields: {fields} "
            f"(expected != store: {describe_diff(expected, have)})",
            fields,
        )
