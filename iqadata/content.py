"""Content keys of manifest rows: what must never sit in two parts of a split.

A split leaks content when one reference image, one content group or one prompt group has
images in two of its parts (a model tested on the distortions of a reference it trained
on, or on a render of a prompt it saw rendered). The keys come from the manifest's own
columns, whatever produced its groups:

* ``reference``: the ``ref`` column (full-reference sets);
* ``prompt group``: the ``prompt_group`` column (AI-generated sets: the prompt an image
  was rendered from; renders of one prompt are near-duplicates in content);
* ``group``: the ``group`` column.

:func:`shared_content` finds the first key in two parts of a split (checked wherever a
split is made or read); :func:`key_in_two_groups` the first reference or prompt whose rows
are in two groups (checked where a manifest is made: a split by such groups would leak).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

PROMPT_GROUP = "prompt_group"
PART_ORDER = ("train", "val", "test")


class _Row(Protocol):
    @property
    def image(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def ref(self) -> str: ...
    @property
    def extra(self) -> dict[str, str]: ...


def _ref(row: _Row) -> str:
    return row.ref


def _prompt(row: _Row) -> str:
    return row.extra.get(PROMPT_GROUP, "")


def _group(row: _Row) -> str:
    return row.group


Key = tuple[str, Callable[[Any], str]]  # (name, row -> value; '' for none)
KEYS: tuple[Key, ...] = (
    ("reference", _ref),
    ("prompt group", _prompt),
    ("group", _group),
)
GROUPED_KEYS = KEYS[:2]  # what a content group must hold together


def _listed(parts: Iterable[str]) -> str:
    names = sorted(set(parts), key=lambda p: PART_ORDER.index(p) if p in PART_ORDER else 99)
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def shared_content(rows: Iterable[_Row], part_of: Mapping[str, str]) -> str | None:
    """The first content key (in row order) whose images are in two parts, or None.

    Args:
        rows: the manifest's rows.
        part_of: image id -> the part it is in (images not listed are not in the split).

    Returns:
        A phrase such as ``reference 'refs/a.png' is in train and test``.
    """
    rows = list(rows)
    for what, key in KEYS:
        parts: dict[str, set[str]] = {}
        for row in rows:
            value, part = key(row), part_of.get(row.image)
            if value and part is not None:
                parts.setdefault(value, set()).add(part)
        for value, found in parts.items():
            if len(found) > 1:
                return f"{what} {value!r} is in {_listed(found)}"
    return None


class _Split(Protocol):
    def part(self, name: str) -> tuple[str, ...]: ...


def split_parts(split: _Split, parts: Sequence[str] = PART_ORDER) -> dict[str, str]:
    """Image id -> part name of a split."""
    return {image: name for name in parts for image in split.part(name)}


def key_in_two_groups(
    rows: Sequence[_Row], keys: Sequence[Key] = GROUPED_KEYS
) -> tuple[str, str, int, int] | None:
    """The first reference or prompt group whose rows are in two groups.

    Returns:
        ``(what, value, first, second)``: the key's name and value and the indices of a row
        in its first group and of the first row in another group; None when every key's
        rows share one group.
    """
    for what, key in keys:
        first: dict[str, int] = {}
        for i, row in enumerate(rows):
            value = key(row)
            if not value:
                continue
            j = first.setdefault(value, i)
            if rows[j].group != row.group:
                return what, value, j, i
    return None
