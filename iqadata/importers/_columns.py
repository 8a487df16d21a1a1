"""Columns that name shared content: a reference image, or a generation prompt.

A label list imported with one group per image (``--authentic``, or ``group=`` without
``ref=``) while a column names each row's reference image leaks that reference into train
and test; the same holds for a prompt column of an AI-generated set. Such a column left
unmapped is refused unless the user confirms it names no shared content
(``--not-content COLUMN``).

A column *looks like* one when a word of its name (split at ``_``, ``-``, ``.``, spaces and
camelCase, in any case) is one of :data:`REFERENCE_WORDS` or :data:`PROMPT_WORDS`:
``ref_img_path``, ``RefImage``, ``reference``, ``src``, ``source_name``, ``pristine``,
``orig_file``, ``hq_name`` (PIPAL), ``prompt``, ``caption``. ``dis_img_path`` and
``preference`` do not.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

REFERENCE_WORDS = frozenset(
    ("ref", "refs", "reference", "references", "src", "source", "pristine", "original", "orig")
    + ("hq",)
)
PROMPT_WORDS = frozenset({"prompt", "prompts", "caption", "captions"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def words(column: str) -> set[str]:
    """The lower-case words of a column name (``refImg_path`` -> ref, img, path)."""
    return {w.lower() for w in _WORD.findall(column)}


def content_kind(column: str) -> str | None:
    """``"reference"`` or ``"prompt"`` when the column's name looks like one, else None."""
    found = words(column)
    if found & REFERENCE_WORDS:
        return "reference"
    if found & PROMPT_WORDS:
        return "prompt"
    return None


def unmapped_content(
    header: Sequence[str], columns: Mapping[str, str], confirmed: Collection[str] = ()
) -> tuple[str, str] | None:
    """The first (column, kind) that looks like a reference or prompt column, is neither
    mapped nor in ``confirmed``, while nothing groups by that kind: no ``ref=`` for a
    reference column, neither ``ref=`` nor ``prompt=`` for a prompt column."""
    mapped = set(columns.values())
    for column in header:
        kind = content_kind(column)
        if kind is None or column in mapped or column in confirmed or "ref" in columns:
            continue
        if kind == "reference" or "prompt" not in columns:
            return column, kind
    return None
