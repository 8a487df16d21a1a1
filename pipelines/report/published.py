"""Published SRCC/PLCC of the papers this project follows, for the report's "paper" columns.

The numbers live in ``pipelines/report/published.yaml`` (package data), one entry per paper table
row, each with its paper, table and page or section. A report row is matched to an entry
by (method, backbone family, dataset, protocol, the training set of a cross-dataset test,
and the run settings the entry's ``match`` names, so an ablation run meets its ablation
row); see the file's header for the rules. Entries with ``comparable: false`` (a published
figure nothing here can reproduce, with ``why``) are never matched.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

PROTOCOLS = ("per_dataset", "mixed", "cross_dataset")
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
    trained_on: str | None = None

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
    source = resources.files("pipelines.report").joinpath("published.yaml")
    text = source.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    papers = data.get("papers", {})
    for entry in data.get("entries", []):
        missing = {"id", "paper", "table", "methods", "protocol", "results"} - set(entry)
        if missing:
            raise PublishedDataError(f"published.yaml entry {entry.get('id')}: no {missing}")
        if entry["paper"] not in papers or entry["protocol"] not in PROTOCOLS:
            raise PublishedDataError(f"published.yaml entry {entry['id']}: bad paper/protocol")
        if (entry["protocol"] == "cross_dataset") != bool(entry.get("trained_on")):
            raise PublishedDataError(f"published.yaml entry {entry['id']}: `trained_on` is "
                                     "for, and needed by, cross_dataset entries")
        if entry.get("comparable", True) is False and not entry.get("why"):
            raise PublishedDataError(f"published.yaml entry {entry['id']}: say `why` it "
                                     "is not comparable")
    return data


def entry_by_id(entry_id: str) -> dict[str, Any]:
    """The ``published.yaml`` entry ``entry_id`` (KeyError for an unknown one)."""
    for entry in load_published()["entries"]:
        if entry["id"] == entry_id:
            return dict(entry)
    raise KeyError(entry_id)


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
        trained_on=entry.get("trained_on"),
    )


def same_setting(have: Any, want: Any) -> bool:
    """A run's setting equals an entry's ``match`` value (lists as sets, numbers as floats)."""
    if isinstance(want, list):
        return isinstance(have, (list, tuple)) and sorted(map(str, have)) == sorted(map(str, want))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        return isinstance(have, (int, float)) and abs(float(have) - float(want)) < 1e-9
    return bool(have == want)


@dataclass(frozen=True)
class RunFacts:
    """What decides which published row a run is compared with.

    Attributes:
        settings: dotted run settings (``head_config.branches``, ``training.map_weight``),
            head config defaults filled in.
        trained_on: the training dataset of a cross-dataset test, else None.
    """

    settings: Mapping[str, Any] = field(default_factory=dict)
    trained_on: str | None = None


def _applies(
    entry: dict[str, Any], method: str, family: str | None, key: str, protocol: str,
    facts: RunFacts,
) -> bool:
    if entry.get("comparable", True) is False or key not in entry["results"]:
        return False
    if method not in entry["methods"] or entry.get("family") != family:
        return False
    if entry["protocol"] != protocol:
        return False
    if protocol == "cross_dataset" and (
        facts.trained_on is None or canonical_dataset(facts.trained_on) != entry["trained_on"]
    ):
        return False
    settings = {**head_defaults(method), **facts.settings}
    match = entry.get("match") or {}
    return all(k in settings and same_setting(settings[k], v) for k, v in match.items())


@functools.cache
def head_defaults(method: str) -> dict[str, Any]:
    """``head_config.<field>`` -> default of a head's config (empty for other methods)."""
    import dataclasses

    from heads.registry import HEADS, head_class

    if method not in HEADS:
        return {}
    fields = dataclasses.fields(head_class(method).config_cls)
    found = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    return {f"head_config.{k}": list(v) if isinstance(v, tuple) else v for k, v in found.items()}


def matching_entries(
    method: str, backbone: str | None, dataset: str, protocol: str = "per_dataset",
    facts: RunFacts | None = None,
) -> list[str]:
    """The ids of every entry a report row meets (a run may meet rows of several tables)."""
    family, key, facts = backbone_family(backbone), canonical_dataset(dataset), facts or RunFacts()
    entries = load_published()["entries"]
    return [e["id"] for e in entries if _applies(e, method, family, key, protocol, facts)]


def variant_label(method: str, settings: Mapping[str, Any]) -> str:
    """The ablation settings that set a run apart from the paper's main row of its method.

    The axes are the ``match`` keys on which the method's entries differ; a run shows each
    axis whose value differs from the method's first entry (its main row), e.g.
    ``branches=spatial`` or ``map_weight=0.0``; "" for the main configuration.
    """
    entries = [e for e in load_published()["entries"] if method in e["methods"] and e.get("match")]
    if not entries:
        return ""
    keys = sorted({k for e in entries for k in e["match"]})
    axes = [k for k in keys if len({repr(e["match"].get(k)) for e in entries}) > 1]
    main = entries[0]["match"]
    settings = {**head_defaults(method), **settings}
    parts = []
    for key in axes:
        have = settings.get(key)
        if key in settings and (key not in main or not same_setting(have, main[key])):
            value = ",".join(map(str, have)) if isinstance(have, (list, tuple)) else have
            parts.append(f"{key.split('.')[-1]}={value}")
    return ", ".join(parts)


def lookup(
    method: str, backbone: str | None, dataset: str, protocol: str = "per_dataset",
    facts: RunFacts | None = None,
) -> Published | None:
    """The published figure for one report row (the first entry it meets), or None.

    Args:
        method: a head name (``sfem_fr``), a baseline (``psnr``) or ``student``.
        backbone: the backbone the row's features came from (the student's trunk); None
            for a baseline.
        dataset: our dataset name (aliases accepted); the tested one of a cross test.
        protocol: ``per_dataset``, ``mixed`` or ``cross_dataset``.
        facts: the run's settings and, for a cross test, its training dataset.
    """
    ids = matching_entries(method, backbone, dataset, protocol, facts)
    return _build(entry_by_id(ids[0]), canonical_dataset(dataset)) if ids else None
