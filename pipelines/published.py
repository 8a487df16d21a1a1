"""Published SRCC/PLCC of the papers this project follows, for the report's "paper" columns.

The numbers live in ``pipelines/published.yaml`` (package data), one entry per paper table
row, each with its paper, table and page or section. A report row is matched to an entry
by (method, backbone family, dataset, protocol); see the file's header for the rules.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

PROTOCOLS = ("per_dataset", "mixed")
DEFAULT_RULE = "the highest-SRCC row of the same table other than the method itself"


class PublishedDataError(ValueError):
    """``published.yaml`` is malformed."""


@dataclass(frozen=True)
class Score:
    """A published (SRCC, PLCC) pair; None where the paper prints a dash."""

    srcc: float | None
    plcc: float | None


@dataclass(frozen=True)
class Published:
    """One paper's figure for one dataset, with where it is printed."""

    entry: str
    paper: str
    table: str
    page: int | None
    where: str
    score: Score
    digits: int
    paper_backbone: str | None = None
    baseline: str | None = None
    baseline_score: Score | None = None
    baseline_rule: str = ""
    note: str = ""

    @property
    def source(self) -> str:
        """Short citation: ``SAM-IQA Table 1, p. 5`` (or the section when no page)."""
        where = f"p. {self.page}" if self.page else self.where.split(";")[0]
        return f"{self.paper} {self.table}, {where}"

    def fmt(self, value: float | None) -> str:
        """A published value with the paper's own number of decimals."""
        return "-" if value is None else f"{value:.{self.digits}f}"


@functools.cache
def load_published() -> dict[str, Any]:
    """The parsed and checked ``published.yaml``."""
    text = resources.files("pipelines").joinpath("published.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    papers = data.get("papers", {})
    for entry in data.get("entries", []):
        missing = {"id", "paper", "table", "methods", "protocol", "results"} - set(entry)
        if missing:
            raise PublishedDataError(f"published.yaml entry {entry.get('id')}: no {missing}")
        if entry["paper"] not in papers or entry["protocol"] not in PROTOCOLS:
            raise PublishedDataError(f"published.yaml entry {entry['id']}: bad paper/protocol")
    return data


def canonical_dataset(name: str) -> str:
    """Our dataset key for a name or alias (``KADID-10k`` -> ``kadid10k``)."""
    key = name.lower().replace("-", "").replace("_", "")
    return str(load_published().get("aliases", {}).get(key, key))


def backbone_family(backbone: str | None) -> str | None:
    """The family of a backbone name (``sam_vit_b`` -> ``sam``); None for no backbone."""
    if not backbone:
        return None
    for prefix, family in load_published().get("families", {}).items():
        if backbone.startswith(prefix):
            return str(family)
    return backbone


def _score(raw: dict[str, Any] | None) -> Score | None:
    if raw is None:
        return None
    return Score(raw.get("srcc"), raw.get("plcc"))


def _build(entry: dict[str, Any], dataset: str) -> Published:
    data = load_published()
    base = (entry.get("strongest_baseline") or {}).get(dataset)
    return Published(
        entry=entry["id"],
        paper=str(data["papers"][entry["paper"]].get("short", entry["paper"])),
        table=str(entry["table"]),
        page=entry.get("page"),
        where=str(entry.get("where", "")).strip(),
        score=_score(entry["results"][dataset]) or Score(None, None),
        digits=int(entry.get("digits", 3)),
        paper_backbone=entry.get("paper_backbone"),
        baseline=base["method"] if base else None,
        baseline_score=_score(base),
        baseline_rule=str(entry.get("baseline_rule") or DEFAULT_RULE).strip(),
        note=str(entry.get("note", "")).strip(),
    )


def lookup(
    method: str, backbone: str | None, dataset: str, protocol: str = "per_dataset"
) -> Published | None:
    """The published figure for one report row, or None when no paper reports it.

    Args:
        method: a head name (``sfem_fr``) or a baseline (``psnr``).
        backbone: the backbone the row's features came from; None for a baseline.
        dataset: our dataset name (aliases accepted).
        protocol: ``per_dataset`` or ``mixed``.
    """
    family, key = backbone_family(backbone), canonical_dataset(dataset)
    for entry in load_published()["entries"]:
        if (method in entry["methods"] and entry.get("family") == family
                and entry["protocol"] == protocol and key in entry["results"]):
            return _build(entry, key)
    return None
