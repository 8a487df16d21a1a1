"""Fingerprints: canonical JSON, stable hashes, field diffs and the checkpoint check."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.fingerprint import (
    FingerprintMismatch,
    canonical_json,
    check_fingerprint,
    diff_fields,
    fingerprint_of,
)

FIELDS = {
    "backbone": "sam_vit_b",
    "weights_sha256": "random-init",
    "preprocessing": {"size": 1024, "mean": [123.675, 116.28, 103.53], "resize": "longest"},
    "views": ["identity", "hflip"],
}


def test_hash_is_sha256_of_sorted_compact_json():
    text = '{"a":1,"b":[0.1,"x"]}'
    assert canonical_json({"b": (0.1, "x"), "a": 1}) == text
    assert fingerprint_of({"b": ["0.1"], "a": 1}) != fingerprint_of({"b": [0.1], "a": 1})
    assert fingerprint_of({"b": (0.1, "x"), "a": 1.0}) == hashlib.sha256(text.encode()).hexdigest()


def test_key_order_and_float_formatting_do_not_matter():
    shuffled = {
        "views": ("identity", "hflip"),
        "preprocessing": {"resize": "longest", "mean": np.array([123.675, 116.28, 103.53]),
                          "size": np.int64(1024)},
        "weights_sha256": "random-init",
        "backbone": "sam_vit_b",
    }
    assert fingerprint_of(shuffled) == fingerprint_of(FIELDS)
    assert fingerprint_of({"x": 0.1 + 0.2}) == fingerprint_of({"x": 0.3})
    assert fingerprint_of({"x": 2.0}) == fingerprint_of({"x": 2})
    assert fingerprint_of({"x": np.float32(0.5)}) == fingerprint_of({"x": 0.5})
    assert fingerprint_of({"x": 0.3}) != fingerprint_of({"x": 0.3001})


@given(st.dictionaries(st.text(min_size=1, max_size=5),
                       st.one_of(st.integers(), st.floats(allow_nan=False), st.text()),
                       max_size=6))
def test_stable_under_reordering(fields):
    reordered = dict(reversed(list(fields.items())))
    assert fingerprint_of(reordered) == fingerprint_of(fields)


def test_unjsonable_fields_are_refused():
    with pytest.raises(TypeError, match=r"field 'arch.layers\[1\]' of type type is not JSON"):
        fingerprint_of({"arch": {"layers": [1, object]}})


def test_diff_fields_names_nested_and_one_sided_fields():
    other = {**FIELDS, "preprocessing": {**FIELDS["preprocessing"], "size": 512}, "extra": 1}
    del other["views"]
    assert diff_fields(FIELDS, other) == ["extra", "preprocessing.size", "views"]
    assert diff_fields(FIELDS, dict(FIELDS)) == []


def test_check_fingerprint_by_hash_and_by_fields():
    store = SimpleNamespace(url="s.zarr", fingerprint=fingerprint_of(FIELDS),
                            fingerprint_fields=FIELDS)
    check_fingerprint(fingerprint_of(FIELDS), store)
    check_fingerprint(dict(FIELDS), store)
    with pytest.raises(FingerprintMismatch, match=r"s.zarr has fingerprint [0-9a-f]{64}, expected"):
        check_fingerprint("0" * 64, store)
    with pytest.raises(
        FingerprintMismatch, match=r"\['backbone'\].*'sam_vit_h' != 'sam_vit_b'"
    ) as err:
        check_fingerprint({**FIELDS, "backbone": "sam_vit_h"}, store)
    assert err.value.fields == ["backbone"]
    assert isinstance(err.value, ValueError)
