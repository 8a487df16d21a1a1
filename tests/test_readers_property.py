"""Property tests: bad bytes, garbled CSV or JSON never escape the manifest and split readers.

Whatever a file holds, :func:`read_manifest` and :func:`read_split` either return or raise
:class:`ManifestError` whose message starts with ``<file>:<line>:``; no other exception.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iqadata.manifest import (
    DatasetInfo,
    Manifest,
    ManifestError,
    ManifestRow,
    Split,
    manifest_text,
    read_manifest,
    read_split,
)
from iqadata.split_file import write_split

ROWS = tuple(
    ManifestRow(
        f"images/i{k}.png", k / 3, f"g{k // 2}", f"refs/g{k // 2}.png", "blur", {"n": str(k)}
    )
    for k in range(6)
)
VALID_MANIFEST = manifest_text(Manifest(DatasetInfo("x", "MOS", False, (0, 5)), ROWS))
VALID_SPLIT = json.dumps(
    {"seed": 1, "ratios": [0.5, 0.5], "manifest_sha256": "0" * 64, "train": ["a", "b"],
     "val": [], "test": ["c"]}, indent=1,
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _garble(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (position, delete count, insertion) edits to ``text``."""
    for pos, cut, insert in edits:
        at = pos % (len(text) + 1)
        text = text[:at] + insert + text[at + cut :]
    return text


EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 5), st.text(max_size=6)),
    min_size=1,
    max_size=6,
)
CSVISH = st.text(
    alphabet=st.sampled_from(list(',"#\n\r: \x00abc1.5-') + ["é", "\u2028"]), max_size=80
)


def _only_located_errors(reader, path: Path) -> None:
    try:
        reader(path)
    except ManifestError as err:
        assert re.match(re.escape(str(path)) + r":\d+: \S", str(err)), str(err)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "file"


READERS = pytest.mark.parametrize(
    ("reader", "valid"), [(read_manifest, VALID_MANIFEST), (read_split, VALID_SPLIT)],
    ids=["manifest", "split"],
)


@READERS
@SETTINGS
@given(data=st.binary(max_size=300))
def test_readers_on_random_bytes(target: Path, reader, valid: str, data: bytes) -> None:
    target.write_bytes(data)
    _only_located_errors(reader, target)


@READERS
@SETTINGS
@given(edits=EDITS)
def test_readers_on_garbled_files(target: Path, reader, valid: str, edits: list) -> None:
    target.write_bytes(_garble(valid, edits).encode("utf-8", "surrogatepass"))
    _only_located_errors(reader, target)


FIELD = st.sampled_from(
    ["", "a.png", "a.png", "b/c.png", "../x.png", "/abs.png", "a//b.png", "1.5", "nan", "inf",
     "-1", "g", '"q,uoted"', '"', "x\\y"]
)
ROWS_TEXT = st.lists(st.lists(FIELD, max_size=7).map(",".join), max_size=6).map("\n".join)


@SETTINGS
@given(body=CSVISH | ROWS_TEXT)
def test_manifest_reader_on_garbled_rows(target: Path, body: str) -> None:
    header = VALID_MANIFEST.split("image,ref,")[0] + "image,ref,score,group,distortion\n"
    target.write_text(header + body, encoding="utf-8")
    _only_located_errors(read_manifest, target)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
PARTS_ISH = st.fixed_dictionaries(
    {"train": JSON, "test": JSON}, optional={"val": JSON, "seed": JSON, "ratios": JSON,
                                             "manifest_sha256": JSON},
)


@SETTINGS
@given(value=JSON | PARTS_ISH)
def test_split_reader_on_wrong_json_values(target: Path, value: object) -> None:
    target.write_text(json.dumps(value, indent=1), encoding="utf-8")
    _only_located_errors(read_split, target)


def test_valid_files_still_read(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(VALID_MANIFEST)
    assert read_manifest(tmp_path / "m.csv").rows == ROWS
    write_split(Split(("a",), (), ("b",)), tmp_path / "s.json")
    assert read_split(tmp_path / "s.json").test == ("b",)
