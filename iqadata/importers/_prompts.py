"""The prompt of each AIGCIQA2023 image: its content group.

AIGCIQA2023 (Wang et al., 2023; files of the authors' repository wangjiarui153/AIGCIQA2023,
read as data, no code taken) renders 100 prompts with 6 generators, 4 images each, in
``Image/allimg/<k>.png``, k = 0..2399. The authors' ``pic-index.xlsx`` lists, row ``k``
(no header), the generator and ``<prompt>-<render>.png`` of image ``k`` (``000-1.png`` ..
``099-4.png``); its 2,400 rows follow the rule prompt = (k mod 400) div 4, which public
loaders use too. ``AIGCIQA2023_Prompts.xlsx`` lists the 100 prompts (no header; style,
class, prompt text) in prompt order.

:func:`aigc_prompt_groups` reads the index file when there is one (else applies the rule)
and the prompt texts when they are there; prompts with the same text share a group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from iqadata.content import PROMPT_GROUP
from iqadata.importers._common import cell, cell_text, header_key, xlsx_rows
from iqadata.importers._paths import DiskIndex
from iqadata.manifest import ManifestError

FOLDERS = ("", "DATA", "DATA/MOS")
INDEX_FILES = ("pic-index.xlsx",)
PROMPT_FILES = ("AIGCIQA2023_Prompts.xlsx", "prompts.xlsx")
N_PROMPTS, RENDERS, PER_GENERATOR = 100, 4, 400
RULE = "prompt = (k mod 400) div 4 of image Image/allimg/<k>.png (AIGCIQA2023's index rule"
_INDEX_NAME = re.compile(r"^\s*(\d+)-(\d+)\.[A-Za-z]+\s*$")


@dataclass
class PromptGroups:
    """Per image ``k``: its group, its extra columns; and the rule, for the manifest."""

    groups: list[str] = field(default_factory=list)
    extra: list[dict[str, str]] = field(default_factory=list)
    rule: str = ""


def _find(base: Path, names: tuple[str, ...]) -> Path | None:
    index = DiskIndex(base)
    for folder in FOLDERS:
        for name in names:
            found = index.resolve(f"{folder}/{name}" if folder else name)
            if found is not None:
                return base / found
    return None


def _index_numbers(path: Path, n: int) -> tuple[list[int], list[str]]:
    """Prompt number and generator of images 0..n-1 from ``pic-index.xlsx``."""
    numbers: list[int] = []
    generators: list[str] = []
    for number, values in xlsx_rows(path):
        if len(numbers) == n:
            break
        match = _INDEX_NAME.match(cell_text(cell(values, 1)))
        if match is None:
            raise ManifestError(
                f"{path}: row {number}: expected (generator, <prompt>-<render>.png), got {values}"
            )
        numbers.append(int(match.group(1)))
        generators.append(cell_text(cell(values, 0)))
    if len(numbers) < n:
        raise ManifestError(f"{path}: {len(numbers)} rows for {n} images in the label file")
    return numbers, generators


def _prompt_texts(path: Path) -> list[tuple[str, str, str]]:
    """(style, class, text) of the 100 prompts (a header row is allowed)."""
    rows = list(xlsx_rows(path))
    columns: tuple[int, ...] = (0, 1, 2)
    if rows and "prompt" in [header_key(v) for v in rows[0][1]]:
        keys = [header_key(v) for v in rows[0][1]]
        columns = tuple(keys.index(k) if k in keys else -1 for k in ("style", "class", "prompt"))
        rows = rows[1:]
    if len(rows) != N_PROMPTS:
        raise ManifestError(f"{path}: {len(rows)} prompt rows, AIGCIQA2023 has {N_PROMPTS}")
    out = []
    for number, values in rows:
        style, kind, text = (cell_text(cell(values, c)) if c >= 0 else "" for c in columns)
        if not text:
            raise ManifestError(f"{path}: row {number}: empty prompt")
        out.append((style, kind, text))
    return out


def aigc_prompt_groups(base: Path, n: int) -> PromptGroups:
    """Groups (``prompt_017``) and prompt columns of AIGCIQA2023's images 0..n-1.

    Raises:
        ManifestError: a malformed index or prompt file, naming it and the row.
    """
    index_path, prompt_path = _find(base, INDEX_FILES), _find(base, PROMPT_FILES)
    if index_path is not None:
        numbers, generators = _index_numbers(index_path, n)
        rule = f"by prompt, from {index_path.relative_to(base).as_posix()}"
    else:
        numbers = [(k % PER_GENERATOR) // RENDERS for k in range(n)]
        generators = []
        rule = f"by prompt, {RULE}; no pic-index.xlsx found)"
    texts: list[tuple[str, str, str]] = []
    if prompt_path is not None:
        texts = _prompt_texts(prompt_path)
        rule += f"; prompts of one text in {prompt_path.relative_to(base).as_posix()} share one"
    first: dict[str, int] = {}
    out = PromptGroups(rule=rule)
    for k, p in enumerate(numbers):
        extra: dict[str, str] = {}
        if texts:
            if p >= len(texts):
                raise ManifestError(f"{prompt_path}: no prompt {p} (image {k} is rendered from it)")
            style, kind, text = texts[p]
            p = first.setdefault(" ".join(text.split()).casefold(), p)
            extra = {"prompt": text, "prompt_style": style, "prompt_class": kind}
        if generators:
            extra["generator"] = generators[k]
        out.groups.append(f"prompt_{p:03d}")
        out.extra.append({**extra, PROMPT_GROUP: out.groups[-1]})
    return out
